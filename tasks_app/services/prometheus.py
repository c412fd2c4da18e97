"""Prometheus metrics, read at scrape time from the database and Redis (the ``/metrics`` endpoint).

Nothing is counted in process memory: with several web servers and workers, per-process counters
would each see a slice. Custom collectors ask the shared truth instead, on every scrape:

- run counters and histograms over every run ever recorded (``run_counters``: a rollup in Redis
  plus the last minute's runs, so a scrape does not read the whole run table);
- gauges of the present: signatures by kind and status, runs queued and running, RQ queue depths
  and the age of each queue's oldest job, workers alive and lost;
- django-rq's own collector (``rq_workers``, ``rq_jobs``, ...), in the same exposition rather
  than on a second endpoint.

docs/metrics.md lists every metric; docs/alerts.yml and docs/grafana-dashboard.json use them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from django_rq.contrib.prometheus import RQCollector
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from rq.utils import utcparse

from ..models import RUN_ACTIVE, Kind, Run, Signature, Status, WorkerProcess
from . import run_counters, transport
from .run_counters import DURATION_BUCKETS, OUTCOMES, WAIT_BUCKETS

LOST_SHOWN = timedelta(hours=24)  # a lost worker counts this long after its last beat (the Workers page's span)
HEAD = 5  # jobs read at a queue's head to find the oldest one still in Redis


class OrchestratorCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield signatures()
        yield active_runs()
        yield from workers()
        try:
            families = [*queues(), *runs(run_counters.totals())]
        except RedisError:
            yield GaugeMetricFamily("orchestrator_redis_up", "1 when Redis answered this scrape.", value=0)
            return
        yield GaugeMetricFamily("orchestrator_redis_up", "1 when Redis answered this scrape.", value=1)
        yield from families


class RQPart(Collector):
    """django-rq's collector; nothing when Redis is away (``orchestrator_redis_up`` says so) rather
    than a failed scrape that would hide the database's metrics too."""

    def __init__(self) -> None:
        self.collector = RQCollector()

    def collect(self) -> list[Metric]:
        try:
            return list(self.collector.collect())
        except RedisError:
            return []


def signatures() -> GaugeMetricFamily:
    """Every kind × status pair, 0 included, so that a series never vanishes when it empties."""
    family = GaugeMetricFamily(
        "orchestrator_signatures",
        "Signatures (any level, trash included) by kind and status.",
        labels=["kind", "status"],
    )
    rows = Signature.objects.order_by().values_list("kind", "status").annotate(n=Count("pk"))
    counts = {(kind, status): n for kind, status, n in rows}
    for kind in Kind.values:
        for status in Status.values:
            family.add_metric([kind, status], counts.get((kind, status), 0))
    return family


def active_runs() -> GaugeMetricFamily:
    """Runs queued and running now, from the (status, queued_at) index."""
    family = GaugeMetricFamily("orchestrator_runs_active", "Runs queued or running now.", labels=["status"])
    rows = Run.objects.filter(status__in=RUN_ACTIVE).order_by().values_list("status").annotate(n=Count("status"))
    counts = dict(rows)
    for status in RUN_ACTIVE:
        family.add_metric([status], counts.get(status, 0))
    return family


def queues() -> list[GaugeMetricFamily]:
    depth = GaugeMetricFamily("orchestrator_queue_jobs", "Jobs waiting in each RQ queue.", labels=["queue"])
    age = GaugeMetricFamily(
        "orchestrator_queue_oldest_job_age_seconds",
        "Seconds since the job at the head of each RQ queue was enqueued (0 when the queue is empty).",
        labels=["queue"],
    )
    for name in settings.ORCHESTRATOR_QUEUES:
        queue = transport.get_queue(name)
        depth.add_metric([name], queue.count)
        age.add_metric([name], oldest_age(queue))
    return [depth, age]


def oldest_age(queue) -> float:
    """The age of the job at the queue's head (RQ pushes at the tail: the head waited longest); a
    job id whose job expired is passed over."""
    ids = queue.get_job_ids(0, HEAD)
    if not ids:
        return 0.0
    with queue.connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(queue.job_class.key_for(job_id), "enqueued_at")
        stamps = [stamp for stamp in pipe.execute() if stamp]
    if not stamps:
        return 0.0
    return max(0.0, (timezone.now() - utcparse(stamps[0].decode())).total_seconds())


def workers() -> Iterator[GaugeMetricFamily]:
    """A worker that exits cleanly deletes its heartbeat row; one whose heartbeat went stale without
    that died or hangs: lost (for a day, or until staff delete its row in the admin)."""
    now = timezone.now()
    fresh = now - timedelta(seconds=settings.ORCHESTRATOR["HEARTBEAT_TIMEOUT"])
    registered = WorkerProcess.objects.count()
    alive = WorkerProcess.objects.filter(last_heartbeat__gte=fresh).count()
    lost = WorkerProcess.objects.filter(last_heartbeat__lt=fresh, last_heartbeat__gte=now - LOST_SHOWN).count()
    yield GaugeMetricFamily("orchestrator_workers_alive", "Workers whose heartbeat is fresh.", value=alive)
    yield GaugeMetricFamily("orchestrator_workers_registered", "Workers with a heartbeat row.", value=registered)
    yield GaugeMetricFamily(
        "orchestrator_workers_lost", "Workers whose heartbeat stopped within the last day without a clean exit.",
        value=lost,
    )


def runs(tally: run_counters.Tally) -> list[Metric]:
    """Counters and histograms per task label; every outcome of a label is present (0 included),
    so that a ratio of two of them exists as soon as the task ran."""
    started = CounterMetricFamily("orchestrator_runs_started", "Runs a worker started, by task.", labels=["task"])
    finished = CounterMetricFamily(
        "orchestrator_runs_finished", "Runs that ended, by task and outcome.", labels=["task", "outcome"]
    )
    duration = HistogramMetricFamily(
        "orchestrator_run_duration_seconds", "Seconds from start to end of completed and failed runs, by task.",
        labels=["task"],
    )
    wait = HistogramMetricFamily(
        "orchestrator_run_queue_wait_seconds", "Seconds a run waited from due (queued, or its delay over) to start.",
        labels=["task"],
    )
    for label in tally.labels():
        started.add_metric([label], tally.started.get(label, 0))
        outcomes = tally.finished.get(label, {})
        for outcome in OUTCOMES:
            finished.add_metric([label, outcome], outcomes.get(outcome, 0))
        histogram_metric(duration, label, tally.duration.get(label), DURATION_BUCKETS)
        histogram_metric(wait, label, tally.wait.get(label), WAIT_BUCKETS)
    return [started, finished, duration, wait]


def histogram_metric(family: HistogramMetricFamily, label: str, histogram, bounds: tuple[float, ...]) -> None:
    histogram = histogram or run_counters.Histogram([0] * (len(bounds) + 1))
    family.add_metric([label], histogram.cumulative(bounds), histogram.sum)


REGISTRY = CollectorRegistry()
REGISTRY.register(OrchestratorCollector())
REGISTRY.register(RQPart())


def exposition() -> bytes:
    """The text exposition format of everything above, collected now."""
    return generate_latest(REGISTRY)
