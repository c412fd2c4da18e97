"""The auto-resume pass, read from the database (RQ's registries are not trusted)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tasks_app.models import ResumeReport, Run, RunStatus, Signature, Status, WorkerProcess
from tasks_app.services import execution, reconcile
from tests.drain import drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_redis_jobs(monkeypatch):
    """The test transaction never commits, so no job reached Redis: every queued run looks lost."""
    sent = []
    monkeypatch.setattr(reconcile, "job_exists", lambda run, live=None: False)
    monkeypatch.setattr(reconcile.transport, "enqueue_run", lambda run, delay=0: sent.append(run.pk))
    return sent


def running_run(owner, worker: str) -> Signature:
    sig = execution.submit({"task": "examples.sleep", "kwargs": {"seconds": 0.01, "step": 0.01}}, owner=owner)
    execution.claim(sig.pk, 1)
    Run.objects.filter(signature=sig).update(worker_name=worker)
    return sig


def test_a_running_run_of_a_dead_worker_is_queued_again_from_its_checkpoint(owner, no_redis_jobs):
    sig = running_run(owner, "gone-worker")
    Signature.objects.filter(pk=sig.pk).update(checkpoint={"slept": 0.005})
    report = reconcile.run_pass(trigger="test")
    assert [item["task_id"] for item in report.resumed] == [sig.pk, sig.pk]  # lost run, then its new job
    assert list(sig.runs.order_by("number").values_list("status", flat=True)) == [RunStatus.LOST, RunStatus.QUEUED]
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.COMPLETED and sig.attempts == 1


def test_a_live_worker_keeps_its_run(owner, no_redis_jobs):
    import os
    import socket

    WorkerProcess.objects.create(name="alive", hostname=socket.gethostname(), pid=os.getpid(),
                                 last_heartbeat=timezone.now())
    sig = running_run(owner, "alive")
    assert reconcile.run_pass(trigger="test") is None or sig.pk not in [
        i["task_id"] for i in ResumeReport.objects.get().resumed]
    assert sig.runs.get().status == RunStatus.RUNNING


def test_paused_failed_and_interrupted_work_is_left_alone(owner, no_redis_jobs):
    from tasks_app.services import lifecycle

    paused = execution.submit({"task": "examples.noop"}, owner=owner)
    lifecycle.pause(paused, actor="t")
    failed = execution.submit({"task": "examples.fail"}, owner=owner)
    interrupted = execution.submit({"task": "examples.noop"}, owner=owner)
    lifecycle.interrupt(interrupted, actor="t")
    drain()
    assert reconcile.run_pass(trigger="test") is None
    assert Signature.objects.get(pk=paused.pk).status == Status.PAUSED
    assert Signature.objects.get(pk=failed.pk).status == Status.FAILED


def test_dry_run_reports_without_changing_and_exclusions_are_skipped(owner, no_redis_jobs, settings):
    sig = running_run(owner, "gone-worker")
    report = reconcile.run_pass(trigger="test", dry_run=True)
    assert report.dry_run and sig.runs.get().status == RunStatus.RUNNING
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "AUTO_RESUME_EXCLUDE": ["examples.*"]}
    report = reconcile.run_pass(trigger="test")
    assert report.skipped and not report.resumed
    assert sig.runs.get().status == RunStatus.RUNNING


def test_two_passes_do_not_resume_twice(owner, no_redis_jobs):
    sig = running_run(owner, "gone-worker")
    reconcile.run_pass(trigger="a")
    reconcile.run_pass(trigger="b")
    assert sig.runs.filter(status=RunStatus.QUEUED).count() == 1
