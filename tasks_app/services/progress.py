"""The progress view (CONTRACT.md §5 ``/progress``): steps, substeps, percent and ETA.

A task's steps are the ones it declares; a container's steps are its members. The ETA uses, for
steps not started, the median duration of that task and step over recent completed runs; for the
running step, the larger of (its median minus elapsed) and the rate extrapolation
``elapsed × (100 − p) / p``. Without any basis it is ``None``; it is never negative.
"""

from __future__ import annotations

import statistics
from datetime import datetime

from django.utils import timezone

from ..models import Kind, Run, RunStatus, Signature, Status, Step, StepStatus
from ..registry import get_task

HISTORY = 20
MAX_MEMBER_STEPS = 500
MEMBER_STEP_STATE = {
    Status.PENDING: StepStatus.PENDING,
    Status.QUEUED: StepStatus.PENDING,
    Status.RUNNING: StepStatus.RUNNING,
    Status.PAUSED: StepStatus.PAUSED,
    Status.WAITING_APPROVAL: StepStatus.APPROVAL,
    Status.COMPLETED: StepStatus.COMPLETED,
    Status.FAILED: StepStatus.FAILED,
    Status.INTERRUPTED: StepStatus.PAUSED,
    Status.SKIPPED: StepStatus.SKIPPED,
}
CURRENT_STEP = (StepStatus.RUNNING, StepStatus.APPROVAL, StepStatus.PAUSED)
MEMBER_UNDER_WAY = [status for status, step in MEMBER_STEP_STATE.items() if step in CURRENT_STEP]


def payload(sig: Signature) -> dict:
    steps = member_steps(sig) if sig.is_container else task_steps(sig)
    percent = overall_percent(sig, steps)
    current = next((s for s in steps if s["status"] in CURRENT_STEP), None)
    current = current or next((s for s in steps if s["status"] == StepStatus.PENDING), None)
    total = sig.members.count() if sig.is_container else len(steps)
    if current is None and len(steps) < total:
        current = _current_unlisted_member(sig)
    data = {
        "task_id": sig.pk,
        "title": sig.title,
        "status": sig.status,
        "progress": round(percent, 1),
        "current_step": current["order"] if current else total,
        "current_step_name": current["name"] if current else None,
        "total_steps": total,
        "started_at": sig.started_at,
        "finished_at": sig.finished_at,
        "eta_seconds": eta_seconds(sig, steps, percent),
        "steps": steps,
    }
    return data


def overall_percent(sig: Signature, steps: list[dict]) -> float:
    if sig.status == Status.COMPLETED:
        return 100.0
    if sig.is_container and steps:
        from .containers import roll_up

        return max(sig.progress, roll_up(sig))
    return sig.progress


def task_steps(sig: Signature) -> list[dict]:
    rows = list(sig.steps.all())
    if not rows:
        taskdef = get_task(sig.task_name)
        names = taskdef.steps if taskdef else ()
        return [_step(i + 1, name, StepStatus.PENDING, 0, None, []) for i, name in enumerate(names)]
    return [
        _step(s.order, s.name, s.status, 100 if s.status == StepStatus.COMPLETED else s.progress, s.duration_ms,
              s.substeps, started_at=s.started_at)
        for s in rows
    ]


def member_steps(sig: Signature) -> list[dict]:
    members = sig.members.order_by("position").only(
        "pk", "parent", "position", "name", "task_name", "kind", "node_key", "status", "progress", "started_at",
        "finished_at",
    )[:MAX_MEMBER_STEPS]
    steps = []
    for m in members:
        duration = int((m.finished_at - m.started_at).total_seconds() * 1000) if m.started_at and m.finished_at else None
        percent = 100 if m.status in (Status.COMPLETED, Status.SKIPPED) else m.progress
        step = _step(m.position + 1, m.node_key or m.title, MEMBER_STEP_STATE[m.status], percent, duration, [],
                     started_at=m.started_at)
        step.update(task_id=m.pk, kind=m.kind, task=m.task_name, member_status=m.status)
        steps.append(step)
    return steps


def _current_unlisted_member(sig: Signature) -> dict | None:
    """The current member past the ``MAX_MEMBER_STEPS`` listed (none of which is current): the
    first one under way, else the first yet to run; None when every member has ended."""
    members = sig.members.filter(position__gte=MAX_MEMBER_STEPS).order_by("position").only(
        "pk", "position", "name", "task_name", "kind", "node_key")
    for statuses in (MEMBER_UNDER_WAY, [Status.PENDING, Status.QUEUED]):
        member = members.filter(status__in=statuses).first()
        if member is not None:
            return {"order": member.position + 1, "name": member.node_key or member.title}
    return None


def _step(order: int, name: str, status: str, percent: float, duration_ms: int | None, substeps: list,
          started_at: datetime | None = None) -> dict:
    return {
        "order": order,
        "name": name,
        "status": status,
        "progress": round(percent, 1),
        "duration_ms": duration_ms,
        "started_at": started_at,
        "substeps": [{"name": s["name"], "done": bool(s["done"])} for s in substeps],
    }


# ETA ------------------------------------------------------------------------------------------


def eta_seconds(sig: Signature, steps: list[dict], percent: float) -> int | None:
    if sig.status in (Status.COMPLETED, Status.FAILED, Status.SKIPPED, Status.INTERRUPTED):
        return 0 if sig.status == Status.COMPLETED else None
    if sig.kind == Kind.TASK:
        estimate = _task_eta(sig, steps, percent)
    else:
        estimate = _container_eta(sig, steps, percent)
    return None if estimate is None else max(0, round(estimate))


def _task_eta(sig: Signature, steps: list[dict], percent: float) -> float | None:
    now = timezone.now()
    if not steps:
        median = median_run_seconds(sig.task_name)
        elapsed = (now - sig.started_at).total_seconds() if sig.started_at and sig.status == Status.RUNNING else 0
        return _combine(median, elapsed, percent)
    medians = {step["name"]: median_step_seconds(sig.task_name, step["name"]) for step in steps}
    pace = _pace(steps, medians)
    total = 0.0
    for step in steps:
        if step["status"] in (StepStatus.COMPLETED, StepStatus.SKIPPED):
            continue
        median = medians[step["name"]] * pace if medians[step["name"]] is not None else None
        if step["status"] == StepStatus.PENDING:
            estimate = median
        else:
            elapsed = (now - step["started_at"]).total_seconds() if step["started_at"] else 0
            estimate = _combine(median, elapsed, step["progress"])
        if estimate is None:
            return _rate_only(sig, percent)
        total += estimate
    return total


def _pace(steps: list[dict], medians: dict[str, float | None]) -> float:
    """How much slower (>1) or faster (<1) this run is than history, from the steps it finished;
    a run with bigger inputs than usual then gets proportionally longer estimates."""
    actual = expected = 0.0
    for step in steps:
        if step["status"] == StepStatus.COMPLETED and step["duration_ms"] and medians.get(step["name"]):
            actual += step["duration_ms"] / 1000
            expected += medians[step["name"]]
    return min(5.0, max(0.2, actual / expected)) if expected > 0 else 1.0


def _combine(median: float | None, elapsed: float, percent: float) -> float | None:
    """The larger of (median − elapsed) and the rate extrapolation; whichever exists."""
    rate = elapsed * (100 - percent) / percent if percent > 0 and elapsed > 0 else None
    from_history = max(0.0, median - elapsed) if median is not None else None
    candidates = [c for c in (rate, from_history) if c is not None]
    return max(candidates) if candidates else None


def _rate_only(sig: Signature, percent: float) -> float | None:
    if not sig.started_at or percent <= 0:
        return None
    elapsed = (timezone.now() - sig.started_at).total_seconds()
    return elapsed * (100 - percent) / percent


def _container_eta(sig: Signature, steps: list[dict], percent: float) -> float | None:
    """Remaining members' medians, spread over the swarm's parallelism; else the container's rate."""
    remaining = [s for s in steps if s["status"] not in (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED)]
    if not remaining:
        return 0.0
    estimates = []
    for step in remaining:
        median = median_run_seconds(step["task"]) if step.get("task") else None
        if median is None:
            return _rate_only(sig, percent)
        elapsed = (timezone.now() - step["started_at"]).total_seconds() if step["started_at"] else 0
        estimates.append(_combine(median, elapsed, step["progress"]) if step["status"] != StepStatus.PENDING else median)
    if sig.kind == Kind.SWARM:
        width = max(1, min(sig.config.get("max_concurrency", 1), len(estimates)))
        return max(max(estimates), sum(estimates) / width)
    return sum(estimates)


def median_run_seconds(task_name: str) -> float | None:
    rows = (
        Run.objects.filter(signature__task_name=task_name, status=RunStatus.COMPLETED, started_at__isnull=False)
        .order_by("-finished_at")
        .values_list("started_at", "finished_at")[:HISTORY]
    )
    return _median([(end - start).total_seconds() for start, end in rows])


def median_step_seconds(task_name: str, step_name: str) -> float | None:
    rows = (
        Step.objects.filter(signature__task_name=task_name, name=step_name, status=StepStatus.COMPLETED,
                            started_at__isnull=False, finished_at__isnull=False)
        .order_by("-finished_at")
        .values_list("started_at", "finished_at")[:HISTORY]
    )
    return _median([(end - start).total_seconds() for start, end in rows])


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def task_eta(sig: Signature, percent: float) -> int | None:
    """The ETA of a running task, for the live progress messages its worker sends."""
    return eta_seconds(sig, task_steps(sig), percent)
