"""Auto-resume: the database says what should be running; Redis and the workers are made to agree.

A pass re-queues ``running`` runs whose worker is dead (heartbeat too old, or its process gone on
this host) from their checkpoint, re-enqueues ``queued`` runs whose RQ job is missing, advances
running containers (refilling free slots) and decides approvals whose timeout has passed
(their delayed job lives in Redis and may be gone). Paused, failed and interrupted work is left
alone. Each change is its own guarded transaction, so two passes at once do nothing twice, and
each item is isolated: one that raises is logged and reported, and the pass goes on.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from .. import private_apis
from ..models import (
    CONTAINERS,
    Approval,
    ApprovalStatus,
    ResumeReport,
    Run,
    RunStatus,
    Signature,
    Status,
    WorkerProcess,
)
from . import approvals, events, execution, notifications, transport

log = logging.getLogger(__name__)


@dataclass
class Pass:
    trigger: str
    dry_run: bool = False
    resumed: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)


def run_pass(*, trigger: str = "periodic", dry_run: bool = False) -> ResumeReport | None:
    """One reconcile pass; writes a ResumeReport when it changed (or would change) anything."""
    report = Pass(trigger=trigger, dry_run=dry_run)
    live = live_workers()
    for run in Run.objects.filter(status=RunStatus.RUNNING).select_related("signature"):
        _isolated(report, _item(run.signature), "checking a running run",
                  lambda run=run: _check_running(report, run, live))
    for run in Run.objects.filter(status=RunStatus.QUEUED).select_related("signature"):
        _isolated(report, _item(run.signature), "checking a queued run", lambda run=run: _check_queued(report, run))
    if not dry_run:
        for container in Signature.objects.filter(kind__in=CONTAINERS, status=Status.RUNNING):
            _isolated(report, _item(container), "advancing the container", lambda c=container: _advance(c))
    _expire_approvals(report)
    if not dry_run:
        _isolated(report, WEBHOOKS, "rescheduling webhook deliveries", _reschedule_webhooks)
    if not (report.resumed or report.skipped or report.failures):
        return None
    saved = ResumeReport.objects.create(
        trigger=trigger, dry_run=dry_run, resumed=report.resumed, skipped=report.skipped, failures=report.failures
    )
    notifications.on_resume_report(saved)
    return saved


def _item(sig: Signature, **extra) -> dict:
    return {"task_id": sig.pk, "task": sig.task_name, "title": sig.title, **extra}


WEBHOOKS = {"task_id": None, "task": "", "title": "webhook deliveries"}


def _isolated(report: Pass, item: dict, doing: str, step: Callable[[], object]) -> None:
    """Run one item of the pass; an error is logged and reported, and the pass goes on.

    The step's own ``transaction.atomic`` is a savepoint when the pass runs inside a transaction,
    so what the failed item wrote is rolled back alone."""
    try:
        step()
    except Exception as exc:
        log.exception("auto-resume: %s (#%s) failed", doing, item["task_id"])
        report.failures.append({**item, "reason": f"{doing} failed", "error": f"{type(exc).__name__}: {exc}"})


def _check_running(report: Pass, run: Run, live: set[str]) -> None:
    if run.worker_name not in live:
        _handle(report, run, "worker gone", _requeue_lost)
    elif job_ended(run):
        _handle(report, run, "job ended", _requeue_lost)


def _check_queued(report: Pass, run: Run) -> None:
    if (run.not_before is None or run.not_before <= timezone.now()) and not job_exists(run):
        _handle(report, run, "job missing", _reenqueue)


def _handle(report: Pass, run: Run, reason: str, action: Callable[[Run], bool | str]) -> None:
    """``action`` returns True when it resumed the run, False when another process won, or the
    reason why it gave the task up (reported as a failure)."""
    sig = run.signature
    item = _item(sig, run=run.number, reason=reason)
    if not included(sig.task_name):
        report.skipped.append({**item, "why": "excluded by the auto-resume settings"})
        return
    if report.dry_run:
        report.resumed.append(item)
        return
    try:
        outcome = action(run)
    except Exception as exc:  # one bad row must not stop the pass; it is reported
        log.exception("auto-resume: %s of #%s failed", action.__name__, sig.pk)
        report.failures.append({**item, "error": f"{type(exc).__name__}: {exc}"})
        return
    if isinstance(outcome, str):
        report.failures.append({**item, "error": outcome})
    elif outcome:
        report.resumed.append(item)
        time.sleep(settings.ORCHESTRATOR["AUTO_RESUME_STAGGER"])


def included(task_name: str) -> bool:
    conf = settings.ORCHESTRATOR
    if any(fnmatch.fnmatch(task_name, p) for p in conf["AUTO_RESUME_EXCLUDE"]):
        return False
    return any(fnmatch.fnmatch(task_name, p) for p in conf["AUTO_RESUME_INCLUDE"])


@execution.retry_on_conflict
def _requeue_lost(run: Run) -> bool | str:
    """A running run whose worker died: a new run of the same attempt continues from the checkpoint,
    unless the attempt was lost MAX_LOST_RUNS times in a row (a task that kills its worker): then the
    task fails instead of taking down one worker after another forever."""
    return _requeue(run, RunStatus.LOST, "worker_lost")


@execution.retry_on_conflict
def hand_back(run: Run) -> bool | str:
    """A running run whose worker is stopping (SIGTERM) and stopped it: a new run of the same attempt
    is queued at once, from the checkpoint. Not a loss: it does not count towards MAX_LOST_RUNS."""
    return _requeue(run, RunStatus.HANDED_BACK, "handed_back")


def _requeue(run: Run, ended: RunStatus, event: str) -> bool | str:
    with transaction.atomic():
        sig = Signature.objects.filter(pk=run.signature_id).first()
        if sig is None:  # cancelled meanwhile: the run went with it
            return False
        execution.lock_parent(sig)  # the container first, as every member end does
        if not Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(status=ended, finished_at=timezone.now()):
            return False
        events.record(sig, event, run=run.number, worker=run.worker_name)
        limit = settings.ORCHESTRATOR["MAX_LOST_RUNS"]
        if ended == RunStatus.LOST and _lost_in_a_row(sig, run.attempt, limit) >= limit:
            return _give_up(sig, limit)
        return execution.queue_run(sig, allowed=[Status.RUNNING], attempt=run.attempt, event="resumed") is not None


def _lost_in_a_row(sig: Signature, attempt: int, limit: int) -> int:
    """How many of the attempt's latest runs (up to ``limit``) were lost, counted back to the first that was not."""
    latest = sig.runs.filter(attempt=attempt).order_by("-number").values_list("status", flat=True)[:limit]
    count = 0
    for status in latest:
        if status != RunStatus.LOST:
            break
        count += 1
    return count


def _give_up(sig: Signature, lost: int) -> str | bool:
    """Fail the task (its error callbacks fire; retries are for errors the task raised). False when
    it is no longer running (paused meanwhile: a resume queues it again)."""
    message = f"lost {lost} times in a row, not re-queued"
    error = {"type": "WorkerLost", "message": f"The task's worker died while running it: {message}.",
             "traceback": "", "task_id": sig.pk}
    return execution.finish(sig, Status.FAILED, error=error, allowed=(Status.RUNNING,)) and message


def _reenqueue(run: Run) -> bool:
    with transaction.atomic():
        if not Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).exists():
            return False
        events.record(run.signature, "job_reenqueued", run=run.number)
        transport.enqueue_run(run)
    return True


@execution.retry_on_conflict
def _advance(container: Signature) -> None:
    from . import containers

    with transaction.atomic():
        container = Signature.objects.locked().get(pk=container.pk)
        containers.advance(container)


def _expire_approvals(report: Pass) -> None:
    """Apply the default decision of approvals whose timeout has passed: their delayed job lived in
    Redis, and a flush or a restart without persistence lost it. The job and the pass may both
    come; the decision is a guarded update, so only one of them decides."""
    due = Approval.objects.filter(status=ApprovalStatus.PENDING, timeout_at__lte=timezone.now())
    # A "pause" default leaves the approval pending: once the task is paused it has nothing left to do.
    due = due.exclude(Q(default="pause") & ~Q(signature__status=Status.WAITING_APPROVAL))
    for approval in due.select_related("signature").order_by("timeout_at", "pk"):
        sig = approval.signature
        item = _item(sig, reason="approval timed out", approval=approval.pk, default=approval.default)
        if report.dry_run:
            report.resumed.append(item)
        else:
            _isolated(report, _item(sig), "deciding a timed-out approval",
                      lambda a=approval, i=item: _expire(report, a, i))


def _expire(report: Pass, approval: Approval, item: dict) -> None:
    if approvals.expire(approval.pk):
        report.resumed.append(item)


def _reschedule_webhooks() -> None:
    """Webhook attempts that are due and have no job (their delayed job was lost with Redis)."""
    try:
        count = notifications.reschedule_due_deliveries()
    except REDIS_DOWN:
        return  # unknown while Redis is away: a later pass decides
    if count:
        log.info("auto-resume: %s webhook deliveries enqueued again", count)


# RQ job states after which the job never runs again.
ENDED = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _job(run: Run) -> Job | None:
    try:
        return Job.fetch(transport.job_id(run), connection=transport.connection(run.queue),
                         serializer=transport.serializer(run.queue))
    except NoSuchJobError:
        return None


def job_exists(run: Run) -> bool:
    """Whether the queued run's job can still start: waiting in Redis, or taken by a live worker.

    A job whose horse failed before the claim (the database was away) has ended, and one taken by
    a worker killed before the claim is `started` by a dead worker: neither will claim the run."""
    try:
        job = _job(run)
    except REDIS_DOWN:
        return True  # unknown while Redis is away: a later pass decides
    if job is None:
        return False
    status = job.get_status(refresh=False)
    if status in ENDED:
        return False
    if status == JobStatus.STARTED:
        return job.worker_name in live_workers()  # rare: between a worker's dequeue and the claim
    return status != JobStatus.QUEUED or _waiting(run)


def _waiting(run: Run) -> bool:
    """A `queued` job waits only while its id is in its queue's list. One that a worker dequeued but
    never started (Redis or the worker went away in between) is in no list and no registry until
    RQ's own 10-minute maintenance; a run queued for over a minute whose job is not in the list is
    taken as missing (a duplicate job this may send is dropped at claim)."""
    if run.queued_at > timezone.now() - timezone.timedelta(seconds=60):
        return True
    queue = transport.get_queue(run.queue)
    return private_apis.is_in_queue(queue.connection, queue.key, transport.job_id(run))


def job_ended(run: Run) -> bool:
    """A running run whose job ended without ending the run: its horse died, or the database was
    away when it tried to record the end. The database commits before RQ marks the job, so a job
    that ended while its run still reads `running` means the run will not end by itself."""
    try:
        job = _job(run)
    except REDIS_DOWN:
        return False  # unknown while Redis is away: a later pass decides
    return job is not None and job.get_status(refresh=False) in ENDED


def live_workers() -> set[str]:
    """Names of workers with a fresh heartbeat whose process, when on this host, still exists."""
    cutoff = timezone.now() - timezone.timedelta(seconds=settings.ORCHESTRATOR["HEARTBEAT_TIMEOUT"])
    host = socket.gethostname()
    names = set()
    for worker in WorkerProcess.objects.filter(last_heartbeat__gte=cutoff):
        if worker.hostname == host and not _pid_alive(worker.pid):
            continue
        names.add(worker.name)
    return names


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
