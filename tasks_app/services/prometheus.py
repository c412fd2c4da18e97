"""Prometheus metrics, read at scrape time from the database and Redis (the ``/metrics`` endpoint).

Nothing is counted in process memory: with several web servers and workers, per-process counters
would each see a slice. A custom collector asks the shared truth instead, on every scrape: the
signatures by kind and status, the RQ queue depths, the workers whose heartbeat is fresh, and the
durations of the runs that finished within ``ORCHESTRATOR["METRICS_WINDOW"]`` seconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from ..models import Kind, Run, RunStatus, Signature, Status, WorkerProcess
from . import transport
from .metrics import percentile

QUANTILES = (50, 95, 99)
MAX_RUNS = 10_000  # most recent finished runs a scrape reads


class OrchestratorCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield signatures()
        yield from queues()
        yield from workers()
        yield from durations(timezone.now() - timedelta(seconds=settings.ORCHESTRATOR["METRICS_WINDOW"]))


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


def queues() -> Iterator[GaugeMetricFamily]:
    depth = GaugeMetricFamily("orchestrator_queue_jobs", "Jobs waiting in each RQ queue.", labels=["queue"])
    try:
        for name in settings.ORCHESTRATOR_QUEUES:
            depth.add_metric([name], transport.get_queue(name).count)
    except RedisError:
        yield GaugeMetricFamily("orchestrator_redis_up", "1 when Redis answered this scrape.", value=0)
        return
    yield GaugeMetricFamily("orchestrator_redis_up", "1 when Redis answered this scrape.", value=1)
    yield depth


def workers() -> Iterator[GaugeMetricFamily]:
    fresh = timezone.now() - timedelta(seconds=settings.ORCHESTRATOR["HEARTBEAT_TIMEOUT"])
    registered = WorkerProcess.objects.count()
    alive = WorkerProcess.objects.filter(last_heartbeat__gte=fresh).count()
    yield GaugeMetricFamily("orchestrator_workers_alive", "Workers whose heartbeat is fresh.", value=alive)
    yield GaugeMetricFamily("orchestrator_workers_registered", "Workers with a heartbeat row.", value=registered)


def durations(since) -> Iterator[GaugeMetricFamily]:
    """Per task: runs finished since ``since`` by outcome, and quantiles of the completed ones' durations."""
    finished = GaugeMetricFamily(
        "orchestrator_task_runs_finished", "Runs finished within the metrics window.", labels=["task", "status"]
    )
    quantiles = GaugeMetricFamily(
        "orchestrator_task_duration_seconds",
        "Quantiles of the durations of runs completed within the metrics window.",
        labels=["task", "quantile"],
    )
    outcomes: dict[tuple[str, str], int] = defaultdict(int)
    seconds: dict[str, list[float]] = defaultdict(list)
    for task, status, started, ended in recent_runs(since):
        outcomes[(task, status)] += 1
        if status == RunStatus.COMPLETED and started is not None:
            seconds[task].append((ended - started).total_seconds())
    for (task, status), n in sorted(outcomes.items()):
        finished.add_metric([task, status], n)
    for task, values in sorted(seconds.items()):
        values.sort()
        for q in QUANTILES:
            quantiles.add_metric([task, str(q / 100)], percentile(values, q))
    yield finished
    yield quantiles


def recent_runs(since) -> list[tuple]:
    runs = Run.objects.filter(status__in=(RunStatus.COMPLETED, RunStatus.FAILED), finished_at__gte=since)
    return list(
        runs.order_by("-finished_at").values_list("signature__task_name", "status", "started_at", "finished_at")[
            :MAX_RUNS
        ]
    )


REGISTRY = CollectorRegistry()
REGISTRY.register(OrchestratorCollector())


def exposition() -> bytes:
    """The text exposition format of everything above, collected now."""
    return generate_latest(REGISTRY)
