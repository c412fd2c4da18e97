"""GET /api/tasks/{id}/progress: the progress view's payload."""

from __future__ import annotations

import pytest

from tests.api_helpers import ECHO, make, url

pytestmark = pytest.mark.django_db

CONTRACT_KEYS = {
    "task_id",
    "title",
    "status",
    "progress",
    "current_step",
    "total_steps",
    "started_at",
    "eta_seconds",
    "steps",
}
STEP_KEYS = {"order", "name", "status", "progress", "duration_ms", "substeps"}


def test_a_task_with_declared_steps(owner_client, owner):
    sig = make(owner, {"task": "examples.build_crm", "name": "CRM"}, run=True)

    body = owner_client.get(url(sig, "progress")).json()

    assert CONTRACT_KEYS <= set(body)
    assert (body["task_id"], body["title"], body["status"]) == (sig.pk, "CRM", "queued")
    assert body["total_steps"] == 4 and body["current_step"] == 1
    assert [s["name"] for s in body["steps"]][:2] == ["Create database tables", "Generate application UI"]
    assert all(STEP_KEYS <= set(step) and step["status"] == "pending" for step in body["steps"])


def test_a_container_has_its_members_as_steps(owner_client, owner):
    chain = make(owner, {"kind": "chain", "steps": [ECHO, {"task": "examples.double"}]})

    body = owner_client.get(url(chain, "progress")).json()

    assert body["total_steps"] == 2
    assert [(s["order"], s["task"]) for s in body["steps"]] == [(1, "examples.echo"), (2, "examples.double")]
