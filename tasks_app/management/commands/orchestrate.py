"""`manage.py orchestrate`: the whole system in the foreground (CONTRACT.md §1).

Child processes: daphne (web UI, API, WebSockets), N `manage.py worker` (the first one also runs
RQ's scheduler, which enqueues delayed retries) and `manage.py rqcron tasks_app.cron` (the periodic
reconcile and purge jobs). With REDIS_URL unset an embedded Redis starts first and its URL reaches
the children through their environment. A dead worker or scheduler is started again; a dead web
server stops everything. The loop is made of one-step methods (`check`, `stop`) that tests call.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tasks_app.cron import PURGE_EVERY, RECONCILE_EVERY
from tasks_app.embedded_redis import EmbeddedRedis, die_with_parent, redacted

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
MAX_BACKOFF = 30.0


@dataclass
class Child:
    """One supervised process; `essential` ones stop the whole system when they exit."""

    name: str
    argv: list[str]
    essential: bool = False
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0
    next_start: float | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def build_children(*, host: str, port: int, workers: int, web: bool, concurrency: int | None = None) -> list[Child]:
    children = [Child("web", [sys.executable, "-m", "daphne", "-b", host, "-p", str(port),
                              "orchestrator_site.asgi:application"], essential=True)] if web else []
    for number in range(1, workers + 1):
        extra = ["--with-scheduler"] if number == 1 else []
        if concurrency is not None:
            extra += ["--concurrency", str(concurrency)]
        children.append(Child(f"worker-{number}", [sys.executable, MANAGE, "worker", *extra]))
    children.append(Child("cron", [sys.executable, MANAGE, "rqcron", "tasks_app.cron", "--logging-level", "WARNING"]))
    return children


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Supervisor:
    """Starts the embedded Redis (if any) and the children, revives them, and stops them all."""

    def __init__(self, children: list[Child], *, redis: EmbeddedRedis | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None, log: Callable[[str], None] = print, min_uptime: float = 10.0):
        self.children = children
        self.redis = redis
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.log = log
        self.min_uptime = min_uptime
        self.stop_requested = False
        self.failure: str | None = None

    def request_stop(self, signum: int | None = None, frame: object = None) -> None:
        self.stop_requested = True

    def start(self) -> None:
        if self.redis is not None:
            self.env["REDIS_URL"] = self.redis.start()
        for child in self.children:
            self.spawn(child)

    def spawn(self, child: Child) -> None:
        # A session of its own: a Ctrl-C reaches only this process, which stops the children in order.
        child.process = subprocess.Popen(child.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=die_with_parent)
        child.started_at = time.monotonic()
        child.next_start = None

    def check(self) -> bool:
        """One supervision step: revive what died; False when the system must stop."""
        self.check_redis()
        for child in self.children:
            if child.alive:
                continue
            if child.essential:
                self.failure = f"{child.name} exited with status {child.process.returncode}"
                return False
            self.revive(child)
        return True

    def check_redis(self) -> None:
        if self.redis is not None and not self.redis.is_running():
            self.log("The embedded Redis stopped; starting it again on the same port.")
            self.redis.restart()

    def revive(self, child: Child) -> None:
        """Start a dead child again, waiting longer each time it dies soon after starting."""
        now = time.monotonic()
        if child.next_start is None:
            quick = now - child.started_at < self.min_uptime
            child.quick_deaths = child.quick_deaths + 1 if quick else 0
            delay = min(2.0 ** child.quick_deaths - 1, MAX_BACKOFF)
            child.next_start = now + delay
            self.log(f"{child.name} exited with status {child.process.returncode}; restarting"
                     + (f" in {delay:g} s." if delay else "."))
        if now >= child.next_start:
            child.restarts += 1
            self.spawn(child)

    def run(self, interval: float = 0.5) -> None:
        while not self.stop_requested and self.check():
            time.sleep(interval)

    def stop(self, grace: float = 5.0, kill_after: float = 5.0) -> None:
        """SIGTERM (workers finish their job); after `grace` a second SIGTERM (RQ's cold shutdown
        kills the work horse); after `kill_after` more, SIGKILL for whatever is left, descendants
        included. The embedded Redis goes last."""
        descendants = self.descendants()
        self.signal_alive(signal.SIGTERM)
        if not self.wait_for_exit(max(grace, 1.1)):  # RQ ignores a second signal within one second
            self.signal_alive(signal.SIGTERM)
            self.wait_for_exit(kill_after)
        self.kill_leftovers(descendants)
        if self.redis is not None:
            self.redis.stop()

    def descendants(self) -> list[psutil.Process]:
        """The running children and every process they started (work horses, RQ's scheduler)."""
        found: list[psutil.Process] = []
        for child in self.children:
            if not child.alive:
                continue
            try:
                process = psutil.Process(child.process.pid)
                found += [process, *process.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return found

    def signal_alive(self, signum: int) -> None:
        for child in self.children:
            if child.alive:
                child.process.send_signal(signum)

    def wait_for_exit(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every child to exit; True when they all did."""
        deadline = time.monotonic() + timeout
        while any(child.alive for child in self.children) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not any(child.alive for child in self.children)

    def kill_leftovers(self, known: list[psutil.Process]) -> None:
        """SIGKILL the children still running and every process they had started."""
        processes = known + self.descendants()
        for process in processes:
            try:
                if process.is_running():
                    process.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(processes, timeout=5)
        for child in self.children:
            if child.process is not None:
                child.process.wait()


class Command(BaseCommand):
    help = "Run the whole system in the foreground: web server, RQ workers, periodic jobs (and an embedded Redis)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)), help="Web port (PORT).")
        parser.add_argument("--host", default="127.0.0.1", help="Address the web server listens on.")
        parser.add_argument("--workers", type=int, default=2, help="Number of RQ worker processes.")
        parser.add_argument("--no-web", action="store_true", help="Run workers and periodic jobs only.")
        parser.add_argument("--concurrency", type=int, default=None,
                            help="Async and threads=True tasks in flight per worker (ORCHESTRATOR_CONCURRENCY, 250).")
        parser.add_argument("--grace", type=float, default=5.0,
                            help="Seconds running jobs get to finish on stop before a cold shutdown.")

    def handle(self, *args, **options):
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        if options["concurrency"] is not None and options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        if not options["no_web"] and port_open(options["host"], options["port"]):
            raise CommandError(f"Port {options['port']} is already in use; choose another with --port or PORT.")
        supervisor = self.supervisor(options)
        signal.signal(signal.SIGINT, supervisor.request_stop)
        signal.signal(signal.SIGTERM, supervisor.request_stop)
        try:
            supervisor.start()
            if self.wait_for_web(supervisor, options):
                self.banner(supervisor, options)
                supervisor.run()
        finally:
            self.stdout.write("Stopping the orchestrator...")
            supervisor.stop(grace=options["grace"])
        if supervisor.failure:
            raise CommandError(f"Stopped because {supervisor.failure}.")
        self.stdout.write("Stopped.")

    def supervisor(self, options: dict) -> Supervisor:
        redis = None
        if not os.environ.get("REDIS_URL"):
            var_dir = Path(settings.VAR_DIR)
            redis = EmbeddedRedis(var_dir / "redis", url_file=var_dir / "redis.url")
        children = build_children(host=options["host"], port=options["port"], workers=options["workers"],
                                  web=not options["no_web"], concurrency=options["concurrency"])
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")}
        return Supervisor(children, redis=redis, env=env, cwd=Path(settings.BASE_DIR), log=self.stderr.write)

    def wait_for_web(self, supervisor: Supervisor, options: dict, timeout: float = 60.0) -> bool:
        """Wait until the web port answers; False when a stop came first (signal or dead server)."""
        if options["no_web"]:
            return True
        deadline = time.monotonic() + timeout
        while not supervisor.stop_requested and supervisor.check():
            if port_open(options["host"], options["port"]):
                return True
            if time.monotonic() > deadline:
                supervisor.failure = f"the web server did not listen on port {options['port']} within {timeout:g} s"
                return False
            time.sleep(0.2)
        return False

    @staticmethod
    def concurrency(options: dict) -> int:
        return options["concurrency"] or settings.ORCHESTRATOR["CONCURRENCY"]

    def banner(self, supervisor: Supervisor, options: dict) -> None:
        url = f"http://{options['host']}:{options['port']}/"
        web = ["    Web UI      off (--no-web)"]
        if not options["no_web"]:
            web = [f"    Web UI      {url}", f"    Admin       {url}admin/"]
        redis_kind = "embedded" if supervisor.redis is not None else "REDIS_URL"
        database = settings.DATABASES["default"]
        lines = [
            "",
            "  Orchestrator is running",
            *web,
            f"    Redis       {redacted(supervisor.env['REDIS_URL'])} ({redis_kind})",
            f"    Database    {database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']}",
            f"    Workers     {options['workers']} × {self.concurrency(options)} slots for async tasks"
            " (worker-1 also runs the RQ scheduler)",
            f"    Periodic    reconcile every {RECONCILE_EVERY} s, purge every {PURGE_EVERY} s",
            "  Press Ctrl-C to stop.",
            "",
        ]
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))
