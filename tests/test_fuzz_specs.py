"""Random specs through ``POST /api/tasks/``: tasks, chains, swarms and graphs nested in each other,
with callbacks. Every valid one is created (201, one row per node); every spec with one defect
planted somewhere in its tree is refused with a 4xx that names the defect's path, and nothing of it
is written (the signature count does not move)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_app.models import Signature

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("FUZZ_SPEC_EXAMPLES", "120"))
KWARGS_LIMIT = 2_000  # bytes; set low so that the oversize case stays small
Spec = dict[str, Any]

# Text a database stores: no NUL characters, no lone surrogates (both are refused as unstorable).
text = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
small_json = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(text, max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(text, max_size=8), inner, max_size=3),
    max_leaves=6,
)
numbers = st.integers(-100, 100) | st.floats(-100, 100, allow_nan=False)
tasks = st.one_of(
    st.just({"task": "examples.noop"}),
    st.builds(lambda v: {"task": "examples.echo", "kwargs": {"value": v}}, small_json),
    st.builds(lambda a: {"task": "examples.add", "kwargs": {"a": a}}, numbers),
    st.builds(lambda v: {"task": "examples.classify", "kwargs": {"value": v}}, numbers),
    st.just({"task": "examples.double"}),
)
options = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(text, max_size=40),
        "priority": st.sampled_from(["high", "medium", "low"]),
        "tags": st.lists(st.text(text, min_size=1, max_size=10), max_size=3),
        "category": st.text(text, max_size=20),
    },
)
conditions = st.one_of(
    st.builds(lambda on: {"on": on}, st.sampled_from(["success", "failure", "always"])),
    st.just({"path": "label", "op": "eq", "value": "high"}),
    st.just({"any": [{"on": "failure"}, {"path": "value", "op": "gte", "value": 50}]}),
)


def with_options(spec_strategy: st.SearchStrategy[Spec]) -> st.SearchStrategy[Spec]:
    return st.builds(lambda spec, extra: {**spec, **extra}, spec_strategy, options)


def chain(children: st.SearchStrategy[Spec]) -> st.SearchStrategy[Spec]:
    return st.builds(lambda steps: {"kind": "chain", "steps": steps}, st.lists(children, min_size=2, max_size=3))


def swarm(children: st.SearchStrategy[Spec]) -> st.SearchStrategy[Spec]:
    return st.builds(
        lambda members, limit, closed: {"kind": "swarm", "tasks": members, "max_concurrency": limit, "closed": closed},
        st.lists(children, max_size=3),
        st.integers(1, 5),
        st.booleans(),
    )


@st.composite
def graph(draw: st.DrawFn, children: st.SearchStrategy[Spec]) -> Spec:
    """Nodes in a drawn order; edges only point forward in it, so the graph is acyclic."""
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), min_size=1, max_size=4, unique=True))
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs))) if pairs else []
    edges = [{"from": a, "to": b, "when": draw(conditions)} for a, b in chosen]
    return {"kind": "graph", "nodes": {name: draw(children) for name in names}, "edges": edges}


def with_callbacks(spec_strategy: st.SearchStrategy[Spec]) -> st.SearchStrategy[Spec]:
    callbacks = st.fixed_dictionaries(
        {}, optional={"on_success": st.lists(tasks, max_size=1), "on_error": st.lists(tasks, max_size=1)}
    )
    return st.builds(lambda spec, extra: {**spec, **extra}, spec_strategy, callbacks)


specs = st.recursive(
    with_options(tasks),
    lambda children: with_callbacks(with_options(st.one_of(chain(children), swarm(children), graph(children)))),
    max_leaves=8,
)


# Where a spec's nodes are, and the defects that can be planted in them ------------------------------


def nodes(spec: Spec, path: str = "") -> Iterator[tuple[Spec, str]]:
    """Every spec in the tree with its path as the validator writes it (``steps[1].nodes.a``)."""
    yield spec, path
    join = (lambda key: f"{path}.{key}") if path else (lambda key: key)
    for key in ("steps", "tasks", "on_success", "on_error"):
        for i, child in enumerate(spec.get(key, [])):
            yield from nodes(child, f"{join(key)}[{i}]")
    for name, child in spec.get("nodes", {}).items():
        yield from nodes(child, join(f"nodes.{name}"))


def at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


Defect = Callable[[Spec, str], str | None]  # plants a defect in a node; the path it must be named by


def unknown_task(node: Spec, path: str) -> str | None:
    if "task" not in node:
        return None
    node["task"] = "examples.no_such_task"
    return at(path, "task")


def unknown_kind(node: Spec, path: str) -> str:
    node["kind"] = "blob"
    return at(path, "kind")


def unknown_field(node: Spec, path: str) -> str:
    node["colour"] = "blue"
    return at(path, "colour")


def bad_priority(node: Spec, path: str) -> str:
    node["priority"] = "urgent"
    return at(path, "priority")


def bad_tags(node: Spec, path: str) -> str:
    node["tags"] = ["ok", 7]
    return at(path, "tags")


def long_name(node: Spec, path: str) -> str:
    node["name"] = "n" * 201
    return at(path, "name")


def kwargs_not_an_object(node: Spec, path: str) -> str:
    node["kwargs"] = [1, 2]
    return at(path, "kwargs")


def unknown_argument(node: Spec, path: str) -> str | None:
    if "task" not in node:
        return None
    node.setdefault("kwargs", {})["no_such_argument"] = 1
    return at(path, "kwargs.no_such_argument")


def missing_argument(node: Spec, path: str) -> str | None:
    if "task" not in node:
        return None
    node.update(task="examples.add", kwargs={})
    return at(path, "kwargs.a")


def lonely_step(node: Spec, path: str) -> str | None:
    if node.get("kind") != "chain":
        return None
    node["steps"] = node["steps"][:1]
    return at(path, "steps")


def graph_cycle(node: Spec, path: str) -> str | None:
    names = list(node.get("nodes", {}))
    if node.get("kind") != "graph" or len(names) < 2:
        return None
    node["edges"] = [{"from": names[0], "to": names[1]}, {"from": names[1], "to": names[0]}]
    return at(path, "edges")


def edge_to_nowhere(node: Spec, path: str) -> str | None:
    if node.get("kind") != "graph":
        return None
    node["edges"] = [*node["edges"], {"from": next(iter(node["nodes"])), "to": "nowhere"}]
    return at(path, f"edges[{len(node['edges']) - 1}].to")


def bad_condition(node: Spec, path: str) -> str | None:
    if node.get("kind") != "graph" or not node["edges"]:
        return None
    node["edges"][0]["when"] = {"path": "label", "op": "resembles", "value": 1}
    return at(path, "edges[0].when")


DEFECTS: list[Defect] = [
    unknown_task,
    unknown_kind,
    unknown_field,
    bad_priority,
    bad_tags,
    long_name,
    kwargs_not_an_object,
    unknown_argument,
    missing_argument,
    lonely_step,
    graph_cycle,
    edge_to_nowhere,
    bad_condition,
]


@st.composite
def defective_specs(draw: st.DrawFn) -> tuple[Spec, str]:
    """A valid spec with one defect planted in one of its nodes, and the path that names it."""
    spec = unshared(draw(specs))
    for _ in range(10):
        defect = draw(st.sampled_from(DEFECTS))
        for node, path in draw(st.permutations(list(nodes(spec)))):
            named = defect(node, path)  # None, and the node untouched, where the defect cannot go
            if named is not None:
                return spec, named
    return spec, unknown_kind(spec, "")


def unshared(spec: Spec) -> Spec:
    """A copy in which no two places share one dict (strategies may hand out the same object twice),
    so that a defect planted in one node stays in that node."""
    return json.loads(json.dumps(spec))


def names(errors: dict[str, str], path: str) -> bool:
    return any(key == path or key.startswith((f"{path}.", f"{path}[")) for key in errors)


def tree_size(spec: Spec) -> int:
    return sum(1 for _ in nodes(spec))


# The tests -------------------------------------------------------------------------------------------

fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def test_valid_specs_are_created_whole(owner_client):
    @fuzz
    @given(spec=specs)
    def created(spec: Spec) -> None:
        before = Signature.objects.count()
        response = owner_client.post("/api/tasks/", {**spec, "run": False}, format="json")
        assert response.status_code == 201, response.json()
        assert Signature.objects.count() - before == tree_size(spec)

    created()


def test_a_defect_anywhere_is_named_and_nothing_is_written(owner_client):
    @fuzz
    @given(case=defective_specs())
    def refused(case: tuple[Spec, str]) -> None:
        spec, path = case
        before = Signature.objects.count()
        response = owner_client.post("/api/tasks/", {**spec, "run": False}, format="json")
        assert response.status_code == 400, response.json()
        assert names(response.json()["errors"], path), (path, response.json()["errors"])
        assert Signature.objects.count() == before

    refused()


def test_oversize_kwargs_anywhere_are_named_with_413(owner_client, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_KWARGS_BYTES": KWARGS_LIMIT}

    @fuzz
    @given(spec=specs, data=st.data())
    def too_large(spec: Spec, data: st.DataObject) -> None:
        spec = unshared(spec)
        node, path = data.draw(st.sampled_from(list(nodes(spec))))
        node["kwargs"] = {**node.get("kwargs", {}), "value": "x" * KWARGS_LIMIT}
        before = Signature.objects.count()
        response = owner_client.post("/api/tasks/", {**spec, "run": False}, format="json")
        assert response.status_code == 413, response.json()
        assert at(path, "kwargs") in response.json()["detail"]
        assert Signature.objects.count() == before

    too_large()
