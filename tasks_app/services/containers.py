"""What chains, swarms and graphs share: advancing after a member ends, and rolling up progress.

``advance`` is idempotent: it reads the members' statuses and starts only what is due, so it can
run twice or concurrently (the container row is locked) without starting anything twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db.models import Count, Sum

from ..models import Kind, Signature, Status
from . import progress

ENDED = (Status.COMPLETED, Status.SKIPPED, Status.FAILED)


def advance(container: Signature, stats: dict | None = None, ended: Signature | None = None) -> None:
    """Start whatever is due next in a running container, or end it when its members are done.

    ``stats`` is ``member_stats(container)`` when the caller has it (a swarm reuses it); ``ended``
    the member whose end called this (a chain takes its result from it)."""
    if container.status != Status.RUNNING:
        return
    from . import chains, graphs, swarms

    if container.kind == Kind.SWARM:
        swarms.advance(container, stats)
    elif container.kind == Kind.CHAIN:
        chains.advance(container, ended)
    else:
        graphs.advance(container)


def member_finished(member: Signature) -> None:
    """Called in the transaction that ended ``member``; its container row is already locked."""
    container = member.__dict__.pop("_locked_container", None)
    if container is None or container.pk != member.parent_id:
        container = Signature.objects.locked().get(pk=member.parent_id)
    if container.kind == Kind.SWARM:
        from . import swarms

        swarms.on_member_finished(container, member)
        if _roll_up_due(container):  # every member's progress, read at most once a second
            roll_up(container, step=1.0)
        if _deferred.swarms is not None:  # a batch of ends: advanced once, at the batch's end
            _deferred.swarms.add(container.pk)
        else:
            advance(container, ended=member)  # its own reads visit only the members that decide
        progress.member_moved(member)  # the container's own progress message, throttled, after commit
        return
    stats = member_stats(container)
    roll_up(container, stats, step=1.0)
    advance(container, stats, ended=member)
    progress.member_moved(member)


class _Deferred(threading.local):
    swarms: set[int] | None = None


_deferred = _Deferred()


@contextmanager
def swarms_advanced_once() -> Iterator[None]:
    """Inside, in one transaction: the members that end advance their swarm once, at the end,
    instead of once each (``advance`` reads the members' statuses, so once after all of them
    starts what once per end would have started). Not for chains and graphs: each end there
    decides what starts next from that member's own result."""
    _deferred.swarms = set()
    try:
        yield
        due, _deferred.swarms = sorted(_deferred.swarms), None  # a swarm that ends tells its container at once
        for pk in due:  # one lock order for every process
            swarm = Signature.objects.locked().filter(pk=pk).first()
            if swarm is not None:
                advance(swarm)
    finally:
        _deferred.swarms = None


ROLL_UP_EVERY = 1.0  # seconds between two roll-ups of one swarm's progress in a process
_rolled_up: dict[int, float] = {}


def _roll_up_due(container: Signature) -> bool:
    now = time.monotonic()
    if now - _rolled_up.get(container.pk, -ROLL_UP_EVERY) < ROLL_UP_EVERY:
        return False
    if len(_rolled_up) > 10_000:
        _rolled_up.clear()
    _rolled_up[container.pk] = now
    return True


def member_stats(container: Signature) -> dict[str, tuple[int, float]]:
    """{status: (members, sum of their progress)}: one grouped query serves roll-up and advance."""
    rows = container.members.values("status").annotate(n=Count("id"), p=Sum("progress")).order_by()
    return {row["status"]: (row["n"], float(row["p"] or 0)) for row in rows}


def roll_up(container: Signature, stats: dict | None = None, *, step: float = 0.0) -> float:
    """Store the container's percent (``progress.container_percent``: ended members count 100 %).

    With ``step``, only once it has grown by that much since the value loaded with ``container``:
    one member's end in a swarm of 2,000 moves it by 0.05 %, and pages compute it afresh."""
    percent = progress.container_percent(member_stats(container) if stats is None else stats)
    if percent >= min(100.0, container.progress + step):
        Signature.objects.filter(pk=container.pk, progress__lt=percent).update(progress=percent)
    return percent
