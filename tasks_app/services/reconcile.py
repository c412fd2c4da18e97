"""Auto-resume: the database says what should be running; Redis and the workers are made to agree.

A pass re-queues ``running`` runs whose worker is dead (heartbeat too old, or its process gone on
this host) from their checkpoint, re-enqueues ``queued`` runs whose RQ job is missing, and
advances running containers (refilling free slots). Paused, failed and interrupted work is left
alone. Each change is its own guarded transaction, so two passes at once do nothing twice.
"""

from __future__ import annotations

import fnmatch
import os
import socket
import time
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from ..models import CONTAINERS, ResumeReport, Run, RunStatus, Signature, Status, WorkerProcess
from . import events, execution, notifications, transport


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
        if run.worker_name not in live:
            _handle(report, run, "worker gone", _requeue_lost)
        elif job_ended(run):
            _handle(report, run, "job ended", _requeue_lost)
    for run in Run.objects.filter(status=RunStatus.QUEUED).select_related("signature"):
        if (run.not_before is None or run.not_before <= timezone.now()) and not job_exists(run):
            _handle(report, run, "job missing", _reenqueue)
    for container in Signature.objects.filter(kind__in=CONTAINERS, status=Status.RUNNING):
        if not dry_run:
            _advance(container)
    if not (report.resumed or report.skipped or report.failures):
        return None
    saved = ResumeReport.objects.create(
        trigger=trigger, dry_run=dry_run, resumed=report.resumed, skipped=report.skipped, failures=report.failures
    )
    notifications.on_resume_report(saved)
    return saved


def _handle(report: Pass, run: Run, reason: str, action) -> None:
    sig = run.signature
    item = {"task_id": sig.pk, "task": sig.task_name, "title": sig.title, "run": run.number, "reason": reason}
    if not included(sig.task_name):
        report.skipped.append({**item, "why": "excluded by the auto-resume settings"})
        return
    if report.dry_run:
        report.resumed.append(item)
        return
    try:
        if action(run):
            report.resumed.append(item)
            time.sleep(settings.ORCHESTRATOR["AUTO_RESUME_STAGGER"])
    except Exception as exc:  # one bad row must not stop the pass; it is reported
        report.failures.append({**item, "error": f"{type(exc).__name__}: {exc}"})


def included(task_name: str) -> bool:
    conf = settings.ORCHESTRATOR
    if any(fnmatch.fnmatch(task_name, p) for p in conf["AUTO_RESUME_EXCLUDE"]):
        return False
    return any(fnmatch.fnmatch(task_name, p) for p in conf["AUTO_RESUME_INCLUDE"])


@execution.retry_on_conflict
def _requeue_lost(run: Run) -> bool:
    """A running run whose worker died: a new run of the same attempt continues from the checkpoint."""
    with transaction.atomic():
        if not Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.LOST, finished_at=timezone.now()
        ):
            return False
        sig = Signature.objects.get(pk=run.signature_id)
        events.record(sig, "worker_lost", run=run.number, worker=run.worker_name)
        return execution.queue_run(sig, allowed=[Status.RUNNING], attempt=run.attempt, event="resumed") is not None


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


# RQ job states after which the job never runs again.
ENDED = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _job(run: Run) -> Job | None:
    try:
        return Job.fetch(transport.job_id(run), connection=transport.connection(run.queue))
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
    return queue.connection.lpos(queue.key, transport.job_id(run)) is not None


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
