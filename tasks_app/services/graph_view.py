"""The graph view of a workflow (DESIGN.md §4): nodes, flow, callback and conditional edges.

Built with a fixed number of queries however large the workflow: one aggregate of member and
callback counts by status, one query for the rows that are shown, one per expanded page. A
container with more than ``COLLAPSE_OVER`` members is one node with per-status counts until it is
expanded, a page at a time; containers deeper than ``OPEN_DEPTH`` start collapsed; any container
can be collapsed or expanded on request.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from ..models import CallbackOn, Kind, Signature, Status
from .tree import subtree

COLLAPSE_OVER = 50
PAGE_SIZE = 50
OPEN_DEPTH = 3
MAX_EXPANDED = 20
PER_MEMBER = (CallbackOn.TASK_SUCCESS, CallbackOn.TASK_ERROR, CallbackOn.TASK_FINISH)
ROW_FIELDS = ("id", "kind", "name", "task_name", "node_key", "status", "progress", "parent_id", "callback_of_id",
              "callback_on", "trigger_id", "position", "config", "started_at", "finished_at", "owner_id")
CALLBACK_LABELS = {
    CallbackOn.SUCCESS: "on success",
    CallbackOn.ERROR: "on error",
    CallbackOn.FINISH: "on finish",
    CallbackOn.TASK_SUCCESS: "per member success",
    CallbackOn.TASK_ERROR: "per member error",
    CallbackOn.TASK_FINISH: "per member finish",
}


@dataclass(frozen=True)
class ViewOptions:
    """What the person opened or closed: ``expand`` maps a container id to a page (from 1)."""

    expand: dict[int, int] = field(default_factory=dict)
    collapse: frozenset[int] = frozenset()


@dataclass
class _Counts:
    """Members by status per container, and per-member callbacks by status per swarm."""

    members: dict[int, dict[str, int]]
    per_member_callbacks: dict[int, dict[str, int]]


def graph(sig: Signature, options: ViewOptions | None = None) -> dict[str, Any]:
    """Cytoscape-ready ``{"root", "nodes", "edges"}`` for the signature and what lies below it."""
    options = options or ViewOptions()
    tree = Signature.objects.tree(sig.root_id_or_self)
    counts = _counts(tree)
    big = {cid for cid, c in counts.members.items() if sum(c.values()) > COLLAPSE_OVER}
    big_callbacks = {sid for sid, c in counts.per_member_callbacks.items() if sum(c.values()) > COLLAPSE_OVER}
    rows = list(_shown_rows(tree, big, big_callbacks))
    if not any(row.pk == sig.pk for row in rows):  # a member of a large container, opened on its own
        rows += list(subtree(sig).only(*ROW_FIELDS))
    rows += _pages(big, options)
    builder = _Builder(rows, counts, big, big_callbacks, options)
    builder.visit(builder.by_id.get(sig.pk, sig), depth=0, parent=None)
    builder.add_edges()
    return {"root": sig.pk, "nodes": builder.nodes, "edges": builder.edges,
            "collapse_over": COLLAPSE_OVER, "page_size": PAGE_SIZE}


def _counts(tree: QuerySet[Signature]) -> _Counts:
    members: dict[int, dict[str, int]] = defaultdict(dict)
    per_member: dict[int, dict[str, int]] = defaultdict(dict)
    rows = tree.values("parent_id", "callback_of_id", "callback_on", "status").annotate(n=Count("id")).order_by()
    for row in rows:
        if row["parent_id"] is not None:
            group = members[row["parent_id"]]
        elif row["callback_on"] in PER_MEMBER:
            group = per_member[row["callback_of_id"]]
        else:
            continue
        group[row["status"]] = group.get(row["status"], 0) + row["n"]
    return _Counts(dict(members), dict(per_member))


def _shown_rows(tree: QuerySet[Signature], big: set[int], big_callbacks: set[int]) -> QuerySet[Signature]:
    """The tree without the members of large containers (and two levels below them)."""
    hidden = Q()
    if big:
        hidden |= Q(parent_id__in=big) | Q(parent__parent_id__in=big) | Q(callback_of__parent_id__in=big)
    if big_callbacks:
        hidden |= Q(callback_of_id__in=big_callbacks, callback_on__in=PER_MEMBER)
    rows = tree.only(*ROW_FIELDS).order_by()
    return rows.exclude(hidden) if hidden else rows


def _pages(big: set[int], options: ViewOptions) -> list[Signature]:
    """One page of members for each large container the person expanded."""
    rows: list[Signature] = []
    for cid, page in list(options.expand.items())[:MAX_EXPANDED]:
        if cid in big and cid not in options.collapse:
            start = (max(page, 1) - 1) * PAGE_SIZE
            members = Signature.objects.filter(parent_id=cid).only(*ROW_FIELDS).order_by("position", "pk")
            rows += list(members[start:start + PAGE_SIZE])
    return rows


class _Builder:
    """Walks the loaded rows from the viewed signature down, deciding what is open or collapsed."""

    def __init__(self, rows: list[Signature], counts: _Counts, big: set[int], big_callbacks: set[int],
                 options: ViewOptions):
        self.by_id = {row.pk: row for row in rows}
        self.counts, self.big, self.big_callbacks, self.options = counts, big, big_callbacks, options
        self.members: dict[int, list[Signature]] = defaultdict(list)
        self.callbacks: dict[int, list[Signature]] = defaultdict(list)
        for row in sorted(self.by_id.values(), key=lambda r: (r.position, r.pk)):
            if row.parent_id is not None:
                self.members[row.parent_id].append(row)
            elif row.callback_of_id is not None:
                self.callbacks[row.callback_of_id].append(row)
        self.nodes: list[dict] = []
        self.edges: list[dict] = []
        self.shown: dict[int, Signature] = {}
        self.open: set[int] = set()

    def is_open(self, sig: Signature, depth: int) -> bool:
        if sig.kind not in (Kind.CHAIN, Kind.SWARM, Kind.GRAPH) or sig.pk in self.options.collapse:
            return False
        if self.counts.members.get(sig.pk) and not self.members.get(sig.pk):
            return False  # its members were not loaded (below a large container): show the counts
        if sig.pk in self.big:
            return sig.pk in self.options.expand
        return depth < OPEN_DEPTH or sig.pk in self.options.expand

    def visit(self, sig: Signature, *, depth: int, parent: int | None) -> None:
        self.shown[sig.pk] = sig
        is_open = self.is_open(sig, depth)
        self.nodes.append(self.node(sig, depth, parent, is_open))
        if is_open:
            self.open.add(sig.pk)
            for member in self.members.get(sig.pk, []):
                self.visit(member, depth=depth + 1, parent=sig.pk)
        for callback in self.callbacks.get(sig.pk, []):
            if callback.callback_on not in PER_MEMBER or sig.pk not in self.big_callbacks:
                self.visit(callback, depth=depth + 1, parent=parent)
        if sig.pk in self.big_callbacks:
            self.nodes.append(self.callback_group(sig, parent))

    def node(self, sig: Signature, depth: int, parent: int | None, is_open: bool) -> dict:
        counts = self.counts.members.get(sig.pk, {})
        total = sum(counts.values())
        node = {
            "id": str(sig.pk), "task_id": sig.pk, "label": _label(sig), "key": sig.node_key,
            "title": sig.name or sig.task_name or sig.kind, "kind": sig.kind, "task": sig.task_name,
            "status": sig.status, "progress": round(sig.progress, 1), "depth": depth,
            "callback_on": sig.callback_on or None, "duration_ms": _duration_ms(sig),
            "started_at": sig.started_at, "finished_at": sig.finished_at,
            "parent": str(parent) if parent is not None else None,
            "container": sig.kind != Kind.TASK, "open": is_open, "counts": counts, "total": total,
        }
        if sig.pk in self.big:
            node["pages"] = -(-total // PAGE_SIZE)
            node["page"] = self.options.expand.get(sig.pk, 1) if is_open else None
        return node

    def callback_group(self, sig: Signature, parent: int | None) -> dict:
        counts = self.counts.per_member_callbacks[sig.pk]
        self.edges.append(_edge(f"cbg-{sig.pk}", sig.pk, f"cbg-{sig.pk}", "callback", "per member callbacks"))
        label = f"{sum(counts.values())} member callbacks"
        return {"id": f"cbg-{sig.pk}", "task_id": None, "label": label, "key": "", "title": label,
                "kind": "callbacks", "task": "", "status": _group_status(counts), "progress": 0, "depth": 0,
                "callback_on": "per_member", "duration_ms": None, "started_at": None, "finished_at": None,
                "parent": str(parent) if parent else None,
                "container": True, "open": False, "counts": counts, "total": sum(counts.values())}

    def add_edges(self) -> None:
        for sig in self.shown.values():
            if sig.pk in self.open and sig.kind == Kind.CHAIN:
                self.chain_edges(sig)
            elif sig.pk in self.open and sig.kind == Kind.GRAPH:
                self.graph_edges(sig)
            if sig.callback_of_id is not None:
                self.callback_edge(sig)

    def chain_edges(self, chain: Signature) -> None:
        steps = [m for m in self.members.get(chain.pk, []) if m.pk in self.shown]
        for before, after in zip(steps, steps[1:], strict=False):
            self.edges.append(_edge(f"f-{before.pk}-{after.pk}", before.pk, after.pk, "flow", ""))

    def graph_edges(self, graph: Signature) -> None:
        keys = {m.node_key: m.pk for m in self.members.get(graph.pk, []) if m.pk in self.shown}
        states = graph.config.get("edge_states", {})
        for i, spec in enumerate(graph.config.get("edges", [])):
            if spec["from"] not in keys or spec["to"] not in keys:
                continue
            when = spec.get("when") or {"on": "success"}
            kind = "flow" if when == {"on": "success"} else "conditional"
            edge = _edge(f"e-{graph.pk}-{i}", keys[spec["from"]], keys[spec["to"]], kind, condition_text(when))
            edge.update(index=i, graph=graph.pk, condition=when,
                        state={True: "taken", False: "skipped"}.get(states.get(str(i))))
            self.edges.append(edge)

    def callback_edge(self, callback: Signature) -> None:
        source = callback.trigger_id if callback.trigger_id in self.shown else callback.callback_of_id
        if source in self.shown and callback.pk in self.shown:
            label = CALLBACK_LABELS.get(callback.callback_on, callback.callback_on)
            self.edges.append(_edge(f"c-{callback.pk}", source, callback.pk, "callback", label))


def _edge(eid: str, source: int | str, target: int | str, kind: str, label: str) -> dict:
    return {"id": eid, "source": str(source), "target": str(target), "kind": kind, "label": label, "state": None}


def _label(sig: Signature) -> str:
    title = sig.name or sig.task_name or sig.kind
    return f"{sig.node_key}: {title}" if sig.node_key and sig.node_key != title else title


def _duration_ms(sig: Signature) -> int | None:
    if not sig.started_at:
        return None
    end = sig.finished_at or (timezone.now() if sig.status == Status.RUNNING else None)
    return int((end - sig.started_at).total_seconds() * 1000) if end else None


def _group_status(counts: dict[str, int]) -> str:
    for status in (Status.RUNNING, Status.QUEUED, Status.FAILED, Status.PENDING):
        if counts.get(status):
            return status
    return Status.COMPLETED if counts.get(Status.COMPLETED) else Status.SKIPPED


# Conditions in words ---------------------------------------------------------------------------


def condition_text(cond: Any, limit: int = 60) -> str:
    """A short label for an edge: ``on failure``, ``label eq high``, ``label_is value=high``."""
    text = _words(cond)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _words(cond: Any) -> str:
    if not isinstance(cond, dict):
        return str(cond)
    if "on" in cond:
        return "always" if cond["on"] == "always" else f"on {cond['on']}"
    if "template" in cond:
        params = " ".join(f"{k}={_value(v)}" for k, v in (cond.get("params") or {}).items())
        return f"{cond['template']} {params}".strip()
    if "all" in cond or "any" in cond:
        joiner = " and " if "all" in cond else " or "
        return joiner.join(_words(part) for part in cond.get("all") or cond.get("any") or [])
    if "not" in cond:
        return f"not ({_words(cond['not'])})"
    parts = [cond.get("path") or "result", cond.get("op", "")]
    if "value" in cond:
        parts.append(_value(cond["value"]))
    return " ".join(str(p) for p in parts)


def _value(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def member_counts(sig: Signature) -> dict[str, int]:
    """A container's members by status (empty for a task)."""
    if not sig.is_container:
        return {}
    return dict(sig.members.values_list("status").annotate(n=Count("id")).order_by())


def table(view: dict) -> list[dict]:
    """The graph as rows for the accessible table: each node with its incoming edges in words."""
    labels = {n["id"]: n["label"] for n in view["nodes"]}
    incoming: dict[str, list[dict]] = defaultdict(list)
    for edge in view["edges"]:
        incoming[edge["target"]].append({
            "source": labels.get(edge["source"], edge["source"]), "kind": edge["kind"], "label": edge["label"],
            "state": edge["state"] or ("unresolved" if "graph" in edge else ""),
        })
    return [{**node, "incoming": incoming.get(node["id"], [])} for node in view["nodes"]]
