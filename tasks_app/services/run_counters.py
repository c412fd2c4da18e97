"""Counters and histograms of every run ever recorded, for ``/metrics``, without reading every run per scrape.

The run rows are the truth, and they are shared by every process (an in-process counter in each
worker would see a slice). Each scrape reads only the runs that started or ended since the last
scrape: everything before a watermark is folded once into a rollup kept in Redis (one JSON value per
database), and the runs of the last ``SETTLE`` seconds are added on top of it without being folded,
because a run's end commits a moment after its ``finished_at`` is taken and the hosts' clocks differ
a little. The first scrape, or the first after Redis lost the rollup, reads every run once.

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
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import WatchError

from ..models import RUN_ACTIVE, Run, RunStatus
from . import transport

SETTLE = timedelta(seconds=60)
OTHER = "other"
# Fixed buckets (seconds, upper bounds): a bucket set that changed would break every rate() across it.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
OUTCOMES = tuple(status for status in RunStatus.values if status not in RUN_ACTIVE)
TIMED = (RunStatus.COMPLETED, RunStatus.FAILED)  # the runs whose duration is the task's own
CHUNK = 5_000


@dataclass
class Histogram:
    """Observations per bucket (not cumulative; the last one is above every bound) and their sum."""

    counts: list[int]
    sum: float = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1
        self.sum += value

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

    def count_start(self, label: str, waited: float) -> None:
        self.started[label] = self.started.get(label, 0) + 1
        self.wait.setdefault(label, Histogram([0] * (len(WAIT_BUCKETS) + 1))).observe(WAIT_BUCKETS, waited)

    def count_end(self, label: str, outcome: str, seconds: float | None) -> None:
        by_outcome = self.finished.setdefault(label, {})
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        if seconds is not None and outcome in TIMED:
            self.duration.setdefault(label, Histogram([0] * (len(DURATION_BUCKETS) + 1))).observe(
                DURATION_BUCKETS, seconds
            )

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
                mine.setdefault(label, Histogram([0] * (len(bounds) + 1))).add(histogram)
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
        recent = fold(rollup, run_rows(rollup.watermark), until)
        if rollup.watermark is None or until > rollup.watermark:
            rollup.watermark = until
            pipe.multi()
            pipe.set(key(), rollup.dumps())
            try:
                pipe.execute()
            except WatchError:
                pass  # another scrape folded the same runs first; this sum is still right
    return rollup.tally.add(recent)


def fold(rollup: Rollup, rows: Iterable[tuple], until: datetime) -> Tally:
    """Count each row's start and end that the rollup has not seen: before ``until`` into the
    rollup, later ones into the tally returned (counted for this scrape only)."""
    since, recent = rollup.watermark, Tally()
    for task, status, queued_at, not_before, started_at, finished_at in rows:
        label = rollup.label(task)
        if started_at is not None and (since is None or started_at >= since):
            due = max(queued_at, not_before) if not_before else queued_at
            tally = rollup.tally if started_at < until else recent
            tally.count_start(label, max(0.0, (started_at - due).total_seconds()))
        if finished_at is not None and (since is None or finished_at >= since):
            seconds = (finished_at - started_at).total_seconds() if started_at else None
            tally = rollup.tally if finished_at < until else recent
            tally.count_end(label, status, seconds)
    return recent


def run_rows(since: datetime | None) -> Iterable[tuple]:
    """The runs that started or ended at ``since`` or later (every started or ended run without it).

    With indexes on ``Run.started_at`` and ``Run.finished_at`` this reads only the last scrape
    interval's runs; without them, one pass over the run table."""
    if since is None:
        runs = Run.objects.filter(Q(started_at__isnull=False) | Q(finished_at__isnull=False))
    else:
        runs = Run.objects.filter(Q(started_at__gte=since) | Q(finished_at__gte=since))
    fields = ("signature__task_name", "status", "queued_at", "not_before", "started_at", "finished_at")
    return runs.order_by().values_list(*fields).iterator(chunk_size=CHUNK)
