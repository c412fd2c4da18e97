"""Logs: capture in batches, level filter, full-text search, export, across a workflow."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tasks_app.services import execution, logs
from tests.drain import drain

pytestmark = pytest.mark.django_db


def test_a_workflow_logs_are_filtered_searched_and_exported(owner):
    chain = execution.submit({"kind": "chain", "steps": [
        {"task": "examples.log", "kwargs": {"lines": 3, "level": "INFO"}},
        {"task": "examples.log", "kwargs": {"lines": 2, "level": "ERROR"}},
    ]}, owner=owner)
    drain()
    assert logs.for_tree(chain).count() == 5
    assert logs.for_tree(chain, min_level=logs.parse_level("warning")).count() == 2
    assert logs.for_tree(chain, q="3").count() == 3
    assert [e.message for e in logs.for_tree(chain, q="2 1")] == ["line 1 of 2"]  # every word, any order
    assert logs.for_tree(chain, q='"quoted OR *').count() == 0  # search syntax is data, not a query
    body, kind = logs.export(logs.for_tree(chain), "json")
    assert kind == "application/json" and len(json.loads(body)) == 5
    body, _ = logs.export(logs.for_tree(chain), "csv")
    assert list(csv.DictReader(io.StringIO(body)))[0]["message"] == "line 1 of 3"
    body, _ = logs.export(logs.for_tree(chain), "text")
    assert body.count("\n") == 5 and "ERROR" in body
    with pytest.raises(ValueError):
        logs.export([], "xml")
    with pytest.raises(ValueError):
        logs.parse_level("LOUD")


def test_many_lines_are_stored_in_batches_and_none_is_lost(owner, django_assert_max_num_queries):
    sig = execution.submit({"task": "examples.log", "kwargs": {"lines": 5000}}, owner=owner)
    with django_assert_max_num_queries(400):
        drain()
    assert sig.logs.count() == 5000
    assert logs.for_tree(sig, q="4999").count() == 1
