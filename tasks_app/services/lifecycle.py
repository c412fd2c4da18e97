"""Pause, resume, interrupt, cancel, retry, rerun and priority: one service each.

Every action applies to the target and all its descendants. Each is one transaction of guarded
updates; jobs are dropped and work horses stopped after commit.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from rq.command import send_stop_job_command

from ..models import (
    CONTAINERS,
    Event,
    Kind,
    LogEntry,
    Priority,
    Run,
    RunStatus,
    Signature,
    Status,
    Step,
    StepStatus,
)
from . import containers, events, execution, specs, transport, tree
from .errors import InvalidTransition, SpecError

STARTABLE = (Status.PENDING,)
PAUSABLE = (Status.PENDING, Status.QUEUED, Status.RUNNING, Status.WAITING_APPROVAL)
INTERRUPTIBLE = (Status.PENDING, Status.QUEUED, Status.RUNNING, Status.PAUSED, Status.WAITING_APPROVAL)
RESUMABLE = (Status.PAUSED, Status.INTERRUPTED)
RETRYABLE = (Status.FAILED, Status.INTERRUPTED)
RERUNNABLE = (Status.COMPLETED, Status.FAILED, Status.INTERRUPTED, Status.SKIPPED)


def _require(sig: Signature, allowed, action: str) -> None:
    if sig.status not in allowed:
        raise InvalidTransition(f"cannot {action} a {sig.status} signature (allowed when {', '.join(allowed)})")


def _lock(sig: Signature) -> Signature:
    return Signature.objects.select_for_update().get(pk=sig.pk)


# Start ----------------------------------------------------------------------------------------


@execution.retry_on_conflict
def start(sig: Signature, *, actor: str = "system") -> Signature:
    """Start a stored top-level signature (created with ``run: false``)."""
    with transaction.atomic():
        sig = _lock(sig)
        _require(sig, STARTABLE, "start")
        if sig.parent_id is not None or sig.callback_of_id is not None:
            raise InvalidTransition("members and callbacks start when their workflow reaches them")
        execution.start(sig, actor=actor)
    sig.refresh_from_db()
    return sig


# Pause and resume ------------------------------------------------------------------------------


@execution.retry_on_conflict
def pause(sig: Signature, *, actor: str = "system") -> Signature:
    """Hold queued work now, stop running work at its next checkpoint; containers start nothing new."""
    with transaction.atomic():
        sig = _lock(sig)
        _require(sig, PAUSABLE, "pause")
        # A member's end locks its container first: holding the containers makes it wait and then see
        # the pause, instead of queueing work (a callback, the next member) that this pause misses.
        list(tree.subtree(sig).filter(kind__in=CONTAINERS).select_for_update().values_list("pk", flat=True))
        nodes = tree.subtree(sig).filter(status__in=(Status.QUEUED, Status.RUNNING, Status.WAITING_APPROVAL))
        ids = list(nodes.values_list("pk", flat=True)) + ([sig.pk] if sig.status == Status.PENDING else [])
        Signature.objects.filter(pk__in=ids).update(status=Status.PAUSED, updated_at=timezone.now())
        for run in Run.objects.filter(signature_id__in=ids, status=RunStatus.QUEUED):
            Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(status=RunStatus.PAUSED)
            transport.cancel_job(run)
        events.record(sig, "paused", actor=actor, affected=len(ids))
    sig.refresh_from_db()
    return sig


@execution.retry_on_conflict
def resume(sig: Signature, *, actor: str = "system") -> Signature:
    """Continue paused or interrupted work: tasks re-queue from their checkpoint, containers refill."""
    with transaction.atomic():
        sig = _lock(sig)
        _require(sig, RESUMABLE, "resume")
        nodes = list(tree.subtree(sig).filter(status__in=RESUMABLE).order_by("pk"))
        for node in nodes:
            _resume_node(node, actor)
        events.record(sig, "resumed", actor=actor, affected=len(nodes))
        for node in sorted((n for n in nodes if n.kind in CONTAINERS), key=lambda n: -n.pk):
            node.refresh_from_db()
            containers.advance(node)
    sig.refresh_from_db()
    return sig


def _resume_node(node: Signature, actor: str) -> None:
    if node.kind in CONTAINERS:
        Signature.objects.filter(pk=node.pk, status__in=RESUMABLE).update(status=Status.RUNNING, finished_at=None)
        return
    if node.status == Status.PAUSED and node.runs.filter(status=RunStatus.RUNNING).exists():
        # The run has not reached a checkpoint yet: it simply carries on.
        Signature.objects.filter(pk=node.pk, status=Status.PAUSED).update(status=Status.RUNNING)
        return
    execution.queue_run(node, allowed=RESUMABLE, attempt=max(node.attempts, 1), actor=actor, event="requeued")


# Interrupt and cancel --------------------------------------------------------------------------


@execution.retry_on_conflict
def interrupt(sig: Signature, *, actor: str = "system") -> Signature:
    """Stop hard: kill running work horses, drop queued jobs; no callback fires, nothing is deleted."""
    with transaction.atomic():
        sig = _lock(sig)
        _require(sig, INTERRUPTIBLE, "interrupt")
        count = _interrupt_tree(sig)
        events.record(sig, "interrupted", actor=actor, affected=count)
    sig.refresh_from_db()
    return sig


def _interrupt_tree(sig: Signature) -> int:
    active = (Status.QUEUED, Status.RUNNING, Status.PAUSED, Status.WAITING_APPROVAL)
    ids = list(tree.subtree(sig).filter(status__in=active).values_list("pk", flat=True))
    if sig.status == Status.PENDING:
        ids.append(sig.pk)
    now = timezone.now()
    Signature.objects.filter(pk__in=ids).update(status=Status.INTERRUPTED, updated_at=now)
    for run in Run.objects.filter(signature_id__in=ids, status__in=(RunStatus.QUEUED, RunStatus.RUNNING)):
        Run.objects.filter(pk=run.pk).update(status=RunStatus.INTERRUPTED, finished_at=now)
        if run.status == RunStatus.RUNNING:
            stop_horse(run)
        else:
            transport.cancel_job(run)
    return len(ids)


def stop_horse(run: Run) -> None:
    """Kill the work horse running this run, after commit (RQ's stop-job command)."""

    def send() -> None:
        try:
            send_stop_job_command(transport.connection(run.queue), transport.job_id(run))
        except Exception:  # the job already ended or its worker is gone; the run guard drops its result
            pass

    transaction.on_commit(send)


@execution.retry_on_conflict
def cancel(sig: Signature, *, confirm: bool, actor: str = "system") -> Event:
    """Stop everything, then delete the whole tree; only an audit Event remains."""
    if confirm is not True:
        raise SpecError({"confirm": "cancel deletes the signature and everything below it; send confirm=true"})
    with transaction.atomic():
        sig = _lock(sig)
        parent_id = sig.parent_id
        _interrupt_tree(sig)
        ids = tree.descendant_ids(sig)
        deleted = _delete_rows(ids)
        audit = Event.objects.create(
            signature=None, signature_ref=sig.pk, root_ref=sig.root_id_or_self, owner_id=sig.owner_id,
            type="cancelled", actor=actor,
            data={"title": sig.title, "kind": sig.kind, "task": sig.task_name, "deleted": deleted},
        )
        if parent_id is not None:
            containers.advance(_lock(Signature(pk=parent_id)))
    return audit


def _delete_rows(ids: list[int]) -> dict[str, int]:
    counts = {
        "logs": LogEntry.objects.filter(signature_id__in=ids).delete()[0],
        "steps": Step.objects.filter(signature_id__in=ids).delete()[0],
        "runs": Run.objects.filter(signature_id__in=ids).delete()[0],
        "events": Event.objects.filter(signature_id__in=ids).delete()[0],
    }
    # Approvals and notifications about these signatures go with them (CASCADE) and are counted.
    for label, n in Signature.objects.filter(pk__in=ids).delete()[1].items():
        counts[label.split(".")[-1].lower() + "s" if label != "tasks_app.Signature" else "signatures"] = n
    return counts


# Retry, rerun and priority ---------------------------------------------------------------------


@execution.retry_on_conflict
def retry(sig: Signature, *, kwargs: dict | None = None, from_start: bool = False,
          actor: str = "system") -> Signature:
    """Run a failed or interrupted task again; on a container, only its failed members.

    A task resumes from its failed step, keeping its completed steps and its last checkpoint, unless
    ``from_start``; ``kwargs`` replaces a task's arguments (validated first: nothing changes on a 400)."""
    with transaction.atomic():
        sig = _lock(sig)
        _require(sig, RETRYABLE, "retry")
        changed = {} if kwargs is None else _replace_kwargs(sig, kwargs)
        _retry_node(sig, actor, from_start=from_start)
        events.record(sig, "retried", actor=actor, from_start=from_start, **changed)
        if sig.kind in CONTAINERS:
            sig.refresh_from_db()
            containers.advance(sig)
    sig.refresh_from_db()
    return sig


def _replace_kwargs(sig: Signature, kwargs: Any) -> dict:
    """Validate new arguments as a submitted spec's are, then store them; the old and new ones for the event."""
    if sig.kind != Kind.TASK:
        raise SpecError({"kwargs": f"only a task's arguments can be replaced; this is a {sig.kind} (retry a member)"})
    if not isinstance(kwargs, dict):
        raise SpecError({"kwargs": "must be a JSON object of the task's arguments"})
    checked = specs.validate({"task": sig.task_name, "kwargs": kwargs})["kwargs"]
    old = sig.kwargs
    Signature.objects.filter(pk=sig.pk).update(kwargs=checked, spec={**(sig.spec or {}), "kwargs": checked})
    sig.kwargs = checked
    return {"old_kwargs": old, "new_kwargs": checked}


def _retry_node(node: Signature, actor: str, *, from_start: bool = False) -> None:
    if node.kind == Kind.TASK:
        (_reset_task if from_start else _reopen_task)(node)
        execution.queue_run(node, allowed=RETRYABLE, attempt=node.attempts + 1, actor=actor, event="retry_queued")
        return
    Signature.objects.filter(pk=node.pk).update(status=Status.RUNNING, error=None, finished_at=None)
    node.callbacks.filter(status=Status.SKIPPED).update(status=Status.PENDING, finished_at=None)
    config = {k: v for k, v in node.config.items() if k != "stopped"}
    failed = list(node.members.filter(status__in=RETRYABLE))
    if node.kind == Kind.GRAPH:
        config["edge_states"] = _graph_states_without(node, {m.node_key for m in failed})
    Signature.objects.filter(pk=node.pk).update(config=config)
    _unskip(node.members.filter(status=Status.SKIPPED))
    for member in failed:
        _retry_node(member, actor, from_start=from_start)
        if member.kind in CONTAINERS:
            member.refresh_from_db()
            containers.advance(member)


def _unskip(members) -> None:
    """Members skipped as a consequence of a failure wait again (with what was below them); members a
    person skipped (``skip``) stay skipped."""
    for member in members.exclude(config__has_key=SKIP_MARK):
        Signature.objects.filter(pk__in=tree.descendant_ids(member), status=Status.SKIPPED).update(
            status=Status.PENDING, finished_at=None
        )


def _graph_states_without(graph: Signature, sources: set[str]) -> dict:
    """Forget edge states from the retried nodes and from every node skipped as a branch not taken
    (they resolve again); a node a person skipped keeps the edges its substitute result decided."""
    skipped = set(
        graph.members.filter(status=Status.SKIPPED).exclude(config__has_key=SKIP_MARK)
        .values_list("node_key", flat=True)
    )
    edges = graph.config.get("edges", [])
    return {
        i: taken for i, taken in graph.config.get("edge_states", {}).items()
        if edges[int(i)]["from"] not in sources | skipped
    }


def _reset_task(node: Signature) -> None:
    node.steps.all().delete()
    Signature.objects.filter(pk=node.pk).update(progress=0, checkpoint=None, result=None, finished_at=None)


def _reopen_task(node: Signature) -> None:
    """Keep completed steps and the checkpoint: the failed step runs again (its done substeps stay done)."""
    node.steps.filter(status=StepStatus.FAILED).update(status=StepStatus.PENDING, finished_at=None)
    Signature.objects.filter(pk=node.pk).update(result=None, finished_at=None)


# Skip -------------------------------------------------------------------------------------------

SKIP_MARK = "skipped_with_result"  # in a member's config: a person skipped it; it counts as having returned


def skip_refusal(sig: Signature) -> str | None:
    """Why ``skip`` is refused for this signature, or None when it is allowed.

    The one rule the API, the page, the admin, the CLI and the chat share: a failed task with a
    failed step (not a member), or a failed member of a top-level chain or graph whose failure no
    failure edge has handled."""
    if sig.status != Status.FAILED:
        return f"only a failed signature can be skipped; this one is {sig.status}"
    if sig.parent_id is None:
        if sig.kind == Kind.TASK and sig.steps.filter(status=StepStatus.FAILED).exists():
            return None
        return "it has no failed step to skip (a failed member of a chain or graph is skipped as a whole)"
    container = Signature.objects.only("kind", "status", "parent_id", "config").get(pk=sig.parent_id)
    if container.kind not in (Kind.CHAIN, Kind.GRAPH):
        return f"a member of a {container.kind} cannot be skipped (a swarm goes on without its failed members)"
    if container.parent_id is not None:
        return f"its {container.kind} is itself a member of a workflow; retry or rerun the workflow instead"
    if container.status not in (Status.FAILED, Status.RUNNING, Status.PAUSED):
        return f"its {container.kind} is {container.status}"
    if container.kind == Kind.GRAPH and _failure_handled(container, sig.node_key):
        return "a failure edge has already handled its failure"
    return None


def can_skip(sig: Signature) -> bool:
    return skip_refusal(sig) is None


def _failure_handled(graph: Signature, key: str) -> bool:
    edges, states = graph.config.get("edges", []), graph.config.get("edge_states", {})
    return any(states.get(str(i)) for i, edge in enumerate(edges) if edge["from"] == key)


@execution.retry_on_conflict
def skip(sig: Signature, *, result: Any = None, actor: str = "system") -> Signature:
    """Go on past a failure: a task's failed step becomes skipped and the task runs on from the next
    step; a failed member of a chain or graph becomes skipped and its container goes on as if it had
    returned ``result``."""
    from . import graphs

    problem = execution.result_problem(result)
    if problem:
        raise SpecError({"result": problem})
    decided = graphs.decide_outgoing(sig, result)  # edge conditions are user input: evaluated before any lock
    with transaction.atomic():
        if sig.parent_id is not None:
            execution.lock_parent(sig)  # the container first, as a member's end takes them
        sig = _lock(sig)
        problem = skip_refusal(sig)
        if problem:
            raise InvalidTransition(f"cannot skip #{sig.pk}: {problem}")
        if sig.parent_id is None:
            _skip_step(sig, actor)
        else:
            _skip_member(sig, result, (decided or {}).get("states", {}), actor)
    sig.refresh_from_db()
    return sig


def _skip_step(sig: Signature, actor: str) -> None:
    step = sig.steps.filter(status=StepStatus.FAILED).order_by("order").first()
    Step.objects.filter(pk=step.pk).update(status=StepStatus.SKIPPED, finished_at=timezone.now())
    events.record(sig, "skipped", actor=actor, step=step.name, order=step.order)
    Signature.objects.filter(pk=sig.pk).update(result=None, finished_at=None)
    execution.queue_run(sig, allowed=(Status.FAILED,), attempt=sig.attempts + 1, actor=actor, event="retry_queued")


def _skip_member(member: Signature, result: Any, edge_states: dict, actor: str) -> None:
    container = _lock(Signature(pk=member.parent_id))
    Signature.objects.filter(pk=member.pk, status=Status.FAILED).update(
        status=Status.SKIPPED, result=result, config={**member.config, SKIP_MARK: True}, finished_at=timezone.now()
    )
    events.record(member, "skipped", actor=actor, result=result)
    if container.status == Status.FAILED:
        Signature.objects.filter(pk=container.pk).update(status=Status.RUNNING, error=None, finished_at=None)
        container.callbacks.filter(status=Status.SKIPPED).update(status=Status.PENDING, finished_at=None)
        container.status = Status.RUNNING
        events.record(container, "reopened", actor=actor, skipped=member.pk)
    if container.kind == Kind.CHAIN:
        _unskip(container.members.filter(status=Status.SKIPPED, position__gt=member.position))
    else:
        states = {**_graph_states_without(container, {member.node_key}), **edge_states}
        _unskip(container.members.filter(status=Status.SKIPPED).exclude(pk=member.pk))
        container.config = {**container.config, "edge_states": states}
        Signature.objects.filter(pk=container.pk).update(config=container.config)
    containers.roll_up(container)
    containers.advance(container)


@execution.retry_on_conflict
def rerun(sig: Signature, *, actor: str = "system") -> Signature:
    """Run a finished signature again from scratch as a new attempt; also clears a deletion mark."""
    with transaction.atomic():
        sig = _lock(sig)
        _require(sig, RERUNNABLE, "rerun")
        if sig.delete_after is not None and sig.delete_after <= timezone.now():
            raise InvalidTransition("the deletion window has passed; it can no longer be rerun")
        still_running = [s for s in INTERRUPTIBLE if s != Status.PENDING]
        if tree.subtree(sig).exclude(pk=sig.pk).filter(status__in=still_running).exists():
            # Resetting a queued or running callback would let it run twice (its old run, then again).
            raise InvalidTransition("part of it (a callback) is still running; wait for it to end or interrupt it")
        ids = tree.descendant_ids(sig)
        Signature.objects.filter(callback_of_id__in=ids, trigger__isnull=False).delete()
        ids = tree.descendant_ids(sig)
        Step.objects.filter(signature_id__in=ids).delete()
        below = Signature.objects.filter(pk__in=ids).exclude(pk=sig.pk)
        below.update(status=Status.PENDING, progress=0, result=None, error=None, checkpoint=None, inbound={},
                     started_at=None, finished_at=None)
        for row in Signature.objects.filter(pk__in=ids, config__has_key=SKIP_MARK).only("config"):
            Signature.objects.filter(pk=row.pk).update(config={k: v for k, v in row.config.items() if k != SKIP_MARK})
        for container in below.filter(kind__in=CONTAINERS) | Signature.objects.filter(pk=sig.pk, kind__in=CONTAINERS):
            Signature.objects.filter(pk=container.pk).update(
                config={k: v for k, v in container.config.items() if k not in ("stopped", "edge_states")}
            )
        Signature.objects.filter(pk=sig.pk).update(
            status=Status.PENDING, progress=0, result=None, error=None, checkpoint=None, started_at=None,
            finished_at=None, marked_at=None, delete_after=None,
        )
        sig.refresh_from_db()
        events.record(sig, "rerun", actor=actor)
        if sig.kind == Kind.TASK:
            execution.queue_run(sig, allowed=[Status.PENDING], attempt=sig.attempts + 1, actor=actor)
        else:
            execution.start(sig, inbound=sig.inbound or None, actor=actor)
    sig.refresh_from_db()
    return sig


@execution.retry_on_conflict
def set_priority(sig: Signature, priority: str, *, actor: str = "system") -> Signature:
    """Change priority: a queued task's job moves queue; a pending member starts earlier or later."""
    if priority not in Priority.values:
        raise SpecError({"priority": f"must be one of {', '.join(Priority.values)}"})
    with transaction.atomic():
        sig = _lock(sig)
        if sig.priority == priority:
            return sig
        Signature.objects.filter(pk=sig.pk).update(priority=priority)
        new_queue = transport.QUEUE_BY_PRIORITY[priority]
        for run in sig.runs.filter(status=RunStatus.QUEUED).exclude(queue=new_queue):
            transport.move_job(run, new_queue)
            Run.objects.filter(pk=run.pk).update(queue=new_queue)
        events.record(sig, "priority_changed", actor=actor, old=sig.priority, new=priority)
    sig.refresh_from_db()
    return sig

