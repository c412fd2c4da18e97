"""Which groups a live message goes to: the signature's, every ancestor's and its owner's."""

from __future__ import annotations

import pytest
from django.db import transaction

from tasks_app.models import Signature
from tasks_app.services import execution, live

pytestmark = pytest.mark.django_db(transaction=True)

CHAIN = {"kind": "chain", "steps": [{"task": "examples.noop"}, {"task": "examples.noop"}]}


class Rollback(Exception):
    pass


def groups(pk: int) -> list[str]:
    return live.groups_for(Signature.objects.get(pk=pk))


def test_a_member_is_published_to_its_workflow_and_its_owner(owner):
    chain = execution.submit(CHAIN, owner=owner, run=False)
    step = chain.members.order_by("position").first()
    assert groups(step.pk) == [f"task-{step.pk}", f"task-{chain.pk}", f"user-{owner.pk}"]


def test_ancestors_read_in_a_transaction_that_rolled_back_are_not_kept(owner):
    """On SQLite a rollback hands the ids of the rows it removed out again, to signatures anywhere
    else in a tree: what was learned about them inside the transaction must not route later messages."""
    live._ANCESTORS.clear()
    first = execution.submit(CHAIN, owner=owner, run=False)
    second = execution.submit(CHAIN, owner=owner, run=False)
    step = first.members.order_by("position").first()
    with pytest.raises(Rollback), transaction.atomic():
        Signature.objects.filter(pk=step.pk).update(parent=second, root=second)
        assert groups(step.pk)[1] == f"task-{second.pk}"
        assert groups(step.pk)[1] == f"task-{second.pk}"  # known for the rest of the transaction
        raise Rollback
    assert groups(step.pk) == [f"task-{step.pk}", f"task-{first.pk}", f"user-{owner.pk}"]

    live._ANCESTORS.clear()
    with transaction.atomic():
        with pytest.raises(Rollback), transaction.atomic():  # a savepoint rolled back, its transaction not
            Signature.objects.filter(pk=step.pk).update(parent=second, root=second)
            assert groups(step.pk)[1] == f"task-{second.pk}"
            raise Rollback
        assert groups(step.pk)[1] == f"task-{first.pk}"
    assert groups(step.pk)[1] == f"task-{first.pk}"


def test_ancestors_read_in_a_transaction_that_committed_are_kept(owner):
    live._ANCESTORS.clear()
    chain = execution.submit(CHAIN, owner=owner, run=False)
    step = chain.members.order_by("position").first()
    with transaction.atomic():
        groups(step.pk)
        assert step.pk not in live._ANCESTORS
    assert live._ANCESTORS[step.pk] == (chain.pk,)
    with transaction.atomic(), transaction.atomic():  # a savepoint inside the transaction
        groups(step.pk + 1)
    assert live._ANCESTORS[step.pk + 1] == (chain.pk,)
