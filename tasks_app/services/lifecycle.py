"""Pause, resume, interrupt, cancel, retry, rerun and priority: one service each.

Every action applies to the target and all its descendants. Each is one transaction of guarded
updates; jobs are dropped and work horses stopped after commit.
"""

from __future__ import annotations

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
)
from . import containers, events, execution, transport, tree
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
def retry(sig: Signature, *, actor: str = "system") -> Signature:
    """Run a failed or interrupted task again; on a container, only its failed members."""
    with transaction.atomic():
        sig = _lock(sig)
        _require(sig, RETRYABLE, "retry")
        _retry_node(sig, actor)
        events.record(sig, "retried", actor=actor)
        if sig.kind in CONTAINERS:
            sig.refresh_from_db()
            containers.advance(sig)
    sig.refresh_from_db()
    return sig


def _retry_node(node: Signature, actor: str) -> None:
    if node.kind == Kind.TASK:
        _reset_task(node)
        execution.queue_run(node, allowed=RETRYABLE, attempt=node.attempts + 1, actor=actor, event="retry_queued")
        return
    Signature.objects.filter(pk=node.pk).update(status=Status.RUNNING, error=None, finished_at=None)
    node.callbacks.filter(status=Status.SKIPPED).update(status=Status.PENDING, finished_at=None)
    config = {k: v for k, v in node.config.items() if k != "stopped"}
    failed = list(node.members.filter(status__in=RETRYABLE))
    if node.kind == Kind.GRAPH:
        config["edge_states"] = _graph_states_without(node, {m.node_key for m in failed})
    Signature.objects.filter(pk=node.pk).update(config=config)
    node.members.filter(status=Status.SKIPPED).update(status=Status.PENDING, finished_at=None)
    for member in failed:
        _retry_node(member, actor)
        if member.kind in CONTAINERS:
            member.refresh_from_db()
            containers.advance(member)


def _graph_states_without(graph: Signature, sources: set[str]) -> dict:
    """Forget edge states from the retried nodes and from every skipped node (they resolve again)."""
    skipped = set(graph.members.filter(status=Status.SKIPPED).values_list("node_key", flat=True))
    edges = graph.config.get("edges", [])
    return {
        i: taken for i, taken in graph.config.get("edge_states", {}).items()
        if edges[int(i)]["from"] not in sources | skipped
    }


def _reset_task(node: Signature) -> None:
    node.steps.all().delete()
    Signature.objects.filter(pk=node.pk).update(progress=0, checkpoint=None, result=None, finished_at=None)


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

