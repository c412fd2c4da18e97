"""Helpers the tests share (tests import these, never each other): signatures made by the service
itself or through the API, direct status set-up, URLs, specs and how runs overlapped."""

from __future__ import annotations

from typing import Any

from tasks_app.models import Signature
from tasks_app.services import execution

ECHO = {"task": "examples.echo", "kwargs": {"value": 1}}
GRAPH = {"kind": "graph", "nodes": {"a": ECHO, "b": {"task": "examples.noop"}}, "edges": [{"from": "a", "to": "b"}]}


def echo(value, **extra) -> dict:
    """The spec of an examples.echo returning ``value``."""
    return {"task": "examples.echo", "kwargs": {"value": value}, **extra}


def make(owner, spec: dict, *, run: bool = False) -> Signature:
    """A signature written by the service (not started unless asked)."""
    return execution.submit(spec, owner=owner, run=run)


def submitted(client, spec: dict) -> Signature:
    """A signature submitted through the API as a user would, asserting the 201."""
    response = client.post("/api/tasks/", spec, format="json")
    assert response.status_code == 201, response.json()
    return Signature.objects.get(pk=response.json()["id"])


def fresh(sig: Signature) -> Signature:
    """The signature as the database holds it now (another process may have changed it)."""
    return Signature.objects.get(pk=sig.pk)


def set_status(sig: Signature, status: str, **fields: Any) -> Signature:
    """Put a signature in a status directly: test set-up only, never what the product does."""
    Signature.objects.filter(pk=sig.pk).update(status=status, **fields)
    sig.refresh_from_db()
    return sig


def url(sig_or_id: Signature | int, action: str = "") -> str:
    pk = sig_or_id.pk if isinstance(sig_or_id, Signature) else sig_or_id
    return f"/api/tasks/{pk}/{action}"


def max_overlap(runs) -> int:
    """The largest number of runs that were running at the same instant."""
    points = sorted([(r.started_at, 1) for r in runs] + [(r.finished_at, -1) for r in runs], key=lambda p: (p[0], p[1]))
    current = peak = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak
