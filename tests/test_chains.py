"""Chains: order, result passing, shared kwargs, failure stops the chain, callbacks once."""

from __future__ import annotations

import pytest

from tasks_app.models import Signature, Status
from tasks_app.services import execution
from tests.drain import drain

pytestmark = pytest.mark.django_db


def test_steps_run_in_order_each_receiving_the_previous_result(owner):
    chain = execution.submit({"kind": "chain", "steps": [
        {"task": "examples.add", "kwargs": {"a": 1, "b": 2}},
        {"task": "examples.double"},
        {"task": "examples.add", "kwargs": {"a": 10}},
    ], "on_success": [{"task": "examples.echo"}]}, owner=owner)
    order = drain()
    chain.refresh_from_db()
    steps = list(chain.members.order_by("position"))
    assert [sig_id for sig_id, _ in order][:3] == [s.pk for s in steps]
    assert [s.result for s in steps] == [3, 6, 16]
    assert (chain.status, chain.result) == (Status.COMPLETED, 16)
    callback = chain.callbacks.get()
    assert (callback.status, callback.inbound, callback.runs.count()) == (Status.COMPLETED, {"input": 16}, 1)


def test_chain_kwargs_reach_every_step_that_accepts_them(owner):
    chain = execution.submit({"kind": "chain", "kwargs": {"b": 5}, "steps": [
        {"task": "examples.add", "kwargs": {"a": 1}},
        {"task": "examples.double"},
        {"task": "examples.add", "kwargs": {"a": 0}},
    ]}, owner=owner)
    drain()
    assert [s.result for s in chain.members.order_by("position")] == [6, 12, 17]


def test_a_failing_step_stops_the_chain_and_fires_error_callbacks_once(owner):
    chain = execution.submit({"kind": "chain", "steps": [
        {"task": "examples.echo", "kwargs": {"value": 1}, "on_success": [{"task": "examples.noop"}]},
        {"task": "examples.fail", "kwargs": {"message": "step two broke"}},
        {"task": "examples.noop"},
    ], "on_success": [{"task": "examples.noop"}], "on_error": [{"task": "examples.echo"}]}, owner=owner)
    drain()
    chain.refresh_from_db()
    first, second, third = chain.members.order_by("position")
    assert first.callbacks.get().status == Status.COMPLETED  # a step's own callbacks fire
    assert (second.status, third.status, third.runs.count()) == (Status.FAILED, Status.SKIPPED, 0)
    assert chain.status == Status.FAILED and chain.error["message"] == "step two broke" and chain.error["step"] == 2
    assert chain.callbacks.get(callback_on="success").status == Status.SKIPPED
    on_error = chain.callbacks.get(callback_on="error")
    assert on_error.status == Status.COMPLETED and on_error.runs.count() == 1


def test_a_chain_containing_a_swarm_passes_the_list_of_results_on(owner):
    chain = execution.submit({"kind": "chain", "steps": [
        {"kind": "swarm", "tasks": [{"task": "examples.echo", "kwargs": {"value": v}} for v in (1, 2, 3)]},
        {"task": "examples.echo"},
    ]}, owner=owner)
    drain()
    chain.refresh_from_db()
    assert chain.status == Status.COMPLETED
    last = chain.members.get(position=1)
    assert last.inbound == {"input": [1, 2, 3]}


def test_advance_twice_is_harmless(owner):
    from tasks_app.services import containers

    chain = execution.submit({"kind": "chain", "steps": [{"task": "examples.noop"}, {"task": "examples.noop"}]},
                             owner=owner)
    drain()
    chain.refresh_from_db()
    containers.advance(chain)
    containers.advance(chain)
    assert Signature.objects.filter(parent=chain).exclude(status=Status.COMPLETED).count() == 0
    assert sum(m.runs.count() for m in chain.members.all()) == 2
