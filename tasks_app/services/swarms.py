"""Swarms: members in parallel under ``max_concurrency``, late and bulk adds, per-member callbacks.

Slots are counted from the members' statuses under the swarm's row lock, so the limit holds across
any number of workers. Members start by priority (high, medium, low), then in the order added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from ..models import CallbackOn, Signature, Status
from . import bulk, events, execution, specs
from .errors import InvalidTransition, SpecError

# Members holding a slot: a paused or waiting member keeps its place so the limit holds on resume.
HOLDING = (Status.QUEUED, Status.RUNNING, Status.WAITING_APPROVAL, Status.PAUSED)
FINISHED = (Status.COMPLETED, Status.FAILED, Status.SKIPPED)


def _counts(swarm: Signature) -> dict[str, int]:
    """What ``advance`` decides on, read from the members' (parent, status) index without visiting
    every member: those holding a slot counted (at most the limit, plus the paused), failures counted
    up to ``stop_after_n_failures``, pending and interrupted members only as present (1) or not. A
    count of every status per member end made a swarm of 10,000 quadratic."""
    members = swarm.members
    rows = members.filter(status__in=HOLDING).values("status").annotate(n=Count("id")).order_by()
    counts = {row["status"]: row["n"] for row in rows}
    for status in (Status.PENDING, Status.INTERRUPTED):
        if members.filter(status=status).exists():
            counts[status] = 1
    limit = swarm.config.get("stop_after_n_failures")
    if limit:
        counts[Status.FAILED] = members.filter(status=Status.FAILED)[:limit].count()
    return counts


def advance(swarm: Signature, stats: dict | None = None) -> None:
    config = swarm.config
    counts = _counts(swarm) if stats is None else {status: n for status, (n, _) in stats.items()}
    limit = config.get("stop_after_n_failures")
    if limit and counts.get(Status.FAILED, 0) >= limit and not config.get("stopped"):
        _stop(swarm, counts)
        config, counts = swarm.config, _counts(swarm)
    holding = sum(counts.get(s, 0) for s in HOLDING)
    pending = counts.get(Status.PENDING, 0)
    if not config.get("stopped") and pending and holding < config["max_concurrency"]:
        due = swarm.members.filter(status=Status.PENDING).order_by("priority_rank", "position")
        for member in due[: config["max_concurrency"] - holding]:
            execution.start(member, inbound=swarm.inbound or None)
        return
    unfinished = sum(n for status, n in counts.items() if status not in FINISHED)
    if unfinished or not (config.get("closed") or config.get("stopped")):
        return
    if config.get("stopped"):
        failed = swarm.members.filter(status=Status.FAILED).count()
        error = {"type": "SwarmFailed", "message": f"{failed} members failed (stop_after_n_failures={limit})",
                 "traceback": "", "task_id": swarm.pk}
        execution.finish(swarm, Status.FAILED, error=error)
    else:
        execution.finish(swarm, Status.COMPLETED, result=results(swarm))


def results(swarm: Signature) -> list[Any]:
    """Members' results in the order added; null for members that did not complete."""
    rows = swarm.members.order_by("position").values_list("status", "result")
    return [result if status == Status.COMPLETED else None for status, result in rows]


def _stop(swarm: Signature, counts: dict[str, int]) -> None:
    """The Nth failure: start nothing more; members not started become skipped."""
    skipped = swarm.members.filter(status=Status.PENDING).update(status=Status.SKIPPED, finished_at=timezone.now())
    swarm.config = {**swarm.config, "stopped": True}
    Signature.objects.filter(pk=swarm.pk).update(config=swarm.config)
    failed = swarm.members.filter(status=Status.FAILED).count()
    events.record(swarm, "stopped_after_failures", failed=failed, skipped=skipped)


def on_member_finished(swarm: Signature, member: Signature) -> None:
    """Fire the swarm's per-member callbacks for this member, once: its success or error ones, and
    the finish ones (``task_on_finish``) whatever the outcome."""
    if member.status == Status.COMPLETED:
        on, key, inbound = CallbackOn.TASK_SUCCESS, "task_on_success", {"input": member.result}
    elif member.status == Status.FAILED:
        on, key, inbound = CallbackOn.TASK_ERROR, "task_on_error", {"error": member.error}
    else:
        return
    _fire_per_member(swarm, member, on, swarm.config.get(key) or [], inbound)
    _fire_per_member(swarm, member, CallbackOn.TASK_FINISH, swarm.config.get("task_on_finish") or [], inbound)


def _fire_per_member(swarm: Signature, member: Signature, on: str, templates: list[dict], inbound: dict) -> None:
    """Build and start one callback per template; none when this member already fired these (the
    swarm's row is locked, so a second end of the member sees the first one's rows)."""
    if not templates or Signature.objects.filter(callback_of=swarm, trigger=member, callback_on=on).exists():
        return
    for spec in templates:
        callback = specs.build_callback(spec, of=swarm, on=on, trigger=member)
        if swarm.status == Status.PAUSED:  # held with the rest of the paused swarm; resume queues it
            Signature.objects.filter(pk=callback.pk).update(status=Status.PAUSED, inbound=inbound)
            continue
        execution.start(callback, inbound=inbound)


# Adding members -------------------------------------------------------------------------------


@dataclass
class AddResult:
    added: list[Signature] = field(default_factory=list)
    rejected: dict[int, dict[str, str]] = field(default_factory=dict)


@bulk.collector_paused()
def add_tasks(swarm: Signature, raw_specs: list, *, run: bool = True, atomic: bool = True,
              batch_size: int = 1000, actor: str = "system") -> AddResult:
    """Validate every spec first, then add them in bulk; atomic unless ``atomic=False``."""
    valid, rejected = specs.validate_many(raw_specs, inherited=swarm.kwargs, owner=swarm.owner,
                                          expanded=_callback_bytes(swarm) * _count(raw_specs))
    if atomic and rejected:
        raise SpecError({path: problem for errors in rejected.values() for path, problem in errors.items()})
    with transaction.atomic():
        swarm = Signature.objects.locked().get(pk=swarm.pk)
        _check_open(swarm)
        position = swarm.members.count()
        max_tasks = swarm.config.get("max_tasks")
        if max_tasks is not None and position + len(valid) > max_tasks:
            room = max(0, max_tasks - position)
            if atomic:
                raise InvalidTransition(f"adding {len(valid)} tasks would exceed max_tasks={max_tasks} ({room} left)")
            for spec in valid[room:]:
                rejected[spec["_index"]] = {f"tasks[{spec['_index']}]": f"max_tasks={max_tasks} reached"}
            valid = valid[:room]
        rows = specs.add_members(swarm, [("", s) for s in valid], root_id=swarm.root_id_or_self, start=position,
                                 batch_size=batch_size)
        if max_tasks is not None and position + len(rows) >= max_tasks:
            _set_closed(swarm)
        events.record(swarm, "members_added", actor=actor, count=len(rows), rejected=len(rejected))
        if run and swarm.status == Status.PENDING and swarm.parent_id is None and swarm.callback_of_id is None:
            execution.start(swarm, actor=actor)
        else:
            from . import containers

            containers.advance(swarm)
    return AddResult(added=rows, rejected=rejected)


def _callback_bytes(swarm: Signature) -> int:
    """An upper bound of what one member's end stores through the per-member callback templates
    (each callback row keeps its kwargs and its spec)."""
    templates = {key: swarm.config.get(key) for key in ("task_on_success", "task_on_error", "task_on_finish")}
    size = {key: len(json.dumps(t, default=str)) if t else 0 for key, t in templates.items()}
    return 2 * (max(size["task_on_success"], size["task_on_error"]) + size["task_on_finish"])


def _count(raw_specs: Any) -> int:
    return len(raw_specs) if isinstance(raw_specs, list) else 0


def close(swarm: Signature, *, actor: str = "system") -> Signature:
    """No more members; the swarm completes when the ones it has are done."""
    with transaction.atomic():
        swarm = Signature.objects.locked().get(pk=swarm.pk)
        _check_open(swarm)
        _set_closed(swarm)
        events.record(swarm, "closed", actor=actor)
        from . import containers

        containers.advance(swarm)
    return swarm


def _check_open(swarm: Signature) -> None:
    if swarm.kind != "swarm":
        raise InvalidTransition("only a swarm takes new members")
    if swarm.config.get("closed"):
        raise InvalidTransition("the swarm is closed; it takes no new members")
    if swarm.is_terminal:
        raise InvalidTransition(f"the swarm is {swarm.status}; it takes no new members")


def _set_closed(swarm: Signature) -> None:
    swarm.config = {**swarm.config, "closed": True}
    Signature.objects.filter(pk=swarm.pk).update(config=swarm.config)

