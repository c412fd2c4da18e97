"""Swarms: limits, priority order, per-member callbacks, failure limits, late and bulk adds."""

from __future__ import annotations

import pytest

from tasks_app.models import Signature, Status
from tasks_app.services import containers, execution, swarms
from tasks_app.services.errors import InvalidTransition, SpecError
from tests.api_helpers import echo
from tests.drain import drain, step

pytestmark = pytest.mark.django_db


def running_or_queued(swarm) -> int:
    return swarm.members.filter(status__in=[Status.QUEUED, Status.RUNNING]).count()


def test_never_more_than_max_concurrency_queued_and_the_next_starts_when_one_ends(owner):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 3, "tasks": [echo(i) for i in range(10)]},
                             owner=owner)
    assert running_or_queued(swarm) == 3
    step(1)
    assert running_or_queued(swarm) == 3
    drain()
    swarm.refresh_from_db()
    assert swarm.status == Status.COMPLETED and swarm.result == list(range(10))


def test_members_start_by_priority_then_order_added(owner):
    tasks = [echo("low-1", priority="low"), echo("med-1"), echo("high-1", priority="high"),
             echo("low-2", priority="low"), echo("high-2", priority="high")]
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 1, "tasks": tasks}, owner=owner)
    order = [Signature.objects.get(pk=pk).result for pk, _ in drain() if Signature.objects.get(pk=pk).parent_id]
    assert order == ["high-1", "high-2", "med-1", "low-1", "low-2"]
    swarm.refresh_from_db()
    assert swarm.result == ["low-1", "med-1", "high-1", "low-2", "high-2"]  # in the order added


def test_shared_kwargs_and_per_member_callbacks(owner):
    swarm = execution.submit({
        "kind": "swarm", "kwargs": {"b": 100},
        "tasks": [{"task": "examples.add", "kwargs": {"a": 1}}, {"task": "examples.fail"}],
        "task_on_success": [{"task": "examples.double"}], "task_on_error": [{"task": "examples.echo"}],
        "on_success": [{"task": "examples.echo"}],
    }, owner=owner)
    drain()
    swarm.refresh_from_db()
    assert swarm.status == Status.COMPLETED and swarm.result == [101, None]  # failures do not fail it
    ok = swarm.callbacks.get(callback_on="task_success")
    bad = swarm.callbacks.get(callback_on="task_error")
    assert ok.result == 202 and bad.inbound["error"]["type"] == "RuntimeError"
    final = swarm.callbacks.get(callback_on="success")
    assert final.runs.count() == 1 and final.inbound == {"input": [101, None]}


def test_stop_after_n_failures_skips_the_rest_and_fails_once(owner):
    swarm = execution.submit({
        "kind": "swarm", "max_concurrency": 1, "stop_after_n_failures": 2,
        "tasks": [{"task": "examples.fail"}, echo(1), {"task": "examples.fail"}, echo(2), echo(3)],
        "on_error": [{"task": "examples.noop"}], "on_success": [{"task": "examples.noop"}],
    }, owner=owner)
    drain()
    swarm.refresh_from_db()
    statuses = list(swarm.members.order_by("position").values_list("status", flat=True))
    assert statuses == [Status.FAILED, Status.COMPLETED, Status.FAILED, Status.SKIPPED, Status.SKIPPED]
    assert swarm.status == Status.FAILED and swarm.error["type"] == "SwarmFailed"
    assert swarm.callbacks.get(callback_on="error").runs.count() == 1
    assert swarm.callbacks.get(callback_on="success").status == Status.SKIPPED


def test_an_open_swarm_waits_for_close_and_runs_late_members(owner):
    swarm = execution.submit({"kind": "swarm", "closed": False, "tasks": [echo(1)]}, owner=owner)
    drain()
    swarm.refresh_from_db()
    assert swarm.status == Status.RUNNING
    swarms.add_tasks(swarm, [echo(2), echo(3)])
    drain()
    swarm.refresh_from_db()
    assert swarm.status == Status.RUNNING
    swarms.close(swarm)
    swarm.refresh_from_db()
    assert swarm.status == Status.COMPLETED and swarm.result == [1, 2, 3]
    with pytest.raises(InvalidTransition):
        swarms.add_tasks(swarm, [echo(4)])


def test_bulk_add_is_atomic_by_default_and_names_the_bad_index(owner):
    swarm = execution.submit({"kind": "swarm", "closed": False, "tasks": []}, owner=owner)
    with pytest.raises(SpecError) as info:
        swarms.add_tasks(swarm, [echo(1), {"task": "nope"}, echo(3)])
    assert "tasks[1].task" in info.value.errors
    assert swarm.members.count() == 0


def test_non_atomic_bulk_add_adds_the_valid_ones_and_reports_the_rest(owner):
    swarm = execution.submit({"kind": "swarm", "closed": False, "tasks": []}, owner=owner)
    result = swarms.add_tasks(swarm, [echo(1), {"task": "nope"}, echo(3)], atomic=False)
    assert len(result.added) == 2 and list(result.rejected) == [1]
    assert list(swarm.members.order_by("position").values_list("kwargs", flat=True)) == [{"value": 1}, {"value": 3}]


def test_reaching_max_tasks_closes_the_swarm(owner):
    swarm = execution.submit({"kind": "swarm", "closed": False, "max_tasks": 2, "tasks": [echo(1)]}, owner=owner)
    swarms.add_tasks(swarm, [echo(2)])
    swarm.refresh_from_db()
    assert swarm.config["closed"] is True
    with pytest.raises(InvalidTransition):
        swarms.add_tasks(swarm, [echo(3)])
    drain()
    swarm.refresh_from_db()
    assert swarm.status == Status.COMPLETED


def test_bulk_add_of_ten_thousand_is_one_call(owner, django_assert_max_num_queries):
    swarm = execution.submit({"kind": "swarm", "closed": False, "max_concurrency": 5, "tasks": []}, owner=owner)
    # Batched inserts: a handful of queries on PostgreSQL, ~370 on SQLite (Django caps its 999 parameters).
    with django_assert_max_num_queries(500):
        result = swarms.add_tasks(swarm, [echo(i) for i in range(10_000)], batch_size=2000)
    assert len(result.added) == 10_000
    assert running_or_queued(swarm) == 5


def test_member_finished_handling_twice_counts_once(owner):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 2, "tasks": [echo(i) for i in range(4)],
                              "task_on_success": [{"task": "examples.noop"}]}, owner=owner)
    step(1)
    member = swarm.members.get(status=Status.COMPLETED)
    containers.member_finished(member)
    containers.member_finished(member)
    assert running_or_queued(swarm) == 2
    assert swarm.callbacks.filter(trigger=member).count() == 1
    drain()
    swarm.refresh_from_db()
    assert swarm.status == Status.COMPLETED
    assert swarm.callbacks.filter(callback_on="task_success").count() == 4


def test_nested_swarm_of_chains_rolls_up(owner):
    chain = {"kind": "chain", "steps": [echo(1), {"task": "examples.double"}]}
    top = execution.submit({"kind": "swarm", "tasks": [chain, chain, {"kind": "swarm", "tasks": [echo(5)]}],
                            "on_success": [{"task": "examples.echo"}]}, owner=owner)
    drain()
    top.refresh_from_db()
    assert top.status == Status.COMPLETED and top.result == [2, 2, [5]] and top.progress == 100
    assert top.callbacks.get().inbound == {"input": [2, 2, [5]]}
