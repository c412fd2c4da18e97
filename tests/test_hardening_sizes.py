"""Size limits apply to the workflow as stored, after shared kwargs are copied into every member.

A container's ``kwargs`` reach each member: a 1 MB request (a 250 KB argument, 38,000 members)
would have the web process build and write about 9.5 GB. It is measured without being built and
refused with a 413 that names the limit, and nothing is written.
"""

from __future__ import annotations

import time

import pytest

from tasks_app.models import Signature
from tests.api_helpers import make, url

pytestmark = pytest.mark.django_db

MEMBER = {"task": "examples.echo"}  # echo(value=None) accepts the shared ``value``


def amplified_swarm(shared_bytes: int, members: int) -> dict:
    return {"kind": "swarm", "kwargs": {"value": "x" * shared_bytes}, "tasks": [MEMBER] * members}


def limit(settings, **values: int) -> None:
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, **values}


def test_a_one_megabyte_request_that_expands_to_gigabytes_is_413_at_once(owner_client):
    body = amplified_swarm(250_000, 27_000)  # under the 1 MB spec limit as sent; some 21 GB expanded
    started = time.monotonic()
    response = owner_client.post("/api/tasks/", body, format="json")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert "ORCHESTRATOR_MAX_EXPANDED_BYTES" in response.json()["detail"]
    assert time.monotonic() - started < 30
    assert not Signature.objects.exists()


def test_shared_kwargs_count_once_per_member_that_receives_them(owner_client, settings):
    limit(settings, MAX_EXPANDED_BYTES=1_000_000)
    response = owner_client.post("/api/tasks/", amplified_swarm(20_000, 200), format="json")
    assert response.status_code == 413
    assert "the limit is 1000000" in response.json()["detail"]
    assert not Signature.objects.exists()
    # The same shared argument, to members that do not accept it, is stored once: accepted.
    noop = {**amplified_swarm(20_000, 200), "tasks": [{"task": "examples.noop"}] * 200}
    assert owner_client.post("/api/tasks/", noop, format="json").status_code == 201


def test_a_chain_of_swarms_counts_the_copies_at_every_level(owner_client, settings):
    limit(settings, MAX_EXPANDED_BYTES=1_000_000)
    inner = {"kind": "swarm", "tasks": [MEMBER] * 20}
    spec = {"kind": "chain", "kwargs": {"value": "x" * 20_000}, "steps": [inner, inner]}
    response = owner_client.post("/api/tasks/", spec, format="json")
    assert response.status_code == 413
    assert not Signature.objects.exists()


def test_per_member_callbacks_count_once_per_member(owner_client, settings):
    limit(settings, MAX_EXPANDED_BYTES=1_000_000)
    callback = {"task": "examples.echo", "kwargs": {"value": "x" * 5_000}}
    spec = {"kind": "swarm", "tasks": [{"task": "examples.noop"}] * 200, "task_on_success": [callback]}
    response = owner_client.post("/api/tasks/", spec, format="json")
    assert response.status_code == 413
    assert not Signature.objects.exists()


def test_a_workflow_under_the_limit_is_accepted_whole(owner_client, settings):
    limit(settings, MAX_EXPANDED_BYTES=1_000_000)
    response = owner_client.post("/api/tasks/", amplified_swarm(1_000, 100), format="json")
    assert response.status_code == 201, response.json()
    swarm = Signature.objects.get(pk=response.json()["id"])
    assert swarm.members.count() == 100
    assert swarm.members.first().kwargs == {"value": "x" * 1_000}


@pytest.mark.parametrize("atomic", [True, False])
def test_a_bulk_add_that_expands_past_the_limit_is_413_and_adds_nothing(owner, owner_client, settings, atomic):
    swarm = make(owner, {"kind": "swarm", "closed": False, "kwargs": {"value": "x" * 20_000}, "tasks": []})
    limit(settings, MAX_EXPANDED_BYTES=1_000_000)
    response = owner_client.post(url(swarm, "tasks"), {"tasks": [MEMBER] * 200, "atomic": atomic}, format="json")
    assert response.status_code == 413
    assert "ORCHESTRATOR_MAX_EXPANDED_BYTES" in response.json()["detail"]
    assert swarm.members.count() == 0
    assert owner_client.post(url(swarm, "tasks"), {"tasks": [MEMBER] * 10}, format="json").status_code == 201
    assert swarm.members.count() == 10


def test_a_bulk_add_counts_the_swarms_per_member_callbacks(owner, owner_client, settings):
    callback = {"task": "examples.echo", "kwargs": {"value": "x" * 5_000}}
    swarm = make(owner, {"kind": "swarm", "closed": False, "tasks": [], "task_on_error": [callback]})
    limit(settings, MAX_EXPANDED_BYTES=1_000_000)
    tasks = [{"task": "examples.noop"}] * 200
    response = owner_client.post(url(swarm, "tasks"), {"tasks": tasks}, format="json")
    assert response.status_code == 413
    assert swarm.members.count() == 0
