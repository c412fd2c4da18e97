"""Recovery that one broken workflow, a Redis flush or a Redis outage cannot stop (issue 17, items 2, 4, 7, 9).

The reconcile pass isolates each item; the worker starts whatever its start-up pass meets; purge
keeps members of unfinished containers; approval timeouts are decided by the pass too; a run lost
again and again fails its task; a submit whose enqueue finds Redis away answers 201 and the pass
enqueues it later.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
import time_machine
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone
from rq.job import Job

from tasks_app import jobs
from tasks_app.management.commands import worker as worker_command
from tasks_app.models import ApprovalStatus, Event, Notification, Run, RunStatus, Signature, Status
from tasks_app.services import containers, deletion, execution, notifications, reconcile, transport
from tests.drain import drain

GONE = "gone-worker"


@pytest.fixture
def jobs_in_place(monkeypatch):
    """The test transaction never commits, so no job reached Redis: queued runs are taken as waiting."""
    monkeypatch.setattr(reconcile, "job_exists", lambda run: True)


def stranded_swarm(owner) -> Signature:
    """A swarm whose members all completed but which still reads `running`: a pass must end it."""
    swarm = execution.submit({"kind": "swarm", "tasks": [{"task": "examples.echo", "kwargs": {"value": 1}}]},
                             owner=owner)
    drain()
    Signature.objects.filter(pk=swarm.pk).update(status=Status.RUNNING, finished_at=None, result=None)
    return swarm


# 2. One broken workflow does not stop recovery ---------------------------------------------------


@pytest.mark.django_db
def test_a_container_that_raises_is_reported_and_the_pass_goes_on(owner, jobs_in_place, monkeypatch):
    first, second = stranded_swarm(owner), stranded_swarm(owner)
    real_advance, broken = containers.advance, []

    def advance(container, *args, **kwargs):
        if not broken or broken[0] == container.pk:  # the first container the pass meets is broken
            broken.append(container.pk)
            raise KeyError("node")
        return real_advance(container, *args, **kwargs)

    monkeypatch.setattr(containers, "advance", advance)
    report = reconcile.run_pass(trigger="test")

    healthy = ({first.pk, second.pk} - {broken[0]}).pop()
    assert Signature.objects.get(pk=healthy).status == Status.COMPLETED
    assert Signature.objects.get(pk=broken[0]).status == Status.RUNNING
    assert [(f["task_id"], f["error"]) for f in report.failures] == [(broken[0], "KeyError: 'node'")]


@pytest.mark.django_db
def test_purge_keeps_a_pending_member_of_a_running_graph_and_the_graph_completes(owner, jobs_in_place):
    graph = execution.submit({"kind": "graph", "nodes": {"a": {"task": "examples.echo", "kwargs": {"value": 1}},
                                                         "b": {"task": "examples.double"}},
                              "edges": [{"from": "a", "to": "b"}]}, owner=owner)
    b = graph.members.get(node_key="b")
    assert b.status == Status.PENDING
    deletion.delete(b, ttl=0, actor="test")

    assert deletion.purge(now=timezone.now() + dt.timedelta(seconds=1)) == 0

    assert Signature.objects.filter(pk=b.pk).exists()
    assert reconcile.run_pass(trigger="test") is None  # nothing to repair, nothing failing
    drain()
    graph.refresh_from_db()
    assert graph.status == Status.COMPLETED and graph.result == {"a": 1, "b": 2}
    assert deletion.purge(now=timezone.now() + dt.timedelta(seconds=1)) == 1  # finished now: it goes
    assert not Signature.objects.filter(pk=b.pk).exists()


def test_the_worker_starts_when_its_start_up_pass_fails(monkeypatch, caplog):
    started = []

    class Worker:
        def __init__(self, queues, **kwargs):
            self.queues = queues

        def work(self, **kwargs):
            started.append([q.name for q in self.queues])

    def broken_pass(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(reconcile, "run_pass", broken_pass)
    monkeypatch.setattr(worker_command, "get_worker_class", lambda: Worker)
    with caplog.at_level(logging.ERROR, logger="tasks_app"):
        call_command("worker", "--burst", "--queues", "orchestrator-high")

    assert started == [["orchestrator-high"]]
    assert "auto-resume pass at worker start failed" in caplog.text


# 4. A run lost again and again fails its task --------------------------------------------------


def lose_running_run(sig: Signature, number: int):
    assert execution.claim(sig.pk, number) is not None
    Run.objects.filter(signature=sig, number=number).update(worker_name=GONE)
    return reconcile.run_pass(trigger="test")


@pytest.mark.django_db
def test_a_run_lost_three_times_in_a_row_fails_the_task_instead_of_requeuing(owner, jobs_in_place):
    sig = execution.submit({"task": "examples.sleep", "kwargs": {"seconds": 0.01, "step": 0.01}, "retries": 2,
                            "on_error": [{"task": "examples.noop"}]}, owner=owner)
    for number in (1, 2):
        report = lose_running_run(sig, number)
        assert [item["task_id"] for item in report.resumed] == [sig.pk]
    report = lose_running_run(sig, 3)

    sig.refresh_from_db()
    assert sig.status == Status.FAILED
    assert "lost 3 times in a row, not re-queued" in sig.error["message"]
    assert list(sig.runs.values_list("status", flat=True)) == [RunStatus.LOST] * 3
    assert report.failures[0]["error"] == "lost 3 times in a row, not re-queued" and not report.resumed
    assert sig.callbacks.get().status == Status.QUEUED  # the error callback fires; the retries are not used


@pytest.mark.django_db
def test_the_lost_run_limit_is_a_setting(owner, jobs_in_place, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_LOST_RUNS": 1}
    sig = execution.submit({"task": "examples.noop"}, owner=owner)
    lose_running_run(sig, 1)
    sig.refresh_from_db()
    assert sig.status == Status.FAILED and "lost 1 times in a row" in sig.error["message"]


# 7. Approval timeouts survive a Redis flush ----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("default", "status", "result"), [
    ("approve", Status.COMPLETED, {"approved": True, "input": None}),
    ("pause", Status.PAUSED, None),
])
def test_the_pass_decides_a_timed_out_approval_once_when_its_job_is_lost(owner, jobs_in_place, default, status,
                                                                         result):
    # In the test transaction nothing reaches Redis: the delayed timeout job is lost, as after a flush.
    sig = execution.submit({"task": "orchestrator.approval", "kwargs": {"timeout": 60, "default": default}},
                           owner=owner)
    drain()
    approval = sig.approvals.get()
    assert reconcile.run_pass(trigger="test") is None  # not due yet

    with time_machine.travel(timezone.now() + dt.timedelta(seconds=61)):
        report = reconcile.run_pass(trigger="test")
        jobs.approval_timeout(approval.pk)  # the delayed job comes after all: nothing more happens
        assert reconcile.run_pass(trigger="test") is None

    assert [(i["task_id"], i["reason"]) for i in report.resumed] == [(sig.pk, "approval timed out")]
    decided = Event.objects.filter(signature_ref=sig.pk, type__in=["approval_decided", "approval_timed_out"])
    assert decided.count() == 1
    drain()
    sig.refresh_from_db()
    assert sig.status == status and sig.result == result
    approval.refresh_from_db()
    assert approval.status == (ApprovalStatus.APPROVED if default == "approve" else ApprovalStatus.PENDING)


@pytest.mark.django_db
def test_the_pass_enqueues_a_webhook_delivery_whose_job_was_lost(owner, redis_conn, django_capture_on_commit_callbacks):
    notice = Notification.objects.create(owner=owner, event="task_failed", title="Build failed",
                                         webhook_due_at=timezone.now() - dt.timedelta(seconds=1))
    job_id = notifications.webhook_job_id(notice.pk, 1)
    webhooks = transport.connection(notifications.WEBHOOK_QUEUE)
    assert not Job.exists(job_id, connection=webhooks)

    with django_capture_on_commit_callbacks(execute=True):
        reconcile.run_pass(trigger="test")

    assert Job.exists(job_id, connection=webhooks)


@pytest.mark.django_db
def test_a_failing_webhook_reschedule_is_reported_and_the_pass_goes_on(owner, jobs_in_place, monkeypatch):
    swarm = stranded_swarm(owner)

    def broken():
        raise RuntimeError("webhook table locked")

    monkeypatch.setattr(notifications, "reschedule_due_deliveries", broken)
    report = reconcile.run_pass(trigger="test")

    assert [(f["title"], f["error"]) for f in report.failures] == [
        ("webhook deliveries", "RuntimeError: webhook table locked")]
    assert Signature.objects.get(pk=swarm.pk).status == Status.COMPLETED


# 9. No duplicate on retry when Redis is down ---------------------------------------------------


@contextmanager
def unreachable_redis() -> Iterator[redis.Redis]:
    """A client of a port bound but not listening (no other process can take it meanwhile): every
    command raises ConnectionError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield redis.Redis(host="127.0.0.1", port=probe.getsockname()[1], socket_connect_timeout=1)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_submit_while_redis_is_down_answers_201_once_and_the_pass_runs_it_later(owner_client, workers, monkeypatch):
    body = {"task": "examples.echo", "kwargs": {"value": 7}, "idempotency_key": "crm-import-42"}
    with monkeypatch.context() as down, unreachable_redis() as dead:
        down.setattr(transport, "connection", lambda queue: dead)
        created = owner_client.post("/api/tasks/", body, format="json")
        retried = owner_client.post("/api/tasks/", body, format="json")

    assert created.status_code == 201, created.content
    assert retried.status_code == 200 and retried.json()["id"] == created.json()["id"]
    sig = Signature.objects.get(idempotency_key="crm-import-42")
    assert Signature.objects.count() == 1 and sig.status == Status.QUEUED
    run = sig.runs.get()
    assert not Job.exists(transport.job_id(run), connection=transport.connection(run.queue))

    report = reconcile.run_pass(trigger="test")

    assert [(i["task_id"], i["reason"]) for i in report.resumed] == [(sig.pk, "job missing")]
    assert Job.exists(transport.job_id(run), connection=transport.connection(run.queue))
    workers.burst(args=["--no-reconcile"])
    sig.refresh_from_db()
    assert sig.status == Status.COMPLETED and sig.result == 7 and sig.runs.count() == 1
