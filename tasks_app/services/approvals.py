"""Approvals: a task asks, its run ends in ``waiting_approval``, a human decides, the task re-runs.

The re-run reaches the same ``ctx.request_approval`` call, finds the decision and goes on; steps
already completed are skipped by the task, so nothing is redone and no worker waits meanwhile.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from ..context import ApprovalPending
from ..models import Approval, ApprovalStatus, Run, RunStatus, Signature, Status, Step, StepStatus
from . import events, execution, live, transport
from .errors import InvalidTransition, SpecError

DEFAULTS = ("approve", "reject", "pause")


def request(sig: Signature, run: Run, *, title: str, details: str = "", timeout: float | None = None,
            default: str = "reject") -> bool:
    """The decision if one was made for this attempt; otherwise record the request and end the run."""
    if default not in DEFAULTS:
        raise ValueError(f"default must be one of {', '.join(DEFAULTS)}")
    approval, _ = Approval.objects.get_or_create(
        signature=sig, attempt=run.attempt, title=title[:200],
        defaults={"details": details, "default": default,
                  "timeout_at": timezone.now() + timezone.timedelta(seconds=timeout) if timeout else None},
    )
    if approval.status != ApprovalStatus.PENDING:
        return approval.status == ApprovalStatus.APPROVED
    raise ApprovalPending(approval)


@execution.retry_on_conflict
def wait(sig: Signature, run: Run, approval: Approval) -> None:
    """The run ends in waiting_approval; a timeout job is scheduled when the request has one."""
    with transaction.atomic():
        if not Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.WAITING_APPROVAL, finished_at=timezone.now()
        ):
            return
        Signature.objects.filter(pk=sig.pk, status=Status.RUNNING).update(status=Status.WAITING_APPROVAL)
        _mark_step(sig, StepStatus.APPROVAL)
        events.record(sig, "approval_needed", approval=approval.pk, title=approval.title, details=approval.details)
        timeout_at = approval.timeout_at and approval.timeout_at.isoformat()
        live.publish(sig, "approval_needed", approval={"id": approval.pk, "title": approval.title,
                                                       "details": approval.details, "default": approval.default,
                                                       "timeout_at": timeout_at})
        if approval.timeout_at:
            delay = max(0.0, (approval.timeout_at - timezone.now()).total_seconds())
            transport.enqueue_call("tasks_app.jobs.approval_timeout", approval.pk, delay=delay)


def _mark_step(sig: Signature, status: str) -> None:
    """The first step not completed shows the approval state in the progress view."""
    step = sig.steps.exclude(status=StepStatus.COMPLETED).order_by("order").first()
    if step is not None:
        Step.objects.filter(pk=step.pk).update(status=status)


def pending_for(sig: Signature) -> Approval | None:
    return sig.approvals.filter(status=ApprovalStatus.PENDING).order_by("-id").first()


@execution.retry_on_conflict
def decide(sig: Signature, *, approve: bool, comment: str = "", actor: str = "system") -> Approval:
    """Record the decision once (a second one is refused) and re-queue the task."""
    if not isinstance(comment, str):
        raise SpecError({"comment": "must be a string"})
    with transaction.atomic():
        approval = pending_for(sig)
        if approval is None:
            raise InvalidTransition("no approval is pending for this signature")
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
        if not Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
            status=status, decided_at=timezone.now(), decided_by=actor[:150], comment=comment
        ):
            raise InvalidTransition("this approval was already decided")
        events.record(sig, "approval_decided", actor=actor, approval=approval.pk, decision=status, comment=comment)
        sig.refresh_from_db()
        if sig.status == Status.WAITING_APPROVAL:
            _mark_step(sig, StepStatus.PENDING)
            execution.queue_run(sig, allowed=[Status.WAITING_APPROVAL], attempt=max(sig.attempts, 1), actor=actor,
                                event="approval_requeued")
    approval.refresh_from_db()
    return approval


def expire(approval_id: int) -> bool:
    """Apply the request's default once its timeout has passed (approve, reject, or pause the task).

    Called by the delayed timeout job and by the reconcile pass (the job lives in Redis and may be
    lost); the decision is a guarded update, so when both come only one decides. True when this
    call decided."""
    pending = Approval.objects.filter(pk=approval_id, status=ApprovalStatus.PENDING)
    approval = pending.select_related("signature").first()
    if approval is None or approval.timeout_at is None or approval.timeout_at > timezone.now():
        return False
    sig = approval.signature
    if approval.default == "pause":
        with transaction.atomic():
            if not Signature.objects.filter(pk=sig.pk, status=Status.WAITING_APPROVAL).update(status=Status.PAUSED):
                return False
            events.record(sig, "approval_timed_out", approval=approval.pk, default="pause")
        return True
    try:
        decide(sig, approve=approval.default == "approve", comment="timed out", actor="timeout")
    except InvalidTransition:
        return False  # decided by a human, or by the other of the job and the pass, meanwhile
    return True
