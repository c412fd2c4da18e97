"""Counters and histograms of every run ever recorded, for ``/metrics``, without reading every run per scrape.

The run rows are the truth, and they are shared by every process (an in-process counter in each
worker would see a slice). Each scrape reads only the runs that started or ended since the last
scrape: everything before a watermark is folded once into a rollup kept in Redis (one JSON value per
database), and the runs of the last ``SETTLE`` seconds are added on top of it without being folded,
because a run's end commits a moment after its ``finished_at`` is taken and the hosts' clocks differ
a little. The first scrape, or the first after Redis lost the rollup, reads every run once. The
database groups the runs (by task, outcome and bucket), so a scrape handles a few rows per task,
not one per run.

Several web servers scrape side by side: the rollup is written under WATCH, so a fold lands once;
a scrape whose write lost the race still answers its own sum, which is as right as the winner's.
Nothing is written on the runs' path (execution.py stays as it is), and every ending counts, the
reconciler's ``lost`` and an interrupt's ``interrupted`` included.

Label sets are bounded: the first ``ORCHESTRATOR["METRICS_MAX_TASKS"]`` task names seen keep a label
of their own for good (so a series never moves), the rest count under ``other``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections
from django.utils import timezone
from redis.exceptions import WatchError

from ..models import RUN_ACTIVE, Run, RunStatus, Signature
from . import transport

SETTLE = timedelta(seconds=60)
OTHER = "other"
# Fixed buckets (seconds, upper bounds): a bucket set that changed would break every rate() across it.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
OUTCOMES = tuple(status for status in RunStatus.values if status not in RUN_ACTIVE)
TIMED = (RunStatus.COMPLETED, RunStatus.FAILED)  # the runs whose duration is the task's own


@dataclass
class Histogram:
    """Observations per bucket (not cumulative; the last one is above every bound) and their sum."""

    counts: list[int]
    sum: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls([0] * (len(bounds) + 1))

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as the exposition wants them, +Inf last."""
        pairs, total = [], 0
        for bound, count in zip((*map(str, bounds), "+Inf"), self.counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs


@dataclass
class Tally:
    """Runs started per task label; ended per label and outcome; duration and queue wait histograms."""

    started: dict[str, int] = field(default_factory=dict)
    finished: dict[str, dict[str, int]] = field(default_factory=dict)
    duration: dict[str, Histogram] = field(default_factory=dict)
    wait: dict[str, Histogram] = field(default_factory=dict)

    def count_starts(self, label: str, bucket: int, n: int, seconds: float) -> None:
        """``n`` runs started after waiting ``seconds`` in all, in the wait bucket ``bucket``."""
        self.started[label] = self.started.get(label, 0) + n
        histogram = self.wait.setdefault(label, Histogram.empty(WAIT_BUCKETS))
        histogram.counts[bucket] += n
        histogram.sum += seconds

    def count_ends(self, label: str, outcome: str, bucket: int | None, n: int, seconds: float) -> None:
        """``n`` runs ended with ``outcome``; in the duration bucket ``bucket`` unless it is None."""
        by_outcome = self.finished.setdefault(label, {})
        by_outcome[outcome] = by_outcome.get(outcome, 0) + n
        if bucket is not None:
            histogram = self.duration.setdefault(label, Histogram.empty(DURATION_BUCKETS))
            histogram.counts[bucket] += n
            histogram.sum += seconds

    def add(self, other: Tally) -> Tally:
        """Both added up, as a new tally."""
        total = Tally.from_json(self.to_json())
        for label, n in other.started.items():
            total.started[label] = total.started.get(label, 0) + n
        for label, outcomes in other.finished.items():
            mine = total.finished.setdefault(label, {})
            for outcome, n in outcomes.items():
                mine[outcome] = mine.get(outcome, 0) + n
        for mine, theirs, bounds in ((total.duration, other.duration, DURATION_BUCKETS),
                                     (total.wait, other.wait, WAIT_BUCKETS)):
            for label, histogram in theirs.items():
                mine.setdefault(label, Histogram.empty(bounds)).add(histogram)
        return total

    def labels(self) -> list[str]:
        return sorted(self.started.keys() | self.finished.keys())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Tally:
        return cls(
            started=dict(data.get("started", {})),
            finished={label: dict(outcomes) for label, outcomes in data.get("finished", {}).items()},
            duration={label: Histogram(list(h["counts"]), h["sum"]) for label, h in data.get("duration", {}).items()},
            wait={label: Histogram(list(h["counts"]), h["sum"]) for label, h in data.get("wait", {}).items()},
        )


@dataclass
class Rollup:
    """What Redis keeps: the tally of every run start and end before ``watermark``, and the task
    names that were given a label of their own (in the order they came)."""

    tally: Tally = field(default_factory=Tally)
    tasks: list[str] = field(default_factory=list)
    watermark: datetime | None = None

    def label(self, task: str) -> str:
        """The task's own label while there is room (kept for good once given), else ``other``."""
        task = task or "unknown"
        if task in self.tasks:
            return task
        if len(self.tasks) < settings.ORCHESTRATOR["METRICS_MAX_TASKS"]:
            self.tasks.append(task)
            return task
        return OTHER

    def dumps(self) -> str:
        watermark = self.watermark.isoformat() if self.watermark else None
        return json.dumps({"v": 1, "watermark": watermark, "tasks": self.tasks, "tally": self.tally.to_json()})

    @classmethod
    def loads(cls, raw: bytes | None) -> Rollup:
        if not raw:
            return cls()
        data = json.loads(raw)
        watermark = datetime.fromisoformat(data["watermark"]) if data.get("watermark") else None
        return cls(Tally.from_json(data["tally"]), list(data["tasks"]), watermark)


def key() -> str:
    """One rollup per database: two sites (or two test runs) sharing a Redis never mix their counts."""
    name = str(connections["default"].settings_dict["NAME"])
    return f"orchestrator:metrics:runs:v1:{hashlib.sha1(name.encode()).hexdigest()[:16]}"


def totals(now: datetime | None = None) -> Tally:
    """Every run start and end recorded so far: the rollup, brought up to ``now - SETTLE``, plus
    the runs since then. Raises RedisError when Redis is away (the caller reports that instead)."""
    until = (now or timezone.now()) - SETTLE
    conn = transport.connection(transport.queue_names()[0])
    with conn.pipeline() as pipe:
        pipe.watch(key())
        rollup = Rollup.loads(pipe.get(key()))
        recent = fold(rollup, until)
        if rollup.watermark is None or until > rollup.watermark:
            rollup.watermark = until
            pipe.multi()
            pipe.set(key(), rollup.dumps())
            try:
                pipe.execute()
            except WatchError:
                pass  # another scrape folded the same runs first; this sum is still right
    return rollup.tally.add(recent)


def fold(rollup: Rollup, until: datetime) -> Tally:
    """Count the run starts and ends the rollup has not seen: those before ``until`` into the
    rollup, later ones into the tally returned (counted for this scrape only)."""
    recent = Tally()
    for task, later, index, n, seconds in started_groups(rollup.watermark, until):
        (recent if later else rollup.tally).count_starts(rollup.label(task), index, n, float(seconds or 0))
    for task, status, later, index, n, seconds in ended_groups(rollup.watermark, until):
        tally = recent if later else rollup.tally
        tally.count_ends(rollup.label(task), status, None if index < 0 else index, n, float(seconds or 0))
    return recent


# The two grouping queries are written as SQL: built with Django's Case and When (a bucket per
# bound, over an annotation the compiler copies into every branch), compiling one took 60-90 ms,
# more than running it. Only the subtraction of two times differs between the two databases;
# SQLite's julianday() is exact to a tenth of a millisecond.
SECONDS = {
    "sqlite": "((julianday({end}) - julianday({start})) * 86400.0)",
    "postgresql": "EXTRACT(EPOCH FROM ({end} - {start}))",
}
LARGER = {"sqlite": "MAX", "postgresql": "GREATEST"}
# Kept from merging into the outer query, the inner one computes each run's seconds once instead of
# once per bucket tried (half the time of the first scrape at 100,000 runs on SQLite).
FENCE = {"sqlite": "LIMIT -1", "postgresql": "OFFSET 0"}

STARTED_SQL = """
SELECT sig.task_name, r.later, {bucket} AS b, COUNT(*), SUM(r.secs)
FROM (SELECT signature_id, CASE WHEN started_at >= %s THEN 1 ELSE 0 END AS later,
             {larger}({seconds}, 0.0) AS secs
      FROM {run} WHERE {since} {fence}) r
JOIN {signature} sig ON sig.{pk} = r.signature_id
GROUP BY sig.task_name, r.later, b
ORDER BY sig.task_name, r.later, b
"""

ENDED_SQL = """
SELECT sig.task_name, r.status, r.later, {bucket} AS b, COUNT(*), SUM(r.secs)
FROM (SELECT signature_id, status, CASE WHEN finished_at >= %s THEN 1 ELSE 0 END AS later,
             CASE WHEN status IN ({timed}) AND started_at IS NOT NULL THEN {seconds} END AS secs
      FROM {run} WHERE {since} {fence}) r
JOIN {signature} sig ON sig.{pk} = r.signature_id
GROUP BY sig.task_name, r.status, r.later, b
ORDER BY sig.task_name, r.status, r.later, b
"""


def bucket(bounds: tuple[float, ...]) -> str:
    """The index of the first bound at or above ``r.secs``; -1 when it is null (no duration)."""
    whens = " ".join(f"WHEN r.secs <= {float(bound)!r} THEN {i}" for i, bound in enumerate(bounds))
    return f"CASE WHEN r.secs IS NULL THEN -1 {whens} ELSE {len(bounds)} END"


def started_groups(since: datetime | None, until: datetime) -> list[tuple]:
    """``(task, later, wait bucket, runs, seconds waited)`` of the runs started at ``since`` or later,
    grouped by the database: a row per group, whatever the number of runs (read through an index
    on ``Run.started_at``, or in one pass over the table without one)."""
    vendor = connections["default"].vendor
    due = f"{LARGER[vendor]}(queued_at, COALESCE(not_before, queued_at))"
    seconds = SECONDS[vendor].format(end="started_at", start=due)
    return grouped(STARTED_SQL, "started_at", since, until, bucket=bucket(WAIT_BUCKETS), seconds=seconds)


def ended_groups(since: datetime | None, until: datetime) -> list[tuple]:
    """``(task, outcome, later, duration bucket or -1, runs, seconds)`` of the runs ended at ``since``
    or later; only completed and failed runs that started have a duration."""
    seconds = SECONDS[connections["default"].vendor].format(end="finished_at", start="started_at")
    timed = ", ".join(f"'{status}'" for status in TIMED)
    return grouped(ENDED_SQL, "finished_at", since, until, bucket=bucket(DURATION_BUCKETS), seconds=seconds,
                   timed=timed)


def grouped(template: str, column: str, since: datetime | None, until: datetime, **parts: str) -> list[tuple]:
    connection = connections["default"]
    condition = f"{column} >= %s" if since is not None else f"{column} IS NOT NULL"
    sql = template.format(run=Run._meta.db_table, signature=Signature._meta.db_table, pk=Signature._meta.pk.column,
                          since=condition,
                          larger=LARGER[connection.vendor], fence=FENCE[connection.vendor], **parts)
    adapt = connection.ops.adapt_datetimefield_value
    params = [adapt(until)] + ([adapt(since)] if since is not None else [])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
