"""Timeline and audit rows: every transition writes one Event in the same transaction."""

from __future__ import annotations

from ..models import Event, Signature


def record(signature: Signature, type: str, *, actor: str = "system", **data) -> Event:
    from . import live, notifications

    live.touched(signature, type)
    event = Event.objects.create(
        signature=signature,
        signature_ref=signature.pk,
        root_ref=signature.root_id_or_self,
        owner_id=signature.owner_id,
        type=type,
        actor=actor,
        data=data,
    )
    notifications.on_event(event)  # the row now, in this transaction; delivery after commit
    return event


def actor_name(user) -> str:
    return getattr(user, "username", "") or "system"
