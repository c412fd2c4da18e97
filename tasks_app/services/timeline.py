"""The timeline of a workflow (DESIGN.md §4): a Gantt chart of the members the graph view shows.

Each row is a node of the graph view; a task's spans come from its Run rows (queued, running,
then paused or waiting until the next run), a container's from its own start and end. The
critical path is the longest chain of completed or running members by duration, following the
flow and taken edges, descending into the containers on it.
"""

from __future__ import annotations

from collections import defaultdict, deque
from datetime import datetime
from typing import Any

from django.utils import timezone

from ..models import Kind, Run, RunStatus, Signature, Status
from . import graph_view

MAX_ROWS = 500
HELD = (RunStatus.PAUSED, RunStatus.WAITING_APPROVAL, RunStatus.INTERRUPTED)
ON_PATH = (Status.COMPLETED, Status.RUNNING)


def payload(sig: Signature, options: graph_view.ViewOptions | None = None) -> dict[str, Any]:
    """``{"now", "rows": [{id, label, status, kind, depth, critical, spans: [{phase, status, start, end}]}]}``
    with times in epoch milliseconds."""
    view = graph_view.graph(sig, options)
    nodes = [n for n in view["nodes"] if n["task_id"] is not None][:MAX_ROWS]
    runs = _runs_by_signature([n["task_id"] for n in nodes if n["kind"] == Kind.TASK])
    critical = critical_path(view)
    now = timezone.now()
    rows = []
    for node in nodes:
        started, finished = node["started_at"], node["finished_at"]
        spans = (_run_spans(runs.get(node["task_id"], []), node["status"], now) if node["kind"] == Kind.TASK
                 else _container_spans(node["status"], started, finished, now))
        rows.append({"id": node["id"], "label": node["label"], "status": node["status"], "kind": node["kind"],
                     "depth": node["depth"], "critical": node["id"] in critical, "total": node["total"],
                     "spans": spans})
    return {"root": sig.pk, "now": _ms(now), "rows": rows, "truncated": len(view["nodes"]) > len(nodes)}


def _runs_by_signature(ids: list[int]) -> dict[int, list[dict]]:
    runs: dict[int, list[dict]] = defaultdict(list)
    fields = ("signature_id", "number", "status", "queued_at", "started_at", "finished_at")
    for run in Run.objects.filter(signature_id__in=ids).order_by("signature_id", "number").values(*fields):
        runs[run["signature_id"]].append(run)
    return runs


def _run_spans(runs: list[dict], status: str, now: datetime) -> list[dict]:
    spans = []
    for i, run in enumerate(runs):
        following = runs[i + 1] if i + 1 < len(runs) else None
        begin = run["started_at"] or run["finished_at"] or (now if run["status"] == RunStatus.QUEUED else None)
        if begin:
            spans.append(_span("queued", RunStatus.QUEUED, run["queued_at"], begin))
        if run["started_at"]:
            end = run["finished_at"] or (now if run["status"] == RunStatus.RUNNING else run["started_at"])
            spans.append(_span("running", run["status"], run["started_at"], end))
        if run["status"] in HELD and run["finished_at"]:
            end = following["queued_at"] if following else (now if status in (Status.PAUSED, Status.WAITING_APPROVAL,
                                                                                Status.INTERRUPTED) else None)
            if end:
                spans.append(_span(run["status"], run["status"], run["finished_at"], end))
    return spans


def _container_spans(status: str, started: datetime | None, finished: datetime | None, now: datetime) -> list[dict]:
    if not started:
        return []
    return [_span("running", status, started, finished or now)]


def _span(phase: str, status: str, start: datetime, end: datetime) -> dict:
    return {"phase": phase, "status": status, "start": _ms(start), "end": max(_ms(end), _ms(start))}


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


# Critical path ---------------------------------------------------------------------------------


def critical_path(view: dict) -> set[str]:
    """Ids of the nodes on the longest path by duration, from the viewed signature down."""
    nodes = {n["id"]: n for n in view["nodes"]}
    members: dict[str, list[dict]] = defaultdict(list)
    for node in view["nodes"]:
        if node["parent"] and not node["callback_on"]:
            members[node["parent"]].append(node)
    following: dict[str, list[str]] = defaultdict(list)
    for edge in view["edges"]:
        if edge["kind"] in ("flow", "conditional") and edge["state"] != "skipped":
            following[edge["source"]].append(edge["target"])
    critical: set[str] = set()
    todo = [str(view["root"])]
    while todo:
        node = nodes.get(todo.pop())
        if node is None:
            continue
        path = _longest(members.get(node["id"], []), following) if node["open"] else []
        critical.update(path)
        todo.extend(nid for nid in path if nodes[nid]["open"])
    return critical


def _longest(members: list[dict], following: dict[str, list[str]]) -> list[str]:
    """The heaviest path through completed or running members (a DAG), in order."""
    weight = {n["id"]: n["duration_ms"] for n in members if n["status"] in ON_PATH and n["duration_ms"] is not None}
    if not weight:
        return []
    order = _topological(list(weight), following)
    best: dict[str, tuple[int, str | None]] = {}
    for nid in reversed(order):
        tails = [(best[t][0], t) for t in following.get(nid, []) if t in weight]
        length, nxt = max(tails, default=(0, None))
        best[nid] = (weight[nid] + length, nxt)
    current: str | None = max(best, key=lambda nid: best[nid][0])
    path = []
    while current is not None:
        path.append(current)
        current = best[current][1]
    return path


def _topological(ids: list[str], following: dict[str, list[str]]) -> list[str]:
    inside = set(ids)
    indegree = {nid: 0 for nid in ids}
    for nid in ids:
        for target in following.get(nid, []):
            if target in inside:
                indegree[target] += 1
    ready = deque(nid for nid in ids if indegree[nid] == 0)
    order = []
    while ready:
        nid = ready.popleft()
        order.append(nid)
        for target in following.get(nid, []):
            if target in inside:
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
    return order
