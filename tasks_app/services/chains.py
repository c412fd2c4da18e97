"""Chains: members run strictly in order, each receiving the previous result as ``input``."""

from __future__ import annotations

from django.utils import timezone

from ..models import Signature, Status
from . import execution


def advance(chain: Signature, ended: Signature | None = None) -> None:
    """``ended``: the member whose end called this, when there is one (it is often the previous step)."""
    current = chain.members.exclude(status__in=[Status.COMPLETED, Status.SKIPPED]).order_by("position").first()
    if current is not None and ended is not None and ended.status == Status.COMPLETED \
            and ended.position == current.position - 1:
        previous = ended
    else:
        previous = (
            # A member a person skipped (lifecycle.skip) passes on the result it was given.
            chain.members.filter(status__in=(Status.COMPLETED, Status.SKIPPED),
                                 position__lt=current.position if current else 1 << 31)
            .order_by("-position")
            .only("result")
            .first()
        )
    if current is None:
        execution.finish(chain, Status.COMPLETED, result=previous.result if previous else None)
    elif current.status == Status.FAILED:
        _fail(chain, current)
    elif current.status == Status.PENDING:
        inbound = {"input": previous.result} if previous else chain.inbound
        execution.start(current, inbound=inbound)


def _fail(chain: Signature, step: Signature) -> None:
    """A failed step fails the chain; the steps after it never run."""
    chain.members.filter(status=Status.PENDING, position__gt=step.position).update(
        status=Status.SKIPPED, finished_at=timezone.now()
    )
    error = dict(step.error or {}, step=step.position + 1, step_id=step.pk)
    execution.finish(chain, Status.FAILED, error=error)
