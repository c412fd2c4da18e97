"""Metrics: the time of a ``/metrics`` scrape (``prometheus.exposition()``) with N runs recorded.

N runs (default 100,000) are machine-made with ``bulk_create``: 20,000 task signatures over 12 task
names with N/20,000 runs each, ended over the last 30 days (completed, failed, lost, interrupted),
none in the last hour. Then:

- the first scrape, which folds every run into the rollup in Redis (once per database, and again
  only if Redis loses the rollup);
- R steady scrapes with nothing new (median, p95): what Prometheus pays every 15 to 30 s;
- R scrapes each after ``--recent`` more runs ended (all within the last minute, so the k-th scrape
  reads k × ``--recent`` runs not yet folded).

Each phase is timed twice: as the tables stand (``Run`` indexed by (status, queued_at) only), then
with indexes on ``Run.started_at`` and ``Run.finished_at`` created by hand for the measurement
(``--no-index`` skips that), since the steady scrape reads the runs since the last fold through
them. ``bench/metrics_scrape.py [--n 100000] [--repeat 20] [--recent 1000]``; SQLite by default,
PostgreSQL with ``DATABASE_URL=postgres://.../bench_metrics`` (a database named bench*).
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

SIGNATURES = 20_000
TASK_NAMES = tuple(f"examples.bench_{i}" for i in range(12))
OUTCOMES = ("completed",) * 7 + ("failed", "lost", "interrupted")
BATCH = 5_000


def make_runs(n: int) -> None:
    from django.utils import timezone

    from tasks_app.models import Run, Signature, Status

    user, now = common.owner(), timezone.now()
    sigs = Signature.objects.bulk_create(
        [Signature(owner=user, task_name=TASK_NAMES[i % len(TASK_NAMES)], status=Status.COMPLETED)
         for i in range(SIGNATURES)], batch_size=BATCH)
    span = 30 * 86_400 / n
    rows = []
    for i in range(n):
        ended = now - timedelta(hours=1, seconds=i * span)
        started = ended - timedelta(seconds=1 + i % 300)
        rows.append(Run(signature=sigs[i % SIGNATURES], number=i // SIGNATURES + 1,
                        status=OUTCOMES[i % len(OUTCOMES)], queued_at=started - timedelta(seconds=i % 7),
                        started_at=started, finished_at=ended))
        if len(rows) == BATCH:
            Run.objects.bulk_create(rows)
            rows = []
    Run.objects.bulk_create(rows)


def add_recent(count: int, numbers: dict[int, int]) -> None:
    """``count`` more runs that ended within the last minute (the next run number of each signature)."""
    from django.utils import timezone

    from tasks_app.models import Run, Signature

    now = timezone.now()
    sigs = list(Signature.objects.order_by("?").values_list("pk", flat=True)[:count])
    rows = []
    for pk in sigs:
        numbers[pk] = numbers.get(pk) or Run.objects.filter(signature_id=pk).count()
        numbers[pk] += 1
        rows.append(Run(signature_id=pk, number=numbers[pk], status="completed", queued_at=now - timedelta(seconds=3),
                        started_at=now - timedelta(seconds=2), finished_at=now))
    Run.objects.bulk_create(rows)


def age_recent() -> None:
    """Move the runs an earlier phase added an hour back: each phase starts with none unfolded."""
    from django.db.models import F
    from django.utils import timezone

    from tasks_app.models import Run

    hour = timedelta(hours=1)
    Run.objects.filter(finished_at__gte=timezone.now() - timedelta(minutes=30)).update(
        queued_at=F("queued_at") - hour, started_at=F("started_at") - hour, finished_at=F("finished_at") - hour
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(ordered):7.1f} ms, p95 {p95:7.1f} ms"


def phases(repeat: int, recent: int, label: str) -> None:
    from tasks_app.services import prometheus, run_counters

    age_recent()
    conn = run_counters.transport.connection(run_counters.transport.queue_names()[0])
    conn.delete(run_counters.key())
    print(f"{label}: first scrape (folds every run)   {timed(prometheus.exposition):9.1f} ms")
    steady = [timed(prometheus.exposition) for _ in range(repeat)]
    print(f"{label}: steady scrape, nothing new      {summary(steady)}")
    numbers: dict[int, int] = {}
    busy = []
    for _ in range(repeat):
        add_recent(recent, numbers)
        busy.append(timed(prometheus.exposition))
    print(f"{label}: steady scrape, +{recent} runs each   {summary(busy)}")


def add_indexes() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX bench_run_started_at ON tasks_app_run (started_at)")
        cursor.execute("CREATE INDEX bench_run_finished_at ON tasks_app_run (finished_at)")
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE tasks_app_run")


def main() -> None:
    parser = common.parser(__doc__, n=100_000, workers=None)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--recent", type=int, default=1000)
    parser.add_argument("--no-index", action="store_true")
    args = parser.parse_args()
    with common.session("metrics_scrape"):
        from django.db import connection

        from tasks_app.models import Run

        with connection.cursor() as cursor:  # a PostgreSQL run before left them (TRUNCATE keeps indexes)
            cursor.execute("DROP INDEX IF EXISTS bench_run_started_at")
            cursor.execute("DROP INDEX IF EXISTS bench_run_finished_at")
        started = time.perf_counter()
        make_runs(args.n)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE tasks_app_run")
        print(f"# {Run.objects.count():,} runs made in {time.perf_counter() - started:.1f} s")
        phases(args.repeat, args.recent, "no index")
        if not args.no_index:
            add_indexes()
            phases(args.repeat, args.recent, "indexed ")


if __name__ == "__main__":
    main()
