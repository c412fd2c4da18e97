"""Purge: time ``deletion.purge()`` over N expired soft-deleted signatures, and its peak memory.

The rows are machine-made with ``bulk_create``: N top-level task signatures marked for deletion an
hour ago, every 10th with a Run, a Step and two LogEntry rows, every 100th a swarm with 5
members, and every 1,000th still running (purge must keep it). Each size (10,000, then N) is
purged twice from fresh data: once for the time, once under tracemalloc for the peak of Python
allocations (tracemalloc slows the run, so its time is not the figure). Target: ≤ 10 s for
100,000, and a peak that stays flat from 10,000 to 100,000.

Wall time on a shared machine swings with the load, so the CPU seconds of the purge are shown too:
this process's, plus, on PostgreSQL running on this host, those of the server backend serving it
(where most of the work is: the foreign-key checks of each deleted row, see migration 0005).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

TARGET_SECONDS = 10.0
BATCH = 5_000


def make_rows(n: int) -> int:
    """Create n expired trees (and their extras); returns how many must survive (still running)."""
    user, survivors = common.owner(), 0
    for start in range(0, n, BATCH):
        survivors += _make_batch(user, range(start, min(n, start + BATCH)))
    return survivors


def _make_batch(user, indexes: range) -> int:
    from django.utils import timezone

    from tasks_app.models import Kind, LogEntry, Run, Signature, Status, Step

    now = timezone.now()
    marked = {"marked_at": now - timedelta(hours=2), "delete_after": now - timedelta(hours=1)}
    tops = Signature.objects.bulk_create(
        [
            Signature(
                owner=user,
                kind=Kind.SWARM if i % 100 == 0 else Kind.TASK,
                task_name="" if i % 100 == 0 else "examples.noop",
                status=Status.RUNNING if i % 1000 == 1 else Status.COMPLETED,
                finished_at=now,
                **marked,
            )
            for i in indexes
        ]
    )
    swarms = [s for s in tops if s.kind == Kind.SWARM]
    Signature.objects.bulk_create(
        [
            Signature(owner=user, task_name="examples.noop", parent=s, root=s, position=p, status=Status.COMPLETED)
            for s in swarms
            for p in range(5)
        ]
    )
    extras = [s for i, s in zip(indexes, tops, strict=True) if i % 10 == 5]
    runs = Run.objects.bulk_create([Run(signature=s, number=1, status="completed") for s in extras])
    Step.objects.bulk_create([Step(signature=s, order=1, name="only", status="completed") for s in extras])
    LogEntry.objects.bulk_create(
        [LogEntry(signature_id=r.signature_id, run=r, message=f"line {k}") for r in runs for k in range(2)]
    )
    return sum(1 for s in tops if s.status == Status.RUNNING)


def cpu_seconds() -> float:
    """CPU time of this process and, when PostgreSQL runs on this host, of the backend serving it."""
    from django.db import connection

    seconds = time.process_time()
    if connection.vendor == "postgresql" and connection.settings_dict["HOST"] in ("", "localhost", "127.0.0.1", "::1"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            proc = Path(f"/proc/{cursor.fetchone()[0]}")
        with contextlib.suppress(OSError, ValueError, IndexError):
            if b"postgres" in (proc / "cmdline").read_bytes():  # not another process in a container's pid space
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                seconds += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def purge_once(n: int, traced: bool) -> tuple[float, float, int, int, float]:
    """(seconds, CPU seconds, trees purged, rows left, peak MiB or 0) of one purge over freshly made rows."""
    from tasks_app.models import LogEntry, Run, Signature, Step
    from tasks_app.services import deletion

    common.reset_orchestrator()
    survivors = make_rows(n)
    if traced:
        tracemalloc.start()
    cpu, started = cpu_seconds(), time.perf_counter()
    purged = deletion.purge()
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    peak = 0.0
    if traced:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    left = Signature.objects.filter(parent__isnull=True).count()
    if left != survivors or purged != n - survivors:
        raise RuntimeError(f"purged {purged}, left {left}; expected {n - survivors} and {survivors}")
    if Run.objects.exists() or Step.objects.exists() or LogEntry.objects.exists():  # all were in purged trees
        raise RuntimeError("runs, steps or log entries of purged trees are left")
    return seconds, cpu, purged, left, peak


def main() -> None:
    args = common.parser(__doc__, n=100_000, workers=None).parse_args()
    rows = []
    with common.session("purge"):
        for size in sorted({min(10_000, args.n), args.n}):
            seconds, cpu, purged, left, _ = purge_once(size, traced=False)
            *_, peak = purge_once(size, traced=True)
            rows.append((f"{size:,}", purged, left, seconds, cpu, purged / seconds, peak))
        common.table(
            ["expired", "trees purged", "kept (running)", "seconds", "CPU s (+db)", "trees/s",
             "peak MiB (tracemalloc)"],
            rows,
            title="deletion.purge() over expired soft-deleted signatures",
        )
        print(f"purge of {rows[-1][0]}: {common.ratio_label(rows[-1][3], TARGET_SECONDS, at_least=False)} s")
        if len(rows) > 1:
            print(f"peak memory {rows[-1][0]} / {rows[0][0]}: {rows[-1][6] / rows[0][6]:.2f}×")


if __name__ == "__main__":
    main()
