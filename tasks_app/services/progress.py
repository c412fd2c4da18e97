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
import math
import statistics
import time
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..models import TERMINAL, Kind, Run, RunStatus, Signature, Status, Step, StepStatus
from ..registry import get_task
from . import live

HISTORY = 20
HISTORY_STEP_ROWS = 2000  # completed steps read for the step medians (a run of 100 steps: 20 runs)
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
    runs, gap = _recent_step_durations(sig)
    expected = _expected_steps(steps, runs)
    total = 0.0
    for step in steps:
        if step["status"] in (StepStatus.COMPLETED, StepStatus.SKIPPED):
            continue
        total += gap  # the hand-over after the step (to the next one, or the run's end)
        median = expected.get(step["name"])
        if step["status"] == StepStatus.PENDING:
            estimate = median
        else:
            elapsed = (now - step["started_at"]).total_seconds() if step["started_at"] else 0
            estimate = _combine(median, elapsed, step["progress"])
        if estimate is None:
            return _rate_only(sig, percent)
        total += estimate
    return total


def _expected_steps(steps: list[dict], runs: list[dict[str, float]]) -> dict[str, float]:
    """Each step's expected seconds in this run: its median over recent runs, moved by how this run's
    last finished step compared with its own median, as far as that carried over in history.

    In log terms, ``r`` = log(actual / median). From the recent runs, the slope of a later step's
    ``r`` on the last finished step's ``r`` (least squares, kept only where it stands out from its
    noise) says how much of a deviation carries over: nothing for independent steps (a slow step
    says nothing of the next), all of it when runs differ in size, more than all of it when a run
    slows down as it goes. Without spread in history, it carries over whole."""
    medians = {name: statistics.median(d) for name, d in _by_name(runs).items()}
    done = [s for s in steps if s["status"] == StepStatus.COMPLETED and s["duration_ms"] and medians.get(s["name"])]
    if not done:
        return medians
    last = done[-1]["name"]
    deviation = math.log(done[-1]["duration_ms"] / 1000 / medians[last])
    expected = {}
    for name, median in medians.items():
        pairs = [(math.log(run[last] / medians[last]), math.log(run[name] / median))
                 for run in runs if run.get(last) and run.get(name)]
        expected[name] = median * min(5.0, max(0.2, math.exp(_carry_over(pairs) * deviation)))
    return expected


def _carry_over(pairs: list[tuple[float, float]]) -> float:
    """The slope through the origin of ``later`` on ``last``, shrunk towards 0 by its own noise."""
    spread = sum(x * x for x, _ in pairs)
    if spread < 1e-6:
        return 1.0
    slope = sum(x * y for x, y in pairs) / spread
    noise = sum((y - slope * x) ** 2 for x, y in pairs) / max(1, len(pairs) - 1) / spread
    return slope * max(0.0, 1 - noise / slope**2) if slope else 0.0


def _recent_step_durations(sig: Signature) -> tuple[list[dict[str, float]], float]:
    """Seconds per completed step of the task's last ``HISTORY`` other runs, one dict per run; and
    the median time per step outside the steps (between them and after the last: writing the
    step, the result, the run's end), which the steps' own durations leave out."""
    rows = (
        Step.objects.filter(signature__task_name=sig.task_name, status=StepStatus.COMPLETED,
                            started_at__isnull=False, finished_at__isnull=False)
        .exclude(signature_id=sig.pk)
        .order_by("-signature_id")
        .values_list("signature_id", "name", "started_at", "finished_at", "signature__finished_at")[:HISTORY_STEP_ROWS]
    )
    runs: dict[int, dict[str, float]] = {}
    spans: dict[int, list] = {}
    for signature_id, name, started, finished, run_end in rows:
        if signature_id in runs or len(runs) < HISTORY:
            runs.setdefault(signature_id, {})[name] = max(0.001, (finished - started).total_seconds())
            first, _ = spans.get(signature_id, (started, run_end))
            spans[signature_id] = (min(first, started), run_end)
    gaps = [((end - first).total_seconds() - sum(runs[pk].values())) / len(runs[pk])
            for pk, (first, end) in spans.items() if end is not None]
    return list(runs.values()), max(0.0, _median(gaps) or 0.0)


def _by_name(runs: list[dict[str, float]]) -> dict[str, list[float]]:
    durations: dict[str, list[float]] = {}
    for run in runs:
        for name, seconds in run.items():
            durations.setdefault(name, []).append(seconds)
    return durations


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
    """The members left, laid out on the swarm's ``max_concurrency`` slots in the order they start
    (a chain or graph adds them up): a running one its task's median run less what it did, a
    waiting one its task's median turnaround (queued to finished). Without history for every
    member left: the container's own rate."""
    ended = (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED)
    remaining = [s for s in steps if s["status"] not in ended]
    if not remaining and len(steps) < MAX_MEMBER_STEPS:
        return 0.0
    medians: dict[str, tuple[float | None, float | None]] = {}
    running, waiting = [], []
    now = timezone.now()
    for step in remaining:
        if step.get("task") and step["task"] not in medians:
            medians[step["task"]] = (median_run_seconds(step["task"]), median_turnaround_seconds(step["task"]))
        median, turnaround = medians.get(step.get("task") or "", (None, None))
        if median is None:
            return _rate_only(sig, percent)
        if step["status"] == StepStatus.PENDING:
            waiting.append(turnaround or median)
        else:
            elapsed = (now - step["started_at"]).total_seconds() if step["started_at"] else 0
            running.append(_combine(median, elapsed, step["progress"]) or 0.0)
    waiting += _unlisted_waiting(sig, steps, [turnaround or median for median, turnaround in medians.values()])
    if sig.kind == Kind.SWARM:
        return _makespan(running, waiting, sig.config.get("max_concurrency") or 1)
    return sum(running) + sum(waiting)


def _unlisted_waiting(sig: Signature, steps: list[dict], known: list[float | None]) -> list[float]:
    """Members past the ``MAX_MEMBER_STEPS`` listed that have not started, at the listed ones' median."""
    known = [m for m in known if m is not None]
    if len(steps) < MAX_MEMBER_STEPS or not known:
        return []
    count = sig.members.filter(position__gte=MAX_MEMBER_STEPS, status__in=(Status.PENDING, Status.QUEUED)).count()
    return [statistics.median(known)] * count


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


def median_turnaround_seconds(task_name: str) -> float | None:
    """From queued to finished, of recent runs of members: what a member waiting for a slot costs,
    the hand-over to a worker included (a tenth of a second or more a member on a busy host)."""
    rows = (
        Run.objects.filter(signature__task_name=task_name, signature__parent__isnull=False, status=RunStatus.COMPLETED,
                           finished_at__isnull=False)
        .order_by("-finished_at")
        .values_list("queued_at", "finished_at")[:HISTORY]
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
