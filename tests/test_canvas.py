"""The Python canvas builds the same specs as the API and drives the same services."""

from __future__ import annotations

import pytest

from tasks_app.canvas import chain, edge, graph, sign, swarm
from tasks_app.models import Status
from tests.drain import drain

pytestmark = pytest.mark.django_db


def test_builders_produce_contract_specs():
    flow = chain([sign("examples.add", a=1, b=2), sign("examples.double")]).on_success(sign("examples.echo"))
    assert flow.spec() == {
        "kind": "chain", "kwargs": {},
        "steps": [{"task": "examples.add", "kwargs": {"a": 1, "b": 2}}, {"task": "examples.double", "kwargs": {}}],
        "on_success": [{"task": "examples.echo", "kwargs": {}}],
    }


def test_a_chain_runs_and_waits(owner):
    handle = chain([sign("examples.add", a=1, b=2), sign("examples.double")]).options(name="math").run(owner=owner)
    drain()
    assert handle.status == Status.COMPLETED and handle.result == 6
    assert handle.signature.name == "math"


def test_an_open_swarm_takes_members_then_closes(owner):
    handle = swarm([], max_concurrency=2, closed=False, task_on_success=[sign("examples.noop")]).run(owner=owner)
    result = handle.add_tasks([sign("examples.echo", value=i) for i in range(3)])
    assert len(result.added) == 3
    handle.add_task_and_run(sign("examples.echo", value=3))
    drain()
    assert handle.close().signature.status == Status.COMPLETED
    assert handle.result == [0, 1, 2, 3]


def test_a_graph_with_conditions(owner):
    flow = graph(
        {"c": sign("examples.classify", value=90), "hi": sign("examples.echo", value="H"),
         "lo": sign("examples.echo", value="L")},
        [edge("c", "hi", {"template": "label_is", "params": {"value": "high"}}),
         edge("c", "lo", {"template": "label_is", "params": {"value": "low"}})],
    )
    handle = flow.run(owner=owner)
    drain()
    assert handle.result == {"c": {"label": "high", "value": 90}, "hi": "H"}


def test_lifecycle_from_the_handle(owner):
    handle = sign("examples.noop").run(owner=owner)
    assert handle.pause().signature.status == Status.PAUSED
    assert handle.resume().signature.status == Status.QUEUED
    handle.cancel(confirm=True)
    assert drain() == []
