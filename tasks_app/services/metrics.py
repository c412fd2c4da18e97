"""Dashboard metrics (CONTRACT.md §5 ``/api/metrics/``): counts by status, throughput over time,
failure rate and duration percentiles by task.

Every function takes the signatures a person may see (``Signature.objects.visible_to(user)``), so
the web dashboard and the API answer the same numbers.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from django.db import connections
from django.db.models import Count, Func, Q, QuerySet
from django.db.models.functions import Substr, TruncDay, TruncHour
from django.utils import timezone

from ..models import Kind, Signature, Status

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_RANGE = "24h"
PERCENTILES = (50, 90, 99)
MAX_DURATIONS = 1000  # most recent finished runs per task that the percentiles read


def since(range_key: str, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - RANGES.get(range_key, RANGES[DEFAULT_RANGE])


def counts_by_status(signatures: QuerySet[Signature]) -> dict[str, int]:
    """Top-level signatures by status (every status present, 0 when none), plus the trash.

    One grouped query, an index-only scan of the owner's top-level rows (``sig_top_owner_counts_idx``):
    the live rows counted by status, the trashed ones (any status) as ``marked_for_deletion``. It
    counts ``status`` (never null) rather than ``pk``, which that index does not hold.
    """
    rows = (
        signatures.top_level()
        .order_by()
        .values("status")
        .annotate(
            live=Count("status", filter=Q(delete_after__isnull=True)),
            trashed=Count("status", filter=Q(delete_after__isnull=False)),
        )
    )
    counts = dict.fromkeys(Status.values, 0)
    counts["marked_for_deletion"] = 0
    for row in rows:
        if row["status"] in counts:
            counts[row["status"]] = row["live"]
        counts["marked_for_deletion"] += row["trashed"]
    return counts


def throughput(signatures: QuerySet[Signature], start: datetime, now: datetime | None = None) -> dict:
    """Finished signatures (any level) per hour, or per day over ranges longer than two days (UTC)."""
    now = now or timezone.now()
    by_day = now - start > timedelta(days=2)
    rows = (
        signatures.filter(finished_at__gte=start, status__in=(Status.COMPLETED, Status.FAILED))
        .order_by()
        .annotate(bucket=_bucket(by_day, connections[signatures.db].vendor))
        .values("bucket")
        .annotate(completed=Count("pk", filter=Q(status=Status.COMPLETED)),
                  failed=Count("pk", filter=Q(status=Status.FAILED)))
    )
    width = 10 if by_day else 13  # "YYYY-MM-DD" or "YYYY-MM-DD HH"
    found = {_utc_text(row["bucket"])[:width]: row for row in rows}
    points = []
    for bucket in _buckets(start, now, by_day):
        row = found.get(_utc_text(bucket)[:width], {})
        points.append({"at": bucket.isoformat(), "completed": row.get("completed", 0), "failed": row.get("failed", 0)})
    return {"bucket": "day" if by_day else "hour", "points": points}


def _bucket(by_day: bool, vendor: str) -> Func:
    """The hour or day of ``finished_at`` in UTC, as the database computes it cheaply.

    Django truncates dates on SQLite with a Python function called for each row (40 ms for the
    2,000 rows of a day at 100,000 signatures); SQLite keeps the UTC time as text, "YYYY-MM-DD
    HH:MM:SS...", so the hour or the day is its first 13 or 10 characters.
    """
    if vendor == "sqlite":
        return Substr("finished_at", 1, 10 if by_day else 13)
    return (TruncDay if by_day else TruncHour)("finished_at", tzinfo=UTC)


def _utc_text(value: datetime | str) -> str:
    return value if isinstance(value, str) else value.astimezone(UTC).isoformat(" ")


def _buckets(start: datetime, now: datetime, by_day: bool) -> list[datetime]:
    step = timedelta(days=1) if by_day else timedelta(hours=1)
    first = start.replace(minute=0, second=0, microsecond=0)
    if by_day:
        first = first.replace(hour=0)
    buckets = []
    while first <= now:
        buckets.append(first)
        first += step
    return buckets


def by_task(signatures: QuerySet[Signature], start: datetime) -> list[dict]:
    """Per task name: finished count, failure rate and duration percentiles (ms) of completed runs."""
    finished = signatures.filter(kind=Kind.TASK, finished_at__gte=start, status__in=(Status.COMPLETED, Status.FAILED))
    totals = finished.values("task_name").annotate(
        finished=Count("pk"), failed=Count("pk", filter=Q(status=Status.FAILED))
    ).order_by("task_name")
    rows = []
    for total in totals:
        durations = _durations_ms(finished.filter(task_name=total["task_name"], status=Status.COMPLETED))
        row = {
            "task": total["task_name"],
            "finished": total["finished"],
            "failed": total["failed"],
            "failure_rate": round(total["failed"] / total["finished"], 4) if total["finished"] else 0.0,
        }
        row.update({f"p{p}_ms": percentile(durations, p) for p in PERCENTILES})
        rows.append(row)
    return rows


def _durations_ms(completed: QuerySet[Signature]) -> list[int]:
    pairs = completed.filter(started_at__isnull=False).order_by("-finished_at").values_list(
        "started_at", "finished_at"
    )[:MAX_DURATIONS]
    return sorted(int((end - begin).total_seconds() * 1000) for begin, end in pairs)


def percentile(sorted_values: list[int], p: float) -> int | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def recent_failures(signatures: QuerySet[Signature], limit: int = 10) -> QuerySet[Signature]:
    return signatures.filter(status=Status.FAILED).order_by("-finished_at", "-pk")[:limit]


def running(signatures: QuerySet[Signature], limit: int = 20) -> QuerySet[Signature]:
    """Top-level work in flight (running, queued, waiting for approval), most recently started first.

    The ids are chosen from the index alone (``sig_top_owner_status_idx`` holds status and started_at),
    then only those rows are read: with thousands in flight, sorting whole rows cost 50 ms on SQLite.
    """
    active = (Status.RUNNING, Status.QUEUED, Status.WAITING_APPROVAL, Status.PAUSED)
    order = ("-started_at", "-pk")
    ids = signatures.top_level().live().filter(status__in=active).order_by(*order).values("pk")[:limit]
    return Signature.objects.filter(pk__in=ids).order_by(*order)


def summary(signatures: QuerySet[Signature], range_key: str = DEFAULT_RANGE) -> dict:
    """Everything the dashboard charts, as JSON-ready data."""
    now = timezone.now()
    start = since(range_key, now)
    return {
        "range": range_key if range_key in RANGES else DEFAULT_RANGE,
        "since": start.isoformat(),
        "counts": counts_by_status(signatures),
        "throughput": throughput(signatures, start, now),
        "tasks": by_task(signatures, start),
    }
