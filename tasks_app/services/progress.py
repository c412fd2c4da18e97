"""The progress view (CONTRACT.md §5 ``/progress``): steps, substeps, percent and ETA.

A task's steps are the ones it declares; a container's steps are its members. A container's
percent is computed here only (``container_percent``), and the page, the API, the CLI, the chat
and the container's own ``progress`` messages all read it: the mean of its members' percents,
where a member that has ended (completed, skipped *or failed*) counts 100 %, because none of its
work is left; the others count their own stored percent.

The ETA uses, for steps not started, the median duration of that task and step over recent
completed runs; for the running step, the larger of (its median minus elapsed) and the rate
extrapolation ``elapsed × (100 − p) / p``. Without any basis it is ``None``; it is never
negative; it is given in tenths of a second.
"""

from __future__ import annotations

import heapq
import statistics
import time
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..models import TERMINAL, Kind, Run, RunStatus, Signature, Status, Step, StepStatus
from ..registry import get_task
from . import live

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
MEMBER_ENDED = (Status.COMPLETED, Status.SKIPPED, Status.FAILED)


def payload(sig: Signature) -> dict:
    steps = member_steps(sig) if sig.is_container else task_steps(sig)
    stats = _member_stats(sig) if sig.is_container else None
    percent = overall_percent(sig, stats)
    current = next((s for s in steps if s["status"] in CURRENT_STEP), None)
    current = current or next((s for s in steps if s["status"] == StepStatus.PENDING), None)
    total = sum(n for n, _ in stats.values()) if stats is not None else len(steps)
    if current is None and len(steps) < total:
        current = _current_unlisted_member(sig)
    done, failed = _done_and_failed(steps, stats)
    data = {
        "task_id": sig.pk,
        "title": sig.title,
        "status": sig.status,
        "progress": round(percent, 1),
        "current_step": current["order"] if current else total,
        "current_step_name": current["name"] if current else None,
        "total_steps": total,
        "done_steps": done,
        "failed_steps": failed,
        "started_at": sig.started_at,
        "finished_at": sig.finished_at,
        "eta_seconds": eta_seconds(sig, steps, percent),
        "steps": steps,
    }
    return data


def overall_percent(sig: Signature, stats: dict | None = None) -> float:
    """What every view shows: 100 once completed; a container's members' percent, never below
    what was stored (it never goes backwards within an attempt); a task's stored percent."""
    if sig.status == Status.COMPLETED:
        return 100.0
    if sig.is_container:
        return max(sig.progress, container_percent(_member_stats(sig) if stats is None else stats))
    return sig.progress


def member_percent(status: str, percent: float) -> float:
    """A member's share of its container's percent: 100 once it has ended, whatever the outcome."""
    return 100.0 if status in MEMBER_ENDED else float(percent)


def container_percent(stats: dict[str, tuple[int, float]]) -> float:
    """The container's percent from ``{member status: (members, sum of their percents)}``
    (``containers.member_stats``): the mean of ``member_percent`` over its members."""
    members = sum(n for n, _ in stats.values())
    if not members:
        return 0.0
    total = sum(100.0 * n if status in MEMBER_ENDED else percent for status, (n, percent) in stats.items())
    return min(100.0, total / members)


def _member_stats(sig: Signature) -> dict[str, tuple[int, float]]:
    from .containers import member_stats

    return member_stats(sig)


def _done_and_failed(steps: list[dict], stats: dict | None) -> tuple[int, int]:
    """Steps done (a container's members that ended, failed ones too: they count 100 %), and failed."""
    if stats is None:
        done = sum(1 for s in steps if s["status"] in (StepStatus.COMPLETED, StepStatus.SKIPPED))
        return done, sum(1 for s in steps if s["status"] == StepStatus.FAILED)
    return sum(stats.get(status, (0, 0))[0] for status in MEMBER_ENDED), stats.get(Status.FAILED, (0, 0))[0]


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
        ran = m.started_at and m.finished_at
        duration = int((m.finished_at - m.started_at).total_seconds() * 1000) if ran else None
        percent = member_percent(m.status, m.progress)
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


def eta_seconds(sig: Signature, steps: list[dict], percent: float) -> float | None:
    """Seconds left, in tenths (whole seconds were too coarse for short steps: bench/eta.py)."""
    if sig.status in (Status.COMPLETED, Status.FAILED, Status.SKIPPED, Status.INTERRUPTED):
        return 0 if sig.status == Status.COMPLETED else None
    if sig.kind == Kind.TASK:
        estimate = _task_eta(sig, steps, percent)
    else:
        estimate = _container_eta(sig, steps, percent)
    return None if estimate is None else round(max(0.0, estimate), 1)


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
    """The members left, each at its task's median run (the running ones less what they did), laid
    out on the swarm's ``max_concurrency`` slots in the order they start; a chain or graph adds
    them up. Without history for every member left: the container's own rate."""
    ended = (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED)
    remaining = [s for s in steps if s["status"] not in ended]
    if not remaining and len(steps) < MAX_MEMBER_STEPS:
        return 0.0
    medians: dict[str, float | None] = {}
    running, waiting = [], []
    now = timezone.now()
    for step in remaining:
        if step.get("task") and step["task"] not in medians:
            medians[step["task"]] = median_run_seconds(step["task"])
        median = medians.get(step.get("task") or "")
        if median is None:
            return _rate_only(sig, percent)
        if step["status"] == StepStatus.PENDING:
            waiting.append(median)
        else:
            elapsed = (now - step["started_at"]).total_seconds() if step["started_at"] else 0
            running.append(_combine(median, elapsed, step["progress"]) or 0.0)
    waiting += _unlisted_waiting(sig, steps, medians)
    if sig.kind == Kind.SWARM:
        return _makespan(running, waiting, sig.config.get("max_concurrency") or 1)
    return sum(running) + sum(waiting)


def _unlisted_waiting(sig: Signature, steps: list[dict], medians: dict[str, float | None]) -> list[float]:
    """Members past the ``MAX_MEMBER_STEPS`` listed that have not started, at the listed ones' median."""
    if len(steps) < MAX_MEMBER_STEPS or not medians:
        return []
    count = sig.members.filter(position__gte=MAX_MEMBER_STEPS, status__in=(Status.PENDING, Status.QUEUED)).count()
    known = [m for m in medians.values() if m is not None]
    return [statistics.median(known)] * count if known else []


def _makespan(running: list[float], waiting: list[float], width: int) -> float:
    """When the last member ends if each waiting one takes the first free slot (list scheduling)."""
    slots = sorted(running) + [0.0] * max(0, width - len(running))
    heapq.heapify(slots)
    for seconds in waiting:
        heapq.heappush(slots, heapq.heappop(slots) + seconds)
    return max(slots) if slots else 0.0


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


def task_eta(sig: Signature, percent: float) -> float | None:
    """The ETA of a running task, for the live progress messages its worker sends."""
    return eta_seconds(sig, task_steps(sig), percent)


# A container's own progress messages ---------------------------------------------------------

ANNOUNCE_EVERY = 0.5  # seconds between two progress messages of one container from one process
_announced: dict[int, float] = {}


def member_moved(member: Signature) -> None:
    """A member's progress was written, or it ended: after commit, store its container's percent and
    send the container's ``progress`` message, at most every ``ANNOUNCE_EVERY`` s per container
    and process however many members move (a page re-reads the whole view on each)."""
    container_id = member.parent_id
    if container_id is not None and _announce_due(container_id):
        transaction.on_commit(lambda: announce(container_id))


def _announce_due(container_id: int) -> bool:
    now = time.monotonic()
    if now - _announced.get(container_id, -ANNOUNCE_EVERY) < ANNOUNCE_EVERY:
        return False
    if len(_announced) > 10_000:
        _announced.clear()
    _announced[container_id] = now
    return True


def announce(container_id: int) -> None:
    """Send the container's progress (never below what was stored: the stored value only grows),
    then its own container's. An ended container says so with its status message instead."""
    sig = Signature.objects.filter(pk=container_id).first()
    if sig is None or sig.status in TERMINAL:
        return
    data = payload(sig)
    Signature.objects.filter(pk=sig.pk, progress__lt=data["progress"]).update(progress=data["progress"])
    live.progress(sig, percent=data["progress"], current_step=data["current_step"], total_steps=data["total_steps"],
                  eta_seconds=data["eta_seconds"], current_step_name=data["current_step_name"],
                  done_steps=data["done_steps"], failed_steps=data["failed_steps"])
    if sig.parent_id is not None and _announce_due(sig.parent_id):
        announce(sig.parent_id)
