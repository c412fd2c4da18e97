"""The task of the chaos and outage runs: it records every execution outside the orchestrator.

Each execution appends a `start` line before its work and an `end` line after it to the file named
by CHAOS_RECORD_FILE (one `write` of a short line on an O_APPEND descriptor: whole lines, even
from several processes), so the checks count what really ran, not what the database says ran.
Workers import this module through bench.common.LAUNCHER.
"""

from __future__ import annotations

import os
import time

from tasks_app.registry import task

TASK = "chaos.work"


def record(kind: str, ctx) -> None:
    path = os.environ.get("CHAOS_RECORD_FILE")
    if not path:
        return
    line = f"{kind} {ctx.signature.pk} {ctx.run.number} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@task(TASK, category="chaos")
def work(ctx, ms: float = 20, input=None, label: str = ""):
    """Sleeps `ms` milliseconds in two halves with a progress report between; returns its own id."""
    record("start", ctx)
    ctx.log.info("chaos work %s run %s %s", ctx.signature.pk, ctx.run.number, label)
    time.sleep(ms / 2000)
    ctx.progress(50)
    time.sleep(ms / 2000)
    record("end", ctx)
    return ctx.signature.pk


GATE = "chaos.gate"


@task(GATE, category="chaos")
def gate(ctx, timeout: float = 2, default: str = "approve", input=None, label: str = ""):
    """Asks for an approval nobody gives: the timeout applies the default, and the task returns it.

    Its first run ends waiting (a `start` line, no `end`); the run after the decision records both."""
    record("start", ctx)
    approved = ctx.request_approval("chaos gate", details=label, timeout=timeout, default=default)
    ctx.log.info("chaos work %s run %s %s", ctx.signature.pk, ctx.run.number, label)
    record("end", ctx)
    return approved
