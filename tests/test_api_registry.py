"""GET /api/registry/ and /api/graph-templates/: what specs and graph edges can name."""

from __future__ import annotations

import pytest

from tasks_app.services.conditions import TEMPLATES

pytestmark = pytest.mark.django_db

EXAMPLES = [
    "examples.noop",
    "examples.echo",
    "examples.double",
    "examples.add",
    "examples.sleep",
    "examples.fail",
    "examples.classify",
    "examples.log",
    "examples.build_crm",
]


def test_the_registry_lists_every_example_with_its_parameters(owner_client):
    tasks = {t["name"]: t for t in owner_client.get("/api/registry/").json()}

    assert set(EXAMPLES) <= set(tasks)
    add = {p["name"]: p for p in tasks["examples.add"]["params"]}
    assert add["a"]["required"] is True and add["b"] == {**add["b"], "required": False, "default": 0}
    assert tasks["examples.build_crm"]["steps"][0] == "Create database tables"
    assert tasks["examples.echo"]["description"] == "Returns value."


def test_the_graph_templates(owner_client):
    templates = {t["name"]: t for t in owner_client.get("/api/graph-templates/").json()}

    assert set(templates) == set(TEMPLATES)
    assert templates["threshold"]["params"]["path"] == {"type": "string", "required": True}
    assert templates["label_is"]["description"]
