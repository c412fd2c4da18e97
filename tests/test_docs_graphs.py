"""The examples of docs/graphs.md run as written and end as documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.conf import settings

from tasks_app.services import approvals, execution
from tests.drain import drain

pytestmark = pytest.mark.django_db
DOC = Path(settings.BASE_DIR) / "docs" / "graphs.md"
BLOCK = re.compile(r"```json (graph|expect):(\w+)\n(.*?)```", re.S)


def blocks() -> dict[str, dict]:
    found: dict[str, dict] = {}
    for kind, name, body in BLOCK.findall(DOC.read_text()):
        found.setdefault(name, {})[kind] = json.loads(body)
    return found


def test_every_example_has_an_expectation():
    examples = blocks()
    assert {"pipeline", "ab", "fallback", "validation"} <= set(examples)
    assert all(set(parts) == {"graph", "expect"} for parts in examples.values())


@pytest.mark.parametrize("name", ["pipeline", "ab", "fallback", "validation"])
def test_documented_example(owner, name):
    example = blocks()[name]
    graph = execution.submit(example["graph"], owner=owner)
    drain()
    expect = example["expect"]
    if "approve" in expect:
        approvals.decide(graph.members.get(node_key=expect["approve"]), approve=True, actor="doc")
        drain()
    graph.refresh_from_db()
    assert graph.status == expect["status"]
    assert dict(graph.members.values_list("node_key", "status")) == expect["nodes"]
