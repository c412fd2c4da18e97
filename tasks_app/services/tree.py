"""Walking a workflow tree: members and callbacks, level by level."""

from __future__ import annotations

from ..models import Signature


def descendant_ids(signature: Signature) -> list[int]:
    """The signature and everything below it (members and callbacks), parents before children."""
    ids, frontier = [signature.pk], [signature.pk]
    while frontier:
        frontier = list(
            Signature.objects.filter(parent_id__in=frontier).values_list("pk", flat=True)
        ) + list(Signature.objects.filter(callback_of_id__in=frontier).values_list("pk", flat=True))
        ids.extend(frontier)
    return ids


def subtree(signature: Signature):
    """The signature and its descendants as a queryset (one query for a whole top-level tree)."""
    if signature.parent_id is None and signature.callback_of_id is None:
        return Signature.objects.tree(signature.pk)
    return Signature.objects.filter(pk__in=descendant_ids(signature))
