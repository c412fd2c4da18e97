"""The Celery 5 baselines of the benchmarks: one app on the bench's Redis, its tasks, and the legs.

Broker and result backend are the Redis the benchmark uses (``REDIS_URL``, set by
``common.session`` before this module is imported; the worker subprocess inherits it). Workers run
``python -m celery -A bench.celery_app worker`` with the pool and concurrency each leg names, on a
queue of their own, and are ready when they answer a ping. A leg's clock runs from the call that
sends the work to the ``date_done`` of the chord's callback or of the chain's last task, as the
result backend recorded it. Importing this module needs Celery (``requirements-bench.txt``):
scripts check ``common.celery_installed()`` first.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import datetime

from celery import Celery, chain, chord

QUEUE = "bench-celery"

app = Celery(
    "bench",
    broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_default_queue=QUEUE,
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(*args: object) -> None:
    return None


@app.task(name="bench.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="bench.count")
def count(results: list) -> int:
    """The chord's callback: how many members it collected."""
    return len(results)


@app.task(name="bench.span")
def span(previous: list | None = None) -> list:
    """A chain step that adds its own [start, end] (epoch seconds) to the spans of the steps before it."""
    started = time.time()
    return [*(previous or []), [started, time.time()]]


# Legs (run in the benchmark's process) -------------------------------------------------------


def start_worker(bench, *, pool: str, concurrency: int) -> str:
    """One Celery worker subprocess with this pool and concurrency; returns its name once it answers a ping."""
    name = f"bench-{bench.name}-{uuid.uuid4().hex[:8]}@bench"
    command = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "--pool", pool]
    command += ["--concurrency", str(concurrency), "--queues", QUEUE, "--hostname", name, "--loglevel", "WARNING"]
    bench.popen([*command, "--without-gossip", "--without-mingle", "--without-heartbeat"])
    bench.wait_for(lambda: app.control.ping(destination=[name], timeout=0.5), timeout=60, what="the Celery worker")
    return name


def run_chord(bench, n: int, member, *, pool: str, concurrency: int, timeout: float = 600) -> float:
    """Seconds from sending a chord of n ``member`` signatures to its callback's end, on a fresh worker."""
    from bench.common import clear_queues, utcnow

    clear_queues(bench)
    start_worker(bench, pool=pool, concurrency=concurrency)
    started = utcnow()
    result = chord(member.clone() for _ in range(n))(count.s())
    bench.wait_for(result.ready, timeout=timeout, interval=0.05, what=f"the Celery chord of {n}")
    collected = result.get(timeout=10)
    bench.stop_workers()
    if collected != n:
        raise RuntimeError(f"the Celery chord collected {collected} results of {n}; see {bench.log_dir}")
    return _seconds(started, result.date_done)


def run_chain(bench, n: int, *, concurrency: int, timeout: float = 600) -> tuple[float, list[float]]:
    """A chain of n steps on a fresh prefork worker: (seconds to the last step's end, hand-offs in ms)."""
    from bench.common import clear_queues, utcnow

    clear_queues(bench)
    start_worker(bench, pool="prefork", concurrency=concurrency)
    started = utcnow()
    result = chain(*(span.s() for _ in range(n))).apply_async()
    bench.wait_for(result.ready, timeout=timeout, interval=0.05, what=f"the Celery chain of {n}")
    spans = result.get(timeout=10)
    bench.stop_workers()
    handoffs = [1000 * (nxt[0] - done[1]) for done, nxt in zip(spans, spans[1:], strict=False)]
    return _seconds(started, result.date_done), handoffs


def _seconds(started: datetime, done: datetime | None) -> float:
    if done is None:
        raise RuntimeError("the Celery result has no date_done")
    return (done - started).total_seconds()
