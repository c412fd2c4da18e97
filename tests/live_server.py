"""A real daphne for the tests that need a server in its own process: the ASGI application (pages,
static files, WebSockets) on a free port, on the test database and the test Redis.

The browser tests, the live WebSocket tests and the cross-process sign-in limits all start it here.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from tasks_app.embedded_redis import free_port
from tests.workers import kill_tree, subprocess_env


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> int:
    """Poll ``url`` until it answers; fail with the server's log if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the server did not answer {url} within {timeout:g} s:\n{log.read_text(errors='replace')}")


@contextmanager
def daphne(log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A daphne serving the project until the block ends (it and its children are then killed);
    yields its base ``http://`` URL once the sign-in page answers. Its environment is ``env``, by
    default the worker processes' (tests/workers.py): the test database and the test Redis."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "orchestrator_site.asgi:application"],
            cwd=settings.BASE_DIR, env=env if env is not None else subprocess_env(),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/accounts/login/", process, log)
        yield url
    finally:
        kill_tree(process)
