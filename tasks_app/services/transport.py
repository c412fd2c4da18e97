"""Redis transport: RQ jobs, always after the database commit.

A send that finds Redis away is logged, not raised: the database row is committed, and the reconcile
pass enqueues what is missing (a queued run whose job is gone) once Redis is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import django_rq
import redis
from django.conf import settings
from django.db import transaction
from redis.driver_info import DriverInfo
from rq.job import Job
from rq.serializers import Serializer, resolve_serializer

from ..models import Priority, Run

QUEUE_BY_PRIORITY = {
    Priority.HIGH: "orchestrator-high",
    Priority.MEDIUM: "orchestrator-medium",
    Priority.LOW: "orchestrator-low",
}
EXECUTE = "tasks_app.jobs.execute"
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

log = logging.getLogger(__name__)


def queue_names() -> list[str]:
    return list(settings.ORCHESTRATOR_QUEUES)


# redis-py reads its own version from the package metadata for every new connection (about 1.5 ms):
# resolved once here instead.
DRIVER_INFO = DriverInfo()
_clients: dict[str, redis.Redis] = {}


def connection(queue: str) -> redis.Redis:
    """The process's Redis client for a queue: one connection pool per URL, kept for the process.

    django_rq builds a new client, so a new connection, per call: a work horse opened one for RQ's
    bookkeeping and one more per enqueue. The worker, its horses and every enqueue now share one
    pool (redis-py gives a forked child fresh connections in the same pool).
    """
    config = settings.RQ_QUEUES[queue]
    url = config.get("URL")
    if url is None or config.get("SSL"):
        return django_rq.get_connection(queue)
    key = f"{url}#{config.get('DB')}"
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url, db=config.get("DB"), driver_info=DRIVER_INFO)
    return _clients[key]


def get_queue(name: str):
    """The queue, with the serializer RQ_QUEUES gives it (JSON), on the process's shared client."""
    return django_rq.get_queue(name, commit_mode="auto", connection=connection(name), serializer=serializer(name))


def serializer(queue: str) -> Serializer:
    """How jobs of this queue are written: read them with it too (``Job.fetch`` defaults to pickle)."""
    return resolve_serializer(settings.RQ_QUEUES[queue].get("SERIALIZER"))


def job_id(run: Run) -> str:
    return f"orch-{run.signature_id}-{run.number}"


def enqueue_run(run: Run, *, delay: float = 0) -> None:
    """Put the run's job on its priority queue once the surrounding transaction commits."""

    def send() -> None:
        queue = get_queue(run.queue)
        options = dict(job_id=job_id(run), job_timeout=-1, result_ttl=60, failure_ttl=3600)
        args = (run.signature_id, run.number)
        if delay > 0:
            queue.enqueue_in(timedelta(seconds=delay), EXECUTE, *args, **options)
        else:
            queue.enqueue(EXECUTE, *args, **options)

    after_commit(send, f"the job of run {run.number} of #{run.signature_id}")


def enqueue_many(runs: list[Run]) -> None:
    """Many runs in one Redis round trip per queue (bulk adds, swarm fills)."""
    if not runs:
        return

    def send() -> None:
        by_queue: dict[str, list] = {}
        for run in runs:
            by_queue.setdefault(run.queue, []).append(run)
        for name, group in by_queue.items():
            queue = get_queue(name)
            datas = [
                queue.prepare_data(
                    EXECUTE, args=(r.signature_id, r.number), job_id=job_id(r), timeout=-1, result_ttl=60, failure_ttl=3600
                )
                for r in group
            ]
            queue.enqueue_many(datas)

    after_commit(send, f"the jobs of {len(runs)} runs")


def cancel_job(run: Run) -> None:
    """Drop a queued job from Redis after commit (a stale one would be ignored at claim anyway)."""

    def send() -> None:
        try:
            Job.fetch(job_id(run), connection=connection(run.queue), serializer=serializer(run.queue)).cancel()
        except Exception:  # the job may be gone already; the claim guard covers it
            pass

    transaction.on_commit(send)


def move_job(run: Run, new_queue: str) -> None:
    """Move a queued run's job to another priority queue."""
    old_queue = run.queue

    def send() -> None:
        get_queue(old_queue).remove(job_id(run))
        try:
            job = Job.fetch(job_id(run), connection=connection(old_queue), serializer=serializer(old_queue))
        except Exception:
            job = None
        if job is not None:
            job.origin = new_queue
            job.save()
            get_queue(new_queue).enqueue_job(job)
        else:
            get_queue(new_queue).enqueue(EXECUTE, run.signature_id, run.number, job_id=job_id(run), job_timeout=-1)

    after_commit(send, f"the move of run {run.number} of #{run.signature_id} to {new_queue}")


def enqueue_call(func: str, *args, delay: float = 0, queue: str = "orchestrator-high") -> None:
    """A service job (timeouts, webhooks) after commit; delayed ones need RQ's scheduler."""

    def send() -> None:
        q = get_queue(queue)
        if delay > 0:
            q.enqueue_in(timedelta(seconds=delay), func, *args, job_timeout=300)
        else:
            q.enqueue(func, *args, job_timeout=300)

    after_commit(send, f"the job {func}{args}")


def after_commit(send: Callable[[], None], what: str) -> None:
    """Run ``send`` once the transaction commits. Redis being away then must not turn a committed
    change into an error (an API client would retry a request that succeeded): it is logged, and
    the reconcile pass sends what is missing."""

    def guarded() -> None:
        try:
            send()
        except REDIS_DOWN as exc:
            log.warning("Redis is unreachable, %s is left to the reconcile pass: %s", what, exc)

    transaction.on_commit(guarded)
