"""The periodic jobs that RQ's cron scheduler enqueues (tasks_app.cron): reconcile and purge."""

from __future__ import annotations

import pytest

from tasks_app import jobs
from tasks_app.models import ResumeReport, Signature
from tasks_app.services import deletion, execution


@pytest.fixture
def lost_job(owner, redis_conn):
    """A queued task whose RQ job never reached Redis (the test transaction never commits)."""
    return execution.submit({"task": "examples.echo", "kwargs": {"value": 1}}, owner=owner)


def test_periodic_reconcile_re_enqueues_a_lost_job_and_reports_it(lost_job):
    report_id = jobs.reconcile()

    report = ResumeReport.objects.get(pk=report_id)
    assert report.trigger == "periodic"
    assert [item["task_id"] for item in report.resumed] == [lost_job.pk]


def test_periodic_reconcile_does_nothing_when_auto_resume_is_off(lost_job, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "AUTO_RESUME": False}

    assert jobs.reconcile() is None
    assert not ResumeReport.objects.exists()


def test_periodic_purge_deletes_signatures_whose_window_has_passed(owner):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}}, owner=owner, run=False)
    deletion.delete(sig, ttl=0)

    assert jobs.purge() == 1
    assert not Signature.objects.filter(pk=sig.pk).exists()
