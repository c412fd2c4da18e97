"""Helpers of the API tests: signatures made by the service itself, direct status set-up, URLs."""

from __future__ import annotations

from typing import Any

from tasks_app.models import Signature
from tasks_app.services import execution

ECHO = {"task": "examples.echo", "kwargs": {"value": 1}}


def make(owner, spec: dict, *, run: bool = False) -> Signature:
    """A signature written by the service (not started unless asked)."""
    return execution.submit(spec, owner=owner, run=run)


def set_status(sig: Signature, status: str, **fields: Any) -> Signature:
    """Put a signature in a status directly: test set-up only, never what the product does."""
    Signature.objects.filter(pk=sig.pk).update(status=status, **fields)
    sig.refresh_from_db()
    return sig


def url(sig_or_id: Signature | int, action: str = "") -> str:
    pk = sig_or_id.pk if isinstance(sig_or_id, Signature) else sig_or_id
    return f"/api/tasks/{pk}/{action}"
