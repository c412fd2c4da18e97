"""Group commit (tasks_app.group_commit): many claims and ends in one transaction, each call in a
savepoint of its own, conflicts and failed commits run again alone; a swarm advanced once per batch."""

from __future__ import annotations

import asyncio
import functools

import pytest
from django.db import OperationalError, transaction

from tasks_app.group_commit import GroupCommit, run_batch
from tasks_app.models import Run, RunStatus, Signature, Status
from tasks_app.services import containers, execution
from tests.api_helpers import echo

pytestmark = pytest.mark.django_db(transaction=True)


def relabel(pk: int, name: str) -> str:
    Signature.objects.filter(pk=pk).update(name=name)
    return name


def relabel_then_raise(pk: int, exc: Exception) -> None:
    Signature.objects.filter(pk=pk).update(name="rolled back")
    raise exc


def names(*sigs: Signature) -> list[str]:
    return [Signature.objects.get(pk=s.pk).name for s in sigs]


def test_a_call_that_raises_is_rolled_back_alone_and_its_caller_gets_the_exception(owner):
    a, b, c = (execution.submit(echo(i), owner=owner, run=False) for i in range(3))
    outcomes = run_batch([functools.partial(relabel, a.pk, "a"),
                          functools.partial(relabel_then_raise, b.pk, ValueError("no")),
                          functools.partial(relabel, c.pk, "c")])
    assert outcomes[0] == ("a", None) and outcomes[2] == ("c", None)
    assert isinstance(outcomes[1][1], ValueError)
    assert names(a, b, c) == ["a", b.name, "c"]


def test_a_lock_conflict_runs_that_call_again_alone_after_the_batch(owner):
    a, b = (execution.submit(echo(i), owner=owner, run=False) for i in range(2))
    seen = []

    def conflicted_once() -> str:
        seen.append(transaction.get_connection().in_atomic_block)
        if len(seen) == 1:
            raise OperationalError("deadlock detected")
        return relabel(b.pk, "b")

    outcomes = run_batch([functools.partial(relabel, a.pk, "a"), conflicted_once])
    assert outcomes == [("a", None), ("b", None)]
    assert seen == [True, False]  # in the batch, then alone
    assert names(a, b) == ["a", "b"]


def test_a_batch_that_cannot_commit_runs_every_call_again_alone(owner):
    a, b = (execution.submit(echo(i), owner=owner, run=False) for i in range(2))
    calls = []

    class FailsAtTheEnd:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            if not calls:
                calls.append("failed")
                raise OperationalError("disk I/O error")

    outcomes = run_batch([functools.partial(relabel, a.pk, "a"), functools.partial(relabel, b.pk, "b")],
                         around=FailsAtTheEnd)
    assert outcomes == [("a", None), ("b", None)]
    assert names(a, b) == ["a", "b"]


def test_calls_awaited_together_share_one_transaction_and_keep_their_results(owner):
    sigs = [execution.submit(echo(i), owner=owner, run=False) for i in range(5)]
    outer = []

    def in_transaction(pk: int) -> int:
        outer.append(id(transaction.get_connection().atomic_blocks[0]))  # the batch's transaction
        return pk

    async def all_at_once():
        group = GroupCommit()
        return await asyncio.gather(*(group.call(in_transaction, s.pk) for s in sigs))

    assert asyncio.run(all_at_once()) == [s.pk for s in sigs]
    assert len(outer) == 5 and len(set(outer)) == 1


def test_members_ended_in_one_batch_advance_their_swarm_once_and_start_what_is_due(owner):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 3, "tasks": [echo(i) for i in range(8)]},
                             owner=owner)
    queued = list(Run.objects.filter(status=RunStatus.QUEUED).order_by("id"))
    assert len(queued) == 3
    prepared = [execution.prepare(r.signature_id, r.number) for r in queued]
    advanced = []
    real_advance = containers.advance

    def counting(container, *args, **kwargs):
        advanced.append(container.pk)
        return real_advance(container, *args, **kwargs)

    containers.advance = counting
    try:
        outcomes = run_batch([functools.partial(execution.conclude, p, result=p.kwargs["value"]) for p in prepared],
                             around=containers.swarms_advanced_once)
    finally:
        containers.advance = real_advance
    assert [error for _, error in outcomes] == [None] * 3
    assert advanced == [swarm.pk]  # once for the three ends
    members = swarm.members
    assert members.filter(status=Status.COMPLETED).count() == 3
    assert members.filter(status=Status.QUEUED).count() == 3  # the limit, filled again
