"""Graphs under hostile input: regular expressions that backtrack, graphs too large, nodes gone missing.

The end-to-end test runs real workers: a pattern that takes Python's backtracking engine hours must
neither hold the graph's worker nor the database write lock that another user's task needs.
"""

from __future__ import annotations

import pytest

from tasks_app.models import Event, Signature, Status
from tasks_app.services import execution
from tests.api_helpers import submitted
from tests.drain import drain, step

CATASTROPHIC = "(a+)+$"
SUBJECT = "a" * 40 + "!"  # backtracking tries every split of the a's before giving up: 2**40 paths


def matches_graph(pattern: str, value: str) -> dict:
    return {
        "kind": "graph",
        "nodes": {"source": {"task": "examples.echo", "kwargs": {"value": value}},
                  "target": {"task": "examples.echo", "kwargs": {"value": "taken"}}},
        "edges": [{"from": "source", "to": "target", "when": {"op": "matches", "value": pattern}}],
    }


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_catastrophic_pattern_ends_its_graph_and_another_users_task_completes_meanwhile(
    owner_client, colleague_client, workers
):
    workers.start(2)
    graph = submitted(owner_client, matches_graph(CATASTROPHIC, SUBJECT))
    other = submitted(colleague_client, {"task": "examples.sleep", "kwargs": {"seconds": 1, "step": 0.5}})
    workers.drain(lambda: Signature.objects.get(pk=graph.pk).status == Status.COMPLETED, timeout=20)
    workers.drain(lambda: Signature.objects.get(pk=other.pk).status == Status.COMPLETED, timeout=20)
    graph.refresh_from_db()
    assert graph.config["edge_states"] == {"0": False}
    assert graph.members.get(node_key="target").status == Status.SKIPPED
    assert graph.result == {"source": SUBJECT}


@pytest.mark.django_db
def test_the_pattern_still_routes_when_it_matches(owner):
    graph = execution.submit(matches_graph(CATASTROPHIC, "a" * 40), owner=owner)
    drain()
    graph.refresh_from_db()
    assert graph.status == Status.COMPLETED and graph.result == {"source": "a" * 40, "target": "taken"}


@pytest.mark.django_db
@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?<=a)b", r"(?=x)"])
def test_a_pattern_re2_refuses_is_a_400_naming_the_field(owner_client, pattern):
    response = owner_client.post("/api/tasks/", matches_graph(pattern, "x"), format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == ["edges[0].when.value"] and "RE2" in errors["edges[0].when.value"]
    assert not Signature.objects.exists()


def wide_graph(nodes: int, edges_per_node: int = 1) -> dict:
    names = [f"n{i}" for i in range(nodes)]
    return {
        "kind": "graph",
        "nodes": {name: {"task": "examples.noop"} for name in names},
        "edges": [{"from": names[0], "to": name} for name in names[1:] for _ in range(edges_per_node)],
    }


@pytest.mark.django_db
def test_a_graph_past_the_node_limit_is_a_400_naming_nodes(owner_client, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_GRAPH_NODES": 50}
    response = owner_client.post("/api/tasks/", wide_graph(51), format="json")
    assert response.status_code == 400
    assert "limit of 50 nodes" in response.json()["errors"]["nodes"]
    assert owner_client.post("/api/tasks/", wide_graph(50), format="json").status_code == 201


@pytest.mark.django_db
def test_a_graph_past_the_edge_limit_is_a_400_naming_edges(owner_client, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_GRAPH_EDGES": 20}
    response = owner_client.post("/api/tasks/", wide_graph(8, edges_per_node=3), format="json")
    assert response.status_code == 400
    assert "limit of 20 edges" in response.json()["errors"]["edges"]
    assert not Signature.objects.exists()


@pytest.mark.django_db
def test_a_large_fan_out_graph_runs_to_its_end(owner):
    graph = execution.submit(wide_graph(300), owner=owner)
    drain()
    graph.refresh_from_db()
    assert graph.status == Status.COMPLETED and len(graph.result) == 300


@pytest.mark.django_db
def test_a_purged_pending_node_counts_as_skipped_and_the_graph_ends(owner):
    graph = execution.submit({
        "kind": "graph",
        "nodes": {"a": {"task": "examples.echo", "kwargs": {"value": 1}}, "b": {"task": "examples.noop"},
                  "c": {"task": "examples.noop"}, "d": {"task": "examples.echo", "kwargs": {"value": 4}}},
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "a", "to": "d"}],
    }, owner=owner)
    graph.members.get(node_key="b").delete()  # what purge does to a soft-deleted pending node
    drain()
    graph.refresh_from_db()
    assert graph.status == Status.COMPLETED
    assert graph.result == {"a": 1, "d": 4}
    assert graph.members.get(node_key="c").status == Status.SKIPPED
    missing = Event.objects.filter(signature=graph, type="node_missing")
    assert [e.data["node"] for e in missing] == ["b"]
    assert graph.config["missing_nodes"] == ["b"]


@pytest.mark.django_db
def test_a_node_missing_before_the_graph_starts_is_recorded_once(owner):
    graph = execution.submit({
        "kind": "graph",
        "nodes": {"a": {"task": "examples.noop"}, "b": {"task": "examples.noop"}, "c": {"task": "examples.noop"}},
        "edges": [{"from": "a", "to": "c"}, {"from": "b", "to": "c"}],
    }, owner=owner, run=False)
    graph.members.get(node_key="b").delete()
    execution.start(graph)
    step(1)
    drain()
    graph.refresh_from_db()
    assert graph.status == Status.COMPLETED and set(graph.result) == {"a", "c"}
    assert Event.objects.filter(signature=graph, type="node_missing").count() == 1


@pytest.mark.django_db
def test_an_edge_condition_of_more_than_100_parts_is_a_400_naming_it(owner_client):
    spec = matches_graph("a", "a")
    spec["edges"][0]["when"] = {"any": [{"op": "matches", "value": "a"}] * 100}  # 101 parts with the "any"
    response = owner_client.post("/api/tasks/", spec, format="json")
    assert response.status_code == 400
    assert "at most 100 parts" in response.json()["errors"]["edges[0].when"]
    spec["edges"][0]["when"] = {"any": [{"op": "matches", "value": "a"}] * 99}
    assert owner_client.post("/api/tasks/", spec, format="json").status_code == 201
