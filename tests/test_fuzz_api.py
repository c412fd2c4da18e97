"""Fuzzing the API with schemathesis: every operation of ``/api/schema/``, with data that matches the
schema and data that breaks it, sent in-process to the WSGI application as a signed-in user who owns a
few tasks. Every answer must be free of server errors and match the schema (status code, content
type, body).

``FUZZ_API_EXAMPLES`` (default 30) bounds the examples per operation and generation mode. Each
operation's count is printed at the end of the module (run with ``-s`` to see it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orchestrator_site.wsgi import application
from tasks_app.models import Notification, Status
from tests.api_helpers import ECHO, make, set_status

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
TOTALS: dict[str, dict[str, int]] = {}


def operation_labels() -> list[str]:
    """``METHOD /path`` of every operation, read from the schema generator (no HTTP, no database)."""
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    return [f"{method.upper()} {path}" for path, ops in paths.items() for method in ops]


@pytest.fixture(scope="module", autouse=True)
def report_totals() -> Iterator[None]:
    yield
    examples = sum(t["examples"] for t in TOTALS.values())
    print(f"\nschemathesis: {len(TOTALS)} operations, {examples} examples")
    for label, counts in sorted(TOTALS.items()):
        print(f"  {label}: {counts['examples']} examples")


@pytest.fixture
def fuzz_schema(client) -> Iterator[schemathesis.BaseSchema]:
    schema = schemathesis.openapi.from_dict(json.loads(client.get("/api/schema/?format=json").content))
    schema.app = application
    # Requests through the WSGI handler keep the test's connection and transaction, as Django's test
    # client arranges for its own requests.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield schema
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def known_ids(owner) -> dict[str, list[int]]:
    """Tasks in several states and a notification, so that generated ids sometimes hit something."""
    swarm = make(owner, {"kind": "swarm", "closed": False, "tasks": [ECHO]})
    chain = make(owner, {"kind": "chain", "steps": [ECHO, {"task": "examples.double"}]})
    failed = set_status(make(owner, ECHO), Status.FAILED)
    waiting = set_status(make(owner, ECHO), Status.WAITING_APPROVAL)
    note = Notification.objects.create(owner=owner, event="task_started", title="hi", deliveries={"in_app": "sent"})
    return {"tasks": [make(owner, ECHO).pk, swarm.pk, chain.pk, failed.pk, waiting.pk], "notifications": [note.pk]}


def strategies(operation, ids: list[int]) -> st.SearchStrategy:
    modes = [GenerationMode.POSITIVE]
    if operation.path_parameters or operation.query or operation.body:
        modes.append(GenerationMode.NEGATIVE)
    options = [operation.as_strategy(generation_mode=mode) for mode in modes]
    if "{id}" in operation.path:
        options.append(st.sampled_from(ids).flatmap(lambda pk: operation.as_strategy(path_parameters={"id": pk})))
    return st.one_of(options)


@pytest.mark.parametrize("label", operation_labels())
def test_operation_answers_within_its_schema(label, fuzz_schema, known_ids, owner):
    operation = fuzz_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in /api/schema/"
    ids = known_ids["notifications" if "notifications" in label else "tasks"]
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    counts = TOTALS.setdefault(label, {"examples": 0})

    @settings(
        max_examples=MAX_EXAMPLES * 2,
        deadline=None,
        database=None,
        derandomize=bool(os.environ.get("CI")),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategies(operation, ids))
    def answers_within_schema(case) -> None:
        counts["examples"] += 1
        case.call_and_validate(headers=headers, checks=CHECKS)

    answers_within_schema()
