"""Bad input answers JSON {detail, code, errors} naming each bad field; never a 500."""

from __future__ import annotations

import pytest

from tasks_app.models import Signature
from tasks_app.services import execution
from tests.api_helpers import ECHO, make, url

pytestmark = pytest.mark.django_db


def errors_of(response) -> dict[str, str]:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] and body["detail"]
    return body["errors"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"task": "examples.nope"}, "task"),
        ({"kwargs": {"value": 1}}, "task"),
        ({"task": "examples.echo", "kwargs": [1]}, "kwargs"),
        ({"task": "examples.echo", "kwargs": {"nope": 1}}, "kwargs.nope"),
        ({"task": "examples.add"}, "kwargs.a"),
        ({**ECHO, "priority": "urgent"}, "priority"),
        ({**ECHO, "retries": "twice"}, "retries"),
        ({**ECHO, "tags": "a,b"}, "tags"),
        ({**ECHO, "colour": "red"}, "colour"),
        ({"kind": "workflow"}, "kind"),
        ({"kind": "chain", "steps": [ECHO]}, "steps"),
        ({"kind": "chain", "steps": [ECHO, {"task": "examples.nope"}]}, "steps[1].task"),
        ({"kind": "swarm", "tasks": [ECHO], "max_concurrency": 0}, "max_concurrency"),
        ({**ECHO, "run": "yes please"}, "run"),
        ({**ECHO, "idempotency_key": ""}, "idempotency_key"),
    ],
)
def test_a_bad_spec_names_the_field(owner_client, spec, field):
    errors = errors_of(owner_client.post("/api/tasks/", spec, format="json"))

    assert field in errors
    assert not Signature.objects.exists()


def test_a_graph_cycle_is_refused(owner_client):
    spec = {
        "kind": "graph",
        "nodes": {"a": ECHO, "b": ECHO},
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}],
    }

    errors = errors_of(owner_client.post("/api/tasks/", spec, format="json"))

    assert "cycle" in errors["edges"]


def test_malformed_json(owner_client):
    response = owner_client.post("/api/tasks/", data='{"task": ', content_type="application/json")

    assert errors_of(response).keys() == {"body"}
    assert response.json()["code"] == "parse_error"


def test_a_body_that_is_not_an_object(owner_client):
    assert errors_of(owner_client.post("/api/tasks/", [ECHO], format="json")) == {"body": "must be a JSON object"}


def test_an_oversize_body_is_413(owner_client, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_SPEC_BYTES": 2000}

    response = owner_client.post("/api/tasks/", {**ECHO, "kwargs": {"value": "x" * 5000}}, format="json")

    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert not Signature.objects.exists()


def test_an_oversize_bulk_add_is_413(owner_client, owner, settings):
    swarm = make(owner, {"kind": "swarm", "closed": False, "tasks": []})
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_SPEC_BYTES": 2000}

    response = owner_client.post(url(swarm, "tasks"), {"tasks": [ECHO] * 100}, format="json")

    assert response.status_code == 413
    assert swarm.members.count() == 0


def test_other_media_types_are_refused(owner_client):
    response = owner_client.post(
        "/api/tasks/", data="task=examples.echo", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "done"}, "status"),
        ({"kind": "job"}, "kind"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"parent": "x"}, "parent"),
        ({"ordering": "owner__password"}, "ordering"),
    ],
)
def test_bad_list_filters_name_the_parameter(owner_client, params, field):
    assert field in errors_of(owner_client.get("/api/tasks/", params))


def test_list_datetimes_with_any_offset_python_reads_are_taken_to_utc(owner_client, owner):
    """PostgreSQL refuses offsets past ±15:59 (a 500 before); Python reads up to ±23:59."""
    execution.submit({"task": "examples.noop"}, owner=owner, run=False)
    far_east = owner_client.get("/api/tasks/", {"created_before": "2999-01-03T15:42:47+23:20"})
    assert far_east.status_code == 200 and far_east.json()["count"] == 1
    assert owner_client.get("/api/tasks/", {"created_after": "2999-01-03T15:42:47-23:20"}).json()["count"] == 0
    assert "created_after" in errors_of(owner_client.get("/api/tasks/", {"created_after": "0001-01-01T00:10:00+23:00"}))


@pytest.mark.parametrize("path", ["/api/tasks/99999999999999999999999/", "/api/tasks/abc/", "/api/tasks/123/"])
def test_unknown_ids_are_404(owner_client, path):
    response = owner_client.get(path)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_unknown_format_is_400(owner_client):
    assert "format" in errors_of(owner_client.get("/api/tasks/", {"format": "xml"}))


def test_errors_carry_detail_and_code(owner_client, owner):
    sig = make(owner, ECHO)

    response = owner_client.post(url(sig, "resume"))

    assert response.status_code == 409
    assert response.json() == {"detail": response.json()["detail"], "code": "invalid_transition"}
    assert "pending" in response.json()["detail"]
