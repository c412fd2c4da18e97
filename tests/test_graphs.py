"""Graphs: validation, routing on outputs, fan-out, joins, skip propagation and failure paths."""

from __future__ import annotations

import pytest

from tasks_app.models import Signature, Status
from tasks_app.services import execution
from tasks_app.services.errors import SpecError
from tests.drain import drain

pytestmark = pytest.mark.django_db


def node_statuses(graph: Signature) -> dict[str, str]:
    return dict(graph.members.values_list("node_key", "status"))


def classify_graph(value: int) -> dict:
    return {
        "kind": "graph",
        "nodes": {
            "classify": {"task": "examples.classify", "kwargs": {"value": value}},
            "big": {"task": "examples.echo", "kwargs": {"value": "big"}},
            "small": {"task": "examples.echo", "kwargs": {"value": "small"}},
            "report": {"task": "examples.echo", "kwargs": {"value": "report"}},
        },
        "edges": [
            {"from": "classify", "to": "big", "when": {"template": "label_is", "params": {"value": "high"}}},
            {"from": "classify", "to": "small", "when": {"path": "label", "op": "eq", "value": "low"}},
            {"from": "big", "to": "report"},
            {"from": "small", "to": "report"},
        ],
        "on_success": [{"task": "examples.echo"}],
    }


@pytest.mark.parametrize(("value", "taken", "skipped"), [(70, "big", "small"), (10, "small", "big")])
def test_routes_on_the_classifier_output_and_skips_the_other_branch(owner, value, taken, skipped):
    graph = execution.submit(classify_graph(value), owner=owner)
    drain()
    graph.refresh_from_db()
    statuses = node_statuses(graph)
    assert statuses[taken] == Status.COMPLETED and statuses[skipped] == Status.SKIPPED
    assert statuses["report"] == Status.COMPLETED  # a join runs when at least one input was taken
    assert graph.status == Status.COMPLETED
    assert graph.result == {"classify": {"label": "high" if value >= 50 else "low", "value": value},
                            taken: taken, "report": "report"}
    states = graph.config["edge_states"]
    assert sorted(states.values()) == [False, False, True, True]
    assert graph.callbacks.get().runs.count() == 1


def test_fan_out_runs_in_parallel_and_a_join_receives_all_inputs(owner):
    graph = execution.submit({
        "kind": "graph",
        "nodes": {"start": {"task": "examples.echo", "kwargs": {"value": 2}},
                  "a": {"task": "examples.double"}, "b": {"task": "examples.add", "kwargs": {"a": 1}},
                  "join": {"task": "examples.echo"}},
        "edges": [{"from": "start", "to": "a"}, {"from": "start", "to": "b"},
                  {"from": "a", "to": "join"}, {"from": "b", "to": "join"}],
    }, owner=owner)
    from tests.drain import step

    step(1)
    assert set(graph.members.filter(status=Status.QUEUED).values_list("node_key", flat=True)) == {"a", "b"}
    drain()
    join = graph.members.get(node_key="join")
    assert join.inbound == {"input": {"a": 4, "b": 3}}


def test_skips_propagate_and_unreached_join_is_skipped(owner):
    graph = execution.submit({
        "kind": "graph",
        "nodes": {"c": {"task": "examples.classify", "kwargs": {"value": 1}},
                  "x": {"task": "examples.noop"}, "y": {"task": "examples.noop"}, "z": {"task": "examples.noop"}},
        "edges": [{"from": "c", "to": "x", "when": {"template": "label_is", "params": {"value": "high"}}},
                  {"from": "x", "to": "y"}, {"from": "y", "to": "z", "when": {"on": "always"}}],
    }, owner=owner)
    drain()
    graph.refresh_from_db()
    assert node_statuses(graph) == {"c": "completed", "x": "skipped", "y": "skipped", "z": "skipped"}
    assert graph.status == Status.COMPLETED


def test_a_failure_edge_routes_to_an_alternative_node(owner):
    graph = execution.submit({
        "kind": "graph",
        "nodes": {"try": {"task": "examples.fail", "kwargs": {"message": "primary down"}},
                  "fallback": {"task": "examples.echo", "kwargs": {"value": "used fallback"}},
                  "next": {"task": "examples.noop"}},
        "edges": [{"from": "try", "to": "fallback", "when": {"template": "on_failure_retry_path"}},
                  {"from": "try", "to": "next"}],
    }, owner=owner)
    drain()
    graph.refresh_from_db()
    assert node_statuses(graph) == {"try": "failed", "fallback": "completed", "next": "skipped"}
    assert graph.status == Status.COMPLETED
    assert graph.members.get(node_key="fallback").inbound["error"]["message"] == "primary down"


def test_a_failure_without_a_failure_edge_fails_the_graph_after_running_branches(owner):
    graph = execution.submit({
        "kind": "graph",
        "nodes": {"bad": {"task": "examples.fail"}, "good": {"task": "examples.echo", "kwargs": {"value": 1}},
                  "after": {"task": "examples.noop"}},
        "edges": [{"from": "bad", "to": "after"}],
        "on_error": [{"task": "examples.noop"}],
    }, owner=owner)
    drain()
    graph.refresh_from_db()
    assert node_statuses(graph) == {"bad": "failed", "good": "completed", "after": "skipped"}
    assert graph.status == Status.FAILED and graph.error["node"] == "bad"
    assert graph.callbacks.get().runs.count() == 1


def test_nodes_can_be_containers_and_graphs_nest_in_chains(owner):
    inner = {"kind": "graph", "nodes": {"s": {"kind": "swarm", "tasks": [{"task": "examples.echo", "kwargs": {"value": i}}
                                                                            for i in range(3)]},
                                        "c": {"kind": "chain", "steps": [{"task": "examples.echo", "kwargs": {"value": 4}},
                                                                         {"task": "examples.double"}]}},
             "edges": [{"from": "s", "to": "c"}]}
    chain = execution.submit({"kind": "chain", "steps": [inner, {"task": "examples.echo"}]}, owner=owner)
    drain()
    chain.refresh_from_db()
    assert chain.status == Status.COMPLETED
    assert chain.members.get(position=1).inbound == {"input": {"s": [0, 1, 2], "c": 8}}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"kind": "graph", "nodes": {}}, "nodes"),
        ({"kind": "graph", "nodes": {"a": {"task": "examples.noop"}}, "edges": [{"from": "a", "to": "b"}]},
         "edges[0].to"),
        ({"kind": "graph", "nodes": {"a": {"task": "examples.noop"}, "b": {"task": "examples.noop"}},
          "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]}, "edges"),
        ({"kind": "graph", "nodes": {"a": {"task": "nope"}}}, "nodes.a.task"),
        ({"kind": "graph", "nodes": {"a": {"task": "examples.noop"}, "b": {"task": "examples.noop"}},
          "edges": [{"from": "a", "to": "b", "when": {"template": "nope"}}]}, "edges[0].when.template"),
        ({"kind": "graph", "nodes": {"a": {"task": "examples.noop"}, "b": {"task": "examples.noop"}},
          "edges": [{"from": "a", "to": "b", "when": {"path": "x", "op": "??"}}]}, "edges[0].when.op"),
    ],
)
def test_bad_graphs_are_refused_naming_the_culprit(owner, spec, field):
    with pytest.raises(SpecError) as info:
        execution.submit(spec, owner=owner)
    assert field in info.value.errors, info.value.errors
    assert not Signature.objects.exists()


def test_cycle_error_names_the_cycle(owner):
    spec = {"kind": "graph", "nodes": {n: {"task": "examples.noop"} for n in "abc"},
            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "a"}]}
    with pytest.raises(SpecError) as info:
        execution.submit(spec, owner=owner)
    assert "a -> b -> c -> a" in info.value.errors["edges"]
