"""What every benchmark shares: its database and Redis, worker subprocesses, timing and tables.

A benchmark runs inside ``session(name)``: DATABASE_URL if set, else a fresh SQLite file under
var/bench/; REDIS_URL if set (its database is flushed), else an embedded Redis that is stopped at
the end. Workers are real ``manage.py`` subprocesses with the same environment; every process
started here is killed on exit, Ctrl-C and SIGTERM included. Django and the engine are imported
inside the functions: the environment has to be set before ``django.setup()``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
VAR = BASE_DIR / "var" / "bench"
MANAGE = BASE_DIR / "manage.py"
ORCHESTRATOR_QUEUES = ("orchestrator-high", "orchestrator-medium", "orchestrator-low")
# Configured in RQ_QUEUES, and idle during a benchmark (no webhooks are sent): django-rq's "default" is not.
PLAIN_QUEUE = "orchestrator-webhooks"
SIMPLE_WORKER = "rq.worker.SimpleWorker"
RQ_WORKER = "rq.worker.Worker"  # RQ's own forking worker, without the orchestrator's heartbeat rows
# Runs a management command after importing extra modules (bench tasks) in the worker parent.
LAUNCHER = (
    "import importlib, sys, django; django.setup(); "
    "[importlib.import_module(m) for m in sys.argv[1].split(',') if m]; "
    "from django.core.management import execute_from_command_line; "
    "execute_from_command_line(['manage.py', *sys.argv[2:]])"
)


def parser(doc: str | None, *, n: int, workers: int | None = 2) -> argparse.ArgumentParser:
    first_line = (doc or "").strip().splitlines()[0] if doc else ""
    p = argparse.ArgumentParser(description=first_line)
    p.add_argument("--n", type=int, default=n, help=f"size of the workload (default {n})")
    if workers is not None:
        p.add_argument("--workers", type=int, default=workers, help=f"worker processes (default {workers})")
    return p


def utcnow() -> datetime:
    return datetime.now(UTC)


def celery_installed() -> bool:
    """Whether the Celery baselines can run (``pip install -r requirements-bench.txt``); says so when not."""
    if importlib.util.find_spec("celery") is not None:
        return True
    print("# Celery legs skipped: Celery is not installed (pip install -r requirements-bench.txt)")
    return False


# Environment ----------------------------------------------------------------------------------


def _configure_env(name: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
    os.environ["ORCHESTRATOR_AUTO_RESUME"] = "0"
    # Production settings: with DEBUG on, Django formats and keeps every query it runs.
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", "bench-only-not-secret")
    os.environ.setdefault("ORCHESTRATOR_LOG_LEVEL", "WARNING")
    VAR.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DATABASE_URL"):
        path = VAR / f"{name}.sqlite3"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"


def _start_redis(name: str):
    """The embedded Redis (returned, to stop later) unless REDIS_URL names a server, which is flushed."""
    import redis

    if os.environ.get("REDIS_URL"):
        redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
        return None
    from tasks_app.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(VAR / f"redis-{name}")
    os.environ["REDIS_URL"] = server.start()
    return server


def _setup_django() -> None:
    import django
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    call_command("migrate", verbosity=0)
    if connection.vendor != "sqlite":
        db_name = connection.settings_dict["NAME"]
        if not db_name.startswith("bench"):
            raise SystemExit(f"refusing to empty database {db_name!r}: benchmark databases are named bench*")
        _empty_tables(connection)


def _empty_tables(connection) -> None:
    """TRUNCATE every table but the migration history (CASCADE: tables of newer models are emptied too)."""
    tables = [t for t in connection.introspection.table_names() if t != "django_migrations"]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(connection.ops.quote_name(t) for t in tables)} RESTART IDENTITY CASCADE")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def session(name: str) -> Iterator[Bench]:
    """Database, Redis and Django for one benchmark; everything started is stopped on the way out."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    sys.path.insert(0, str(BASE_DIR))
    bench = Bench(name)
    try:
        _configure_env(name)
        bench.embedded = _start_redis(name)
        _setup_django()
        bench.print_header()
        yield bench
    except KeyboardInterrupt:
        print("\ninterrupted: stopping workers and Redis", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        bench.close()
        signal.signal(signal.SIGTERM, previous)


# Processes ------------------------------------------------------------------------------------


def kill_tree(process: subprocess.Popen) -> int:
    """SIGKILL a process and everything below it (RQ work horses included); returns how many.

    The one copy: the chaos runs and the tests' worker harness use it too."""
    import psutil

    try:
        parent = psutil.Process(process.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(family, timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return len(family)


@dataclass
class Bench:
    name: str
    embedded: Any = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    spawned: int = 0

    @property
    def redis_url(self) -> str:
        return os.environ["REDIS_URL"]

    @property
    def log_dir(self) -> Path:
        path = VAR / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def redis(self):
        import redis

        return redis.Redis.from_url(self.redis_url)

    def spawn(self, args: Sequence[str], imports: Sequence[str] = ()) -> subprocess.Popen:
        """``manage.py ARGS`` (after importing ``imports`` in the parent) as a subprocess logging to var/bench/logs."""
        if imports:
            return self.popen([sys.executable, "-c", LAUNCHER, ",".join(imports), *args])
        return self.popen([sys.executable, str(MANAGE), *args])

    def popen(self, command: Sequence[str]) -> subprocess.Popen:
        """Any command (a Celery worker, ``manage.py orchestrate``), started and stopped like the workers."""
        from tasks_app.embedded_redis import die_with_parent

        self.spawned += 1
        log = self.log_dir / f"{self.name}-{self.spawned}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                env=self.env(),
                cwd=BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.processes.append(process)
        return process

    def start_workers(
        self,
        n: int,
        *,
        queues: Sequence[str] = (),
        worker_class: str | None = None,
        imports: Sequence[str] = (),
        burst: bool = False,
        wait: bool = True,
    ) -> list[subprocess.Popen]:
        """n workers: ``manage.py worker`` (the orchestrator's forking worker), or ``rqworker`` for another class."""
        names = [f"bench-{self.name}-{uuid.uuid4().hex[:8]}" for _ in range(n)]
        started = [self.spawn(self._worker_args(name, queues, worker_class, burst), imports) for name in names]
        if wait and not burst:
            self.wait_for(lambda: set(names) <= self.registered_workers(), timeout=60, what="workers to register")
        return started

    @staticmethod
    def _worker_args(name: str, queues: Sequence[str], worker_class: str | None, burst: bool) -> list[str]:
        extra = ["--burst"] if burst else []
        if worker_class is None:
            return ["worker", "--no-reconcile", "--name", name, *extra, *(["--queues", *queues] if queues else [])]
        queues = queues or ORCHESTRATOR_QUEUES
        serializer = ["--serializer", rq_serializer(queues[0])]
        return ["rqworker", *queues, "--worker-class", worker_class, "--name", name, *serializer, *extra]

    def registered_workers(self) -> set[str]:
        from rq import Worker

        return {worker.name for worker in Worker.all(connection=self.redis())}

    def stop_workers(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of whatever is left, horses included."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 5
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            kill_tree(process)
        self.processes = []

    def wait_for(self, until: Callable[[], Any], *, timeout: float, interval: float = 0.02, what: str = "") -> Any:
        """Poll ``until()`` until it returns something truthy; fail when every worker died or time is up."""
        deadline = time.monotonic() + timeout
        while True:
            value = until()
            if value:
                return value
            if self.processes and all(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"every worker exited while waiting for {what}; see {self.log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}; see {self.log_dir}")
            time.sleep(interval)

    def close(self) -> None:
        self.stop_workers()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()

    # Labels -----------------------------------------------------------------------------------

    def database_label(self) -> str:
        from django.db import connection

        if connection.vendor == "postgresql":
            version = connection.pg_version
            return f"PostgreSQL {version // 10000}.{version % 10000}"
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version} (WAL)"

    def redis_label(self) -> str:
        version = self.redis().info("server")["redis_version"]
        return f"{'embedded ' if self.embedded else ''}Redis {version}"

    def print_header(self) -> None:
        cores = os.cpu_count()
        print(
            f"# bench/{self.name}.py  {utcnow():%Y-%m-%d %H:%M} UTC  ·  {platform.machine()}, {cores} cores  ·  "
            f"Python {platform.python_version()}"
        )
        print(
            f"# database: {self.database_label()}  ·  redis: {self.redis_label()}  ·  "
            f"load average {os.getloadavg()[0]:.2f} (other processes share the cores)"
        )


def rq_serializer(queue: str) -> str:
    """The serializer RQ_QUEUES gives a queue (rqworker uses its own default unless told)."""
    from django.conf import settings

    return settings.RQ_QUEUES[queue].get("SERIALIZER") or "rq.serializers.DefaultSerializer"


# Orchestrator ---------------------------------------------------------------------------------


def owner():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench")
    return user


def finished_at(ids: Sequence[int]) -> datetime | None:
    """The last finished_at of the signatures, once every one of them is terminal (else None)."""
    from django.db.models import Count, Max, Q

    from tasks_app.models import TERMINAL, Signature

    row = Signature.objects.filter(pk__in=ids).aggregate(
        done=Count("pk", filter=Q(status__in=TERMINAL)), last=Max("finished_at")
    )
    return row["last"] if row["done"] == len(ids) else None


def wait_finished(bench: Bench, ids: Sequence[int], *, timeout: float, interval: float = 0.05) -> datetime:
    return bench.wait_for(lambda: finished_at(ids), timeout=timeout, interval=interval, what=f"{len(ids)} signatures")


def check_completed(ids: Sequence[int]) -> None:
    from tasks_app.models import Signature, Status

    bad = Signature.objects.filter(pk__in=ids).exclude(status=Status.COMPLETED).values_list("pk", "status")[:5]
    if bad:
        raise RuntimeError(f"not completed: {list(bad)}")


def reset_orchestrator() -> None:
    """Empty the orchestrator's tables between two legs, so each starts from the same state."""
    from tasks_app.models import Approval, Event, LogEntry, Notification, ResumeReport, Run, Signature, Step

    for model in (Notification, Approval, LogEntry, Step, Run, Event, ResumeReport, Signature):
        model.objects.all()._raw_delete(model.objects.db)


def swarm_spec(n: int, *, max_concurrency: int, task: str = "examples.noop") -> dict:
    return {
        "kind": "swarm",
        "name": f"bench swarm of {n}",
        "max_concurrency": max_concurrency,
        "tasks": [{"task": task} for _ in range(n)],
    }


def chain_spec(n: int, *, task: str = "examples.noop") -> dict:
    return {"kind": "chain", "name": f"bench chain of {n}", "steps": [{"task": task} for _ in range(n)]}


def run_orchestrator(
    bench: Bench,
    submit: Callable[[], list[int]],
    workers: int,
    *,
    worker_class: str | None = None,
    timeout: float = 600,
) -> float:
    """Seconds from the start of ``submit()`` to the last finished_at of the ids it returns, on fresh workers."""
    clear_queues(bench)
    reset_orchestrator()
    bench.start_workers(workers, worker_class=worker_class)
    started = utcnow()
    ids = submit()
    last = wait_finished(bench, ids, timeout=timeout)
    bench.stop_workers()
    check_completed(ids)
    return (last - started).total_seconds()


def clear_queues(bench: Bench) -> None:
    """Drop whatever jobs are left in Redis between two legs."""
    bench.redis().flushdb()


# Plain RQ -------------------------------------------------------------------------------------


def plain_queue(bench: Bench):
    import django_rq

    return django_rq.get_queue(PLAIN_QUEUE, connection=bench.redis())  # with the configured serializer


def enqueue_plain(queue, n: int) -> list[str]:
    """n no-op jobs in one call, with the options the orchestrator gives its own jobs."""
    from bench.plain import noop

    ids = [f"plain-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    datas = [queue.prepare_data(noop, job_id=i, timeout=-1, result_ttl=600, failure_ttl=3600) for i in ids]
    queue.enqueue_many(datas)
    return ids


def plain_finished_at(queue, ids: Sequence[str]) -> datetime | None:
    if queue.finished_job_registry.count + queue.failed_job_registry.count < len(ids):
        return None
    from rq.job import Job

    ended = [job.ended_at for job in Job.fetch_many(ids, connection=queue.connection) if job and job.ended_at]
    return max(ended) if len(ended) == len(ids) else None


def run_plain(bench: Bench, n: int, workers: int, *, worker_class: str | None = None, timeout: float = 600) -> float:
    """Seconds from the first enqueue to the last job's end, n plain jobs on fresh workers."""
    clear_queues(bench)
    bench.start_workers(workers, queues=[PLAIN_QUEUE], worker_class=worker_class)
    queue = plain_queue(bench)
    started = utcnow()
    ids = enqueue_plain(queue, n)
    last = bench.wait_for(lambda: plain_finished_at(queue, ids), timeout=timeout, interval=0.05, what="plain jobs")
    bench.stop_workers()
    if queue.failed_job_registry.count:
        raise RuntimeError(f"{queue.failed_job_registry.count} plain jobs failed; see {bench.log_dir}")
    return (last - started).total_seconds()


# Profiling in this process --------------------------------------------------------------------


@contextlib.contextmanager
def probes(
    targets: Sequence[tuple[str, Any, str]], queries: list[int] | None = None
) -> Iterator[dict[str, list[tuple[float, int]]]]:
    """Time calls of ``module.attr`` for each (label, module, attr): (seconds, queries) per call, by label.

    Callers look these functions up as module globals, so replacing the attribute catches every call;
    ``queries`` is a counter from ``count_queries`` whose growth during each call is recorded.
    """
    calls: dict[str, list[tuple[float, int]]] = {label: [] for label, _, _ in targets}
    originals = [(module, attr, getattr(module, attr)) for _, module, attr in targets]
    for (label, module, attr), (_, _, original) in zip(targets, originals, strict=True):
        setattr(module, attr, _timed(original, calls[label], queries or [0]))
    try:
        yield calls
    finally:
        for module, attr, original in originals:
            setattr(module, attr, original)


@contextlib.contextmanager
def count_queries() -> Iterator[list[int]]:
    """Count the database queries made in the block (no 9,000-query cap, unlike CaptureQueriesContext)."""
    from django.db import connection

    counter = [0]

    def wrapper(execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        counter[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield counter


def _timed(fn: Callable, sink: list[tuple[float, int]], queries: list[int]) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, before = time.perf_counter(), queries[0]
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append((time.perf_counter() - started, queries[0] - before))

    return wrapper


# Figures and tables ---------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[max(0, min(98, round(p) - 1))]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("-", "").replace("%", "").replace("×", "").isdigit()


def ratio_label(value: float, target: float, *, at_least: bool = True) -> str:
    ok = value >= target if at_least else value <= target
    return f"{value:.2f} ({'meets' if ok else 'misses'} target {'≥' if at_least else '≤'} {target:g})"
