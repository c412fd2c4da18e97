"""Run queued work in this process, as a worker would, one job at a time in priority order.

For service-level tests inside the test transaction: no Redis, no fork, deterministic order.
End-to-end tests use real workers instead (tests/workers.py).
"""

from __future__ import annotations

from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone

from tasks_app.models import Run, RunStatus
from tasks_app.services import execution

QUEUE_ORDER = Case(
    When(queue="orchestrator-high", then=Value(0)),
    When(queue="orchestrator-medium", then=Value(1)),
    default=Value(2),
    output_field=IntegerField(),
)


def next_run(ignore_delay: bool = True) -> Run | None:
    runs = Run.objects.filter(status=RunStatus.QUEUED)
    if not ignore_delay:
        runs = runs.exclude(not_before__gt=timezone.now())
    return runs.order_by(QUEUE_ORDER, "queued_at", "id").first()


def drain(limit: int = 10_000, ignore_delay: bool = True) -> list[tuple[int, int]]:
    """Execute queued runs until none is left; returns (signature id, run number) in execution order."""
    done = []
    for _ in range(limit):
        run = next_run(ignore_delay)
        if run is None:
            return done
        execution.execute(run.signature_id, run.number)
        done.append((run.signature_id, run.number))
    raise AssertionError(f"still work queued after {limit} jobs")


def step(n: int = 1) -> list[tuple[int, int]]:
    """Execute at most n queued runs."""
    done = []
    for _ in range(n):
        run = next_run()
        if run is None:
            break
        execution.execute(run.signature_id, run.number)
        done.append((run.signature_id, run.number))
    return done
