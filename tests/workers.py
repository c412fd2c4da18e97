"""Real `manage.py worker` processes against the test database, for end-to-end tests.

The subprocesses get DATABASE_URL built from the test connection (SQLite: the test database
file; PostgreSQL: `test_<name>`) and the session's REDIS_URL, so they see what the test wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import django_rq
import psutil
from django.conf import settings
from django.db import connection
from rq import Worker
from rq.worker import WorkerStatus

from bench.common import kill_tree  # the one copy; re-exported for the tests

MANAGE = Path(settings.BASE_DIR) / "manage.py"


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once the process no longer runs (a zombie waiting for init counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL that dj-database-url turns back into this connection's settings."""
    engine = settings_dict["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    if engine == "django.db.backends.postgresql":
        user = quote(settings_dict.get("USER") or "", safe="")
        password = quote(settings_dict.get("PASSWORD") or "", safe="")
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = settings_dict.get("HOST") or "localhost"
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        return f"postgres://{credentials}{host}{port}/{quote(settings_dict['NAME'], safe='')}"
    raise ValueError(f"no DATABASE_URL for the engine {engine}: the tests run on SQLite or PostgreSQL")


def subprocess_env() -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "PYTHONUNBUFFERED": "1",
    }


class Workers:
    """`burst()` runs workers to completion, `start()` keeps some running, `drain()` waits on the DB."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None):
        self.log_dir = log_dir
        self.env = env if env is not None else subprocess_env()
        self.running: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def spawn(self, *args: str) -> subprocess.Popen:
        log = self.log_dir / f"worker-{len(self.logs) + 1}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            return subprocess.Popen([sys.executable, str(MANAGE), "worker", *args], env=self.env,
                                    cwd=settings.BASE_DIR, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)

    def burst(self, n: int = 1, *, timeout: float = 60, args: Iterable[str] = ()) -> None:
        """Run n `manage.py worker --burst` side by side until the queues are empty."""
        processes = [self.spawn("--burst", *args) for _ in range(n)]
        for process in processes:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for other in processes:
                    kill_tree(other)
                raise AssertionError(f"burst workers still running after {timeout:g} s\n{self.output()}") from None
        if any(process.returncode for process in processes):
            raise AssertionError(f"a burst worker failed: {[p.returncode for p in processes]}\n{self.output()}")

    def start(self, n: int = 1, *, with_scheduler: bool = False, args: Iterable[str] = (),
              ready_timeout: float = 60) -> list[subprocess.Popen]:
        """Start n long-running workers (the first with RQ's scheduler if asked) and wait until they listen."""
        names = [f"test-worker-{uuid.uuid4().hex[:8]}" for _ in range(n)]
        started = [
            self.spawn("--name", name, *(["--with-scheduler"] if with_scheduler and i == 0 else []), *args)
            for i, name in enumerate(names)
        ]
        self.running += started
        self.drain(lambda: set(names) <= self.registered(), timeout=ready_timeout)
        return started

    def registered(self) -> set[str]:
        """Names of the RQ workers registered in Redis."""
        connection = django_rq.get_connection(settings.ORCHESTRATOR_QUEUES[0])
        return {worker.name for worker in Worker.all(connection=connection)}

    def drained(self) -> bool:
        """Nothing is left for the workers nor in their hands: every queue and its started registry
        are empty and every registered worker is idle (a worker shows ``busy`` while a job runs)."""
        queues = [django_rq.get_queue(name) for name in settings.ORCHESTRATOR_QUEUES]
        if any(queue.count or queue.started_job_registry.count for queue in queues):
            return False
        connection = django_rq.get_connection(settings.ORCHESTRATOR_QUEUES[0])
        return all(worker.get_state() == WorkerStatus.IDLE for worker in Worker.all(connection=connection))

    def drain(self, until: Callable[[], Any], *, timeout: float = 30, interval: float = 0.1) -> Any:
        """Poll `until()` (it reads the database) until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = until()
            if value:
                return value
            if self.running and all(p.poll() is not None for p in self.running):
                raise AssertionError(f"every started worker has exited\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout:g} s\n{self.output()}")
            time.sleep(interval)

    def kill(self, process: subprocess.Popen) -> None:
        """A hard crash of one worker and its work horse (no warm shutdown, no death registration)."""
        kill_tree(process)

    def stop(self) -> None:
        for process in self.running:
            kill_tree(process)
        self.running = []

    def output(self, tail: int = 60) -> str:
        chunks = []
        for log in self.logs:
            lines = log.read_text(errors="replace").splitlines()[-tail:] if log.exists() else []
            chunks.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(chunks)
