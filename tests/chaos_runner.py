"""Runs bench/chaos.py and bench/outages.py as subprocesses on the test database.

The driver starts its own redis-server (it restarts and stops it), its own workers, cron scheduler
and web server; it only shares the test database, whose orchestrator tables it empties first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection, connections

from tests.workers import database_url


def run_driver(script: str, *args: str, out_dir: Path, timeout: float) -> tuple[str, float]:
    """Run `bench/<script>` with `args`; returns its output and its wall time, failing on a non-zero exit."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)  # the driver's own redis-server, which it may stop
    connections.close_all()  # an outage may terminate this process's connection too
    log = out_dir / f"{Path(script).stem}.out"
    started = time.monotonic()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(Path(settings.BASE_DIR) / "bench" / script), *args, "--dir", str(out_dir / "run")],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            process.wait(timeout=timeout)
        finally:
            if process.poll() is None:  # timed out, or the test was interrupted
                process.terminate()  # the driver stops what it started on SIGTERM
                process.wait(timeout=30)
    text = log.read_text(errors="replace")
    elapsed = time.monotonic() - started
    assert process.returncode == 0, f"{script} exited {process.returncode} after {elapsed:.0f} s:\n{text[-12000:]}"
    return text, elapsed
