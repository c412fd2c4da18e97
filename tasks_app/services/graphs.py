"""Graphs: nodes are specs, edges carry conditions evaluated on the source node's outcome.

When a node ends each outgoing edge resolves to taken or not. A node runs when all incoming edges
are resolved and at least one was taken; otherwise it is skipped, which resolves its own outgoing
edges as not taken. Edge states live in the graph's config (``edge_states``) for the graph view.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ..models import Kind, Signature, Status
from . import conditions, events, execution, tree

NODE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
DEFAULT_WHEN = {"on": "success"}


def validate_graph(v, raw: dict, path: str, depth: int, out: dict) -> None:
    """Called by the spec validator for ``kind: graph``; ``v`` collects errors by path."""
    nodes, edges = raw.get("nodes"), raw.get("edges", [])
    nodes_path, edges_path = f"{path}.nodes" if path else "nodes", f"{path}.edges" if path else "edges"
    if not isinstance(nodes, dict) or not nodes:
        v.error(nodes_path, "a graph needs an object of named nodes")
        return
    max_nodes, max_edges = settings.ORCHESTRATOR["MAX_GRAPH_NODES"], settings.ORCHESTRATOR["MAX_GRAPH_EDGES"]
    if len(nodes) > max_nodes:
        v.error(nodes_path, f"{len(nodes)} nodes exceed the limit of {max_nodes} nodes per graph")
        return
    if isinstance(edges, list) and len(edges) > max_edges:
        v.error(edges_path, f"{len(edges)} edges exceed the limit of {max_edges} edges per graph")
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

ENDED = (Status.COMPLETED, Status.FAILED, Status.SKIPPED)
# Outgoing edge decisions of a node that just completed, taken before the transaction that ends it.
_decided: ContextVar[dict | None] = ContextVar("graph_edges_decided", default=None)


class EdgeIndex:
    """Edge numbers by source and by target: a member's end reads only the edges it touches."""

    def __init__(self, edges: list[dict]):
        self.edges = edges
        self.outgoing: dict[str, list[int]] = defaultdict(list)
        self.incoming: dict[str, list[int]] = defaultdict(list)
        for i, edge in enumerate(edges):
            self.outgoing[edge["from"]].append(i)
            self.incoming[edge["to"]].append(i)

    def nodes(self) -> set[str]:
        return set(self.outgoing) | set(self.incoming)


def decide_outgoing(member: Signature, result: Any) -> dict | None:
    """The outgoing edges of a graph node that completed with ``result``, decided before any lock is
    taken: conditions are user input, and no user-controlled work runs under the graph's row lock."""
    if not member.node_key or member.parent_id is None:
        return None
    config = Signature.objects.filter(pk=member.parent_id, kind=Kind.GRAPH).values_list("config", flat=True).first()
    if not config:
        return None
    edges = config.get("edges", [])
    states = {str(i): conditions.evaluate(edges[i]["when"], outcome="success", result=result)
              for i in EdgeIndex(edges).outgoing.get(member.node_key, [])}
    return {"graph": member.parent_id, "node": member.node_key, "states": states}


@contextmanager
def decided(decision: dict | None) -> Iterator[None]:
    """Let ``advance`` use edge decisions made before the transaction (see ``decide_outgoing``)."""
    token = _decided.set(decision)
    try:
        yield
    finally:
        _decided.reset(token)


def advance(graph: Signature) -> None:
    """Start the nodes whose inputs are all resolved (or skip them), then end the graph when all have ended.

    Members are read as (key, status) pairs; full rows and results only for the nodes touched."""
    statuses: dict[str, str] = dict(graph.members.values_list("node_key", "status"))
    index = EdgeIndex(graph.config.get("edges", []))
    states: dict[str, bool] = dict(graph.config.get("edge_states", {}))
    missing = _missing_nodes(graph, statuses, index)
    _resolve_ended(graph, statuses, index, states, [k for k, st in statuses.items() if st in ENDED] + missing)
    due = deque(key for key, status in statuses.items() if status == Status.PENDING)
    while due:
        key = due.popleft()
        incoming = index.incoming.get(key, [])
        if statuses[key] != Status.PENDING or not all(str(i) in states for i in incoming):
            continue
        taken = [index.edges[i] for i in incoming if states[str(i)]]
        node = _node(graph, key)
        if incoming and not taken:
            skip_node(node)
            statuses[key] = Status.SKIPPED
            _resolve_ended(graph, statuses, index, states, [key])
            due.extend(index.edges[i]["to"] for i in index.outgoing.get(key, []))
            continue
        execution.start(node, inbound=_inbound(graph, taken) if taken else graph.inbound or None)
        statuses[key] = Status.QUEUED  # started here: not pending any more
    if states != graph.config.get("edge_states", {}):
        graph.config = {**graph.config, "edge_states": states}
        Signature.objects.filter(pk=graph.pk).update(config=graph.config)
    if all(status in ENDED for status in statuses.values()):  # read under the graph's lock: none ends meanwhile
        _finish_if_done(graph, index, states)


def _node(graph: Signature, key: str) -> Signature:
    return graph.members.only("node_key", "status", "kind", "owner_id", "parent_id", "root_id", "callback_of_id",
                              "inbound").get(node_key=key)


def _missing_nodes(graph: Signature, statuses: dict[str, str], index: EdgeIndex) -> list[str]:
    """Nodes the edges name that have no row any more (a pending node deleted and purged): each is
    treated as skipped, and recorded once on the graph's timeline."""
    missing = sorted(index.nodes() - statuses.keys())
    recorded = graph.config.get("missing_nodes", [])
    new = [key for key in missing if key not in recorded]
    if new:
        graph.config = {**graph.config, "missing_nodes": recorded + new}
        Signature.objects.filter(pk=graph.pk).update(config=graph.config)
        for key in new:
            events.record(graph, "node_missing", node=key, treated_as=Status.SKIPPED)
    return missing


def _resolve_ended(graph: Signature, statuses: dict[str, str], index: EdgeIndex, states: dict[str, bool],
                   keys: list[str]) -> None:
    """Resolve the unresolved outgoing edges of these ended (or missing) nodes."""
    decision = _decided.get()
    early = decision["states"] if decision and decision["graph"] == graph.pk else {}
    open_edges = {key: [i for i in index.outgoing.get(key, []) if str(i) not in states] for key in keys}
    needed = [key for key, edges in open_edges.items()
              if edges and statuses.get(key) == Status.COMPLETED and not (early and decision["node"] == key)]
    results = dict(graph.members.filter(node_key__in=needed).values_list("node_key", "result")) if needed else {}
    for key, edges in open_edges.items():
        status = statuses.get(key)
        for i in edges:
            if status is None or status == Status.SKIPPED:
                states[str(i)] = False
            elif status == Status.COMPLETED and decision and decision["node"] == key and str(i) in early:
                states[str(i)] = early[str(i)]
            else:
                outcome = "success" if status == Status.COMPLETED else "failure"
                states[str(i)] = conditions.evaluate(index.edges[i]["when"], outcome=outcome, result=results.get(key))


def _inbound(graph: Signature, taken: list[dict]) -> dict:
    """A join receives ``{source: result}`` of its taken edges; a single input arrives as is."""
    rows = graph.members.filter(node_key__in=[e["from"] for e in taken]).values_list("node_key", "status", "result",
                                                                                     "error")
    sources = {key: (status, result, error) for key, status, result, error in rows}
    if len(taken) == 1:
        status, result, error = sources[taken[0]["from"]]
        # A skipped source took an edge only when a person skipped it with a substitute result.
        return {"input": result} if status in (Status.COMPLETED, Status.SKIPPED) else {"input": None, "error": error}
    return {"input": {e["from"]: sources[e["from"]][1] for e in taken}}


def skip_node(node: Signature) -> None:
    now = timezone.now()
    node.status = Status.SKIPPED
    Signature.objects.filter(pk__in=tree.descendant_ids(node), status=Status.PENDING).update(
        status=Status.SKIPPED, finished_at=now
    )


def _finish_if_done(graph: Signature, index: EdgeIndex, states: dict[str, bool]) -> None:
    fresh = dict(graph.members.values_list("node_key", "status"))
    if any(status not in ENDED for status in fresh.values()):
        return
    unhandled = [
        key for key, status in fresh.items()
        if status == Status.FAILED and not any(states.get(str(i)) for i in index.outgoing.get(key, []))
    ]
    if unhandled:
        first = graph.members.only("error").get(node_key=unhandled[0])
        error = dict(first.error or {}, node=unhandled[0], failed_nodes=unhandled)
        execution.finish(graph, Status.FAILED, error=error)
    else:
        returned = Q(status=Status.COMPLETED) | Q(status=Status.SKIPPED, config__has_key="skipped_with_result")
        result = dict(graph.members.filter(returned).values_list("node_key", "result"))
        execution.finish(graph, Status.COMPLETED, result=result)
