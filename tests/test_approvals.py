"""Approvals: no worker held, decisions re-queue, a second decision is refused, timeouts."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from tasks_app.models import ApprovalStatus, RunStatus, Status
from tasks_app.services import approvals, execution, progress
from tasks_app.services.errors import InvalidTransition
from tests.drain import drain

pytestmark = pytest.mark.django_db


def crm(owner):
    sig = execution.submit({"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0, "approval": True}},
                           owner=owner)
    drain()
    sig.refresh_from_db()
    return sig


def test_the_run_ends_waiting_and_the_approval_step_shows(owner):
    sig = crm(owner)
    assert sig.status == Status.WAITING_APPROVAL
    assert sig.runs.get().status == RunStatus.WAITING_APPROVAL
    steps = progress.payload(sig)["steps"]
    assert [s["status"] for s in steps] == ["completed", "completed", "completed", "approval"]


def test_approve_requeues_and_finishes_without_redoing_steps(owner):
    sig = crm(owner)
    approvals.decide(sig, approve=True, comment="go", actor="boss")
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.COMPLETED
    assert set(sig.result["executed"].values()) == {1}
    approval = sig.approvals.get()
    assert (approval.status, approval.decided_by, approval.comment) == (ApprovalStatus.APPROVED, "boss", "go")
    with pytest.raises(InvalidTransition):
        approvals.decide(sig, approve=False, actor="boss")


def test_reject_raises_approval_rejected_in_a_task_that_does_not_check(owner):
    sig = crm(owner)
    approvals.decide(sig, approve=False, actor="boss")
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.FAILED and sig.error["type"] == "ApprovalRejected"


def test_an_approval_node_routes_a_graph(owner):
    graph = execution.submit({"kind": "graph", "nodes": {
        "gate": {"task": "orchestrator.approval", "kwargs": {"title": "Ship it?"}},
        "ship": {"task": "examples.echo", "kwargs": {"value": "shipped"}},
        "stop": {"task": "examples.echo", "kwargs": {"value": "stopped"}}},
        "edges": [{"from": "gate", "to": "ship", "when": {"template": "approved", "params": {"value": True}}},
                  {"from": "gate", "to": "stop", "when": {"template": "approved", "params": {"value": False}}}]},
        owner=owner)
    drain()
    gate = graph.members.get(node_key="gate")
    approvals.decide(gate, approve=False, actor="boss")
    drain()
    graph.refresh_from_db()
    assert dict(graph.members.values_list("node_key", "status")) == {"gate": "completed", "ship": "skipped",
                                                                     "stop": "completed"}


@pytest.mark.parametrize(("default", "status", "approved"), [("approve", Status.COMPLETED, True),
                                                              ("reject", Status.COMPLETED, False),
                                                              ("pause", Status.PAUSED, None)])
def test_timeout_applies_the_default(owner, default, status, approved):
    sig = execution.submit({"task": "orchestrator.approval", "kwargs": {"timeout": 60, "default": default}},
                           owner=owner)
    drain()
    approval = sig.approvals.get()
    approvals.expire(approval.pk)  # too early: nothing happens
    assert approval.status == ApprovalStatus.PENDING
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=61)):
        approvals.expire(approval.pk)
    drain()
    sig.refresh_from_db()
    assert sig.status == status
    assert (sig.result or {}).get("approved") == approved
