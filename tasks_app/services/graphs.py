"""Graphs: nodes are specs, edges carry conditions evaluated on the source node's outcome.

When a node ends each outgoing edge resolves to taken or not. A node runs when all incoming edges
are resolved and at least one was taken; otherwise it is skipped, which resolves its own outgoing
edges as not taken. Edge states live in the graph's config (``edge_states``) for the graph view.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from typing import Any

from django.utils import timezone

from ..models import Signature, Status
from . import conditions, execution, tree

NODE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
DEFAULT_WHEN = {"on": "success"}


def validate_graph(v, raw: dict, path: str, depth: int, out: dict) -> None:
    """Called by the spec validator for ``kind: graph``; ``v`` collects errors by path."""
    nodes, edges = raw.get("nodes"), raw.get("edges", [])
    nodes_path, edges_path = f"{path}.nodes" if path else "nodes", f"{path}.edges" if path else "edges"
    if not isinstance(nodes, dict) or not nodes:
        v.error(nodes_path, "a graph needs an object of named nodes")
        return
    out["nodes"] = {}
    for key, spec in nodes.items():
        if not NODE_KEY.match(key):
            v.error(f"{nodes_path}.{key}", "node names are 1-100 letters, digits, _ . -")
        out["nodes"][key] = v.spec(spec, f"{nodes_path}.{key}", depth + 1, out["kwargs"])
    if not isinstance(edges, list):
        v.error(edges_path, "must be a list of edges")
        return
    out["edges"] = [_edge(v, e, f"{edges_path}[{i}]", nodes) for i, e in enumerate(edges)]
    if not v.errors:
        cycle = find_cycle(list(nodes), out["edges"])
        if cycle:
            v.error(edges_path, f"the graph has a cycle: {' -> '.join(cycle)}")


def _edge(v, raw: Any, path: str, nodes: dict) -> dict:
    if not isinstance(raw, dict):
        v.error(path, "an edge is an object with from, to and an optional when")
        return {}
    for key in raw:
        if key not in ("from", "to", "when"):
            v.error(f"{path}.{key}", "unknown field of an edge")
    for end in ("from", "to"):
        if raw.get(end) not in nodes:
            v.error(f"{path}.{end}", f"unknown node {raw.get(end)!r}" if end in raw else "is required")
    if raw.get("from") is not None and raw.get("from") == raw.get("to"):
        v.error(path, "an edge cannot join a node to itself")
    when = raw.get("when", DEFAULT_WHEN)
    conditions.validate(when, f"{path}.when", v.errors)
    return {"from": raw.get("from"), "to": raw.get("to"), "when": when}


def find_cycle(nodes: list[str], edges: list[dict]) -> list[str] | None:
    """A cycle as a list of node names, or None for an acyclic graph (Kahn's algorithm)."""
    out_edges: dict[str, list[str]] = defaultdict(list)
    indegree = {n: 0 for n in nodes}
    for e in edges:
        out_edges[e["from"]].append(e["to"])
        indegree[e["to"]] += 1
    ready = deque(n for n, d in indegree.items() if d == 0)
    seen = 0
    while ready:
        node = ready.popleft()
        seen += 1
        for nxt in out_edges[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if seen == len(nodes):
        return None
    start = next(n for n, d in indegree.items() if d > 0)
    path, node = [start], start
    while True:
        node = next(t for t in out_edges[node] if indegree[t] > 0)
        if node in path:
            return path[path.index(node):] + [node]
        path.append(node)


# Running --------------------------------------------------------------------------------------


def advance(graph: Signature) -> None:
    members = {m.node_key: m for m in graph.members.only("node_key", "status", "result", "error", "kind", "owner_id", "parent_id", "root_id",
                                                                    "callback_of_id", "inbound")}
    edges = graph.config.get("edges", [])
    states: dict[str, bool] = dict(graph.config.get("edge_states", {}))
    progressed = True
    while progressed:
        progressed = _resolve_edges(members, edges, states)
        for key, node in members.items():
            if node.status != Status.PENDING:
                continue
            incoming = [(i, e) for i, e in enumerate(edges) if e["to"] == key]
            if not incoming:
                execution.start(node, inbound=graph.inbound or None)
            elif all(str(i) in states for i, _ in incoming):
                taken = [e for i, e in incoming if states[str(i)]]
                if taken:
                    execution.start(node, inbound=_inbound(members, taken))
                else:
                    skip_node(node)
                    progressed = True
    if states != graph.config.get("edge_states", {}):
        graph.config = {**graph.config, "edge_states": states}
        Signature.objects.filter(pk=graph.pk).update(config=graph.config)
    _finish_if_done(graph, members, edges, states)


def _resolve_edges(members: dict, edges: list[dict], states: dict[str, bool]) -> bool:
    changed = False
    for i, edge in enumerate(edges):
        source = members[edge["from"]]
        if str(i) in states or source.status not in (Status.COMPLETED, Status.FAILED, Status.SKIPPED):
            continue
        if source.status == Status.SKIPPED:
            states[str(i)] = False
        else:
            outcome = "success" if source.status == Status.COMPLETED else "failure"
            states[str(i)] = conditions.evaluate(edge["when"], outcome=outcome, result=source.result)
        changed = True
    return changed


def _inbound(members: dict, taken: list[dict]) -> dict:
    """A join receives ``{source: result}`` of its taken edges; a single input arrives as is."""
    sources = [members[e["from"]] for e in taken]
    if len(sources) == 1:
        source = sources[0]
        return {"input": source.result} if source.status == Status.COMPLETED else {"input": None, "error": source.error}
    return {"input": {s.node_key: s.result for s in sources}}


def skip_node(node: Signature) -> None:
    now = timezone.now()
    node.status = Status.SKIPPED
    Signature.objects.filter(pk__in=tree.descendant_ids(node), status=Status.PENDING).update(
        status=Status.SKIPPED, finished_at=now
    )


def _finish_if_done(graph: Signature, members: dict, edges: list[dict], states: dict[str, bool]) -> None:
    fresh = dict(graph.members.values_list("node_key", "status"))
    if any(status not in (Status.COMPLETED, Status.FAILED, Status.SKIPPED) for status in fresh.values()):
        return
    unhandled = [
        key for key, status in fresh.items()
        if status == Status.FAILED and not any(states.get(str(i)) for i, e in enumerate(edges) if e["from"] == key)
    ]
    if unhandled:
        first = members[unhandled[0]]
        first.refresh_from_db(fields=["error"])
        error = dict(first.error or {}, node=unhandled[0], failed_nodes=unhandled)
        execution.finish(graph, Status.FAILED, error=error)
    else:
        result = dict(graph.members.filter(status=Status.COMPLETED).values_list("node_key", "result"))
        execution.finish(graph, Status.COMPLETED, result=result)
