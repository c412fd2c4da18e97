"""Finish callbacks: ``on_finish`` and a swarm's ``task_on_finish`` fire once whatever the outcome,
alongside the success and error ones, with what those receive (``input`` or ``error``)."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from tasks_app.canvas import chain, sign, swarm
from tasks_app.models import CallbackOn, Event, Signature, Status
from tasks_app.services import execution, lifecycle
from tests.drain import drain, step

NOOP = {"task": "examples.noop"}
ECHO = {"task": "examples.echo"}
DOUBLE = {"task": "examples.double"}


def fired(sig: Signature, on: str) -> list[tuple[str, int]]:
    """(status, runs) of each callback of ``sig`` of this kind."""
    return [(c.status, c.runs.count()) for c in sig.callbacks.filter(callback_on=on).order_by("pk")]


def queued_times(sig: Signature) -> int:
    return Event.objects.filter(signature=sig, type="queued").count()


@pytest.mark.django_db
def test_a_task_that_completes_fires_its_finish_callback_once_with_the_result(owner):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 7}, "on_success": [ECHO],
                            "on_error": [NOOP], "on_finish": [DOUBLE]}, owner=owner)
    drain()
    finish = sig.callbacks.get(callback_on=CallbackOn.FINISH)
    assert (finish.status, finish.inbound, finish.result) == (Status.COMPLETED, {"input": 7}, 14)
    assert finish.runs.count() == 1
    assert fired(sig, CallbackOn.SUCCESS) == [(Status.COMPLETED, 1)]
    assert fired(sig, CallbackOn.ERROR) == [(Status.SKIPPED, 0)]


@pytest.mark.django_db
def test_a_failing_task_fires_its_finish_callback_once_after_the_last_attempt_with_the_error(owner):
    sig = execution.submit({"task": "examples.fail", "kwargs": {"message": "disk full"}, "retries": 2,
                            "retry_backoff": 0, "on_success": [NOOP], "on_finish": [ECHO, NOOP]}, owner=owner)
    step(2)  # two failed attempts: retried, nothing fired yet
    assert {c.status for c in sig.callbacks.all()} == {Status.PENDING}
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.attempts) == (Status.FAILED, 3)
    assert fired(sig, CallbackOn.FINISH) == [(Status.COMPLETED, 1), (Status.COMPLETED, 1)]
    cleanup = sig.callbacks.filter(callback_on=CallbackOn.FINISH).order_by("pk").first()
    assert cleanup.inbound["error"]["message"] == "disk full" and "input" not in cleanup.inbound
    assert fired(sig, CallbackOn.SUCCESS) == [(Status.SKIPPED, 0)]


@pytest.mark.django_db
def test_a_task_retried_into_success_fires_its_finish_callback_once(owner):
    sig = execution.submit({"task": "examples.fail", "kwargs": {"times": 1}, "retries": 1, "retry_backoff": 0,
                            "on_finish": [ECHO]}, owner=owner)
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result) == (Status.COMPLETED, "ok")
    finish = sig.callbacks.get()
    assert (finish.status, finish.inbound, queued_times(finish)) == (Status.COMPLETED, {"input": "ok"}, 1)


@pytest.mark.django_db
def test_a_chain_fires_its_finish_callback_once_on_success_and_on_failure(owner):
    good = chain([sign("examples.add", a=1, b=2), sign("examples.double")]).on_finish(ECHO).run(owner=owner)
    bad = chain([sign("examples.echo", value=1), sign("examples.fail", message="step two"), sign("examples.noop")])
    bad = bad.on_success(NOOP).on_finish(ECHO).run(owner=owner)
    drain()
    good, bad = good.refresh().signature, bad.refresh().signature
    assert good.status == Status.COMPLETED and good.callbacks.get().inbound == {"input": 6}
    assert fired(good, CallbackOn.FINISH) == [(Status.COMPLETED, 1)]
    assert bad.status == Status.FAILED and fired(bad, CallbackOn.FINISH) == [(Status.COMPLETED, 1)]
    assert bad.callbacks.get(callback_on=CallbackOn.FINISH).inbound["error"]["message"] == "step two"
    assert fired(bad, CallbackOn.SUCCESS) == [(Status.SKIPPED, 0)]


@pytest.mark.django_db
def test_retrying_a_failed_chain_into_success_does_not_fire_its_finish_callback_again(owner):
    flow = execution.submit({"kind": "chain", "steps": [{"task": "examples.echo", "kwargs": {"value": 1}},
                                                        {"task": "examples.fail", "kwargs": {"times": 1}}],
                             "on_success": [NOOP], "on_finish": [NOOP]}, owner=owner)
    drain()
    flow.refresh_from_db()
    assert flow.status == Status.FAILED and fired(flow, CallbackOn.FINISH) == [(Status.COMPLETED, 1)]
    lifecycle.retry(flow)
    drain()
    flow.refresh_from_db()
    assert flow.status == Status.COMPLETED
    assert fired(flow, CallbackOn.SUCCESS) == [(Status.COMPLETED, 1)]  # the retry completed it: success fires now
    assert fired(flow, CallbackOn.FINISH) == [(Status.COMPLETED, 1)]  # finish already fired, once


@pytest.mark.django_db
def test_a_swarm_fires_task_finish_for_every_member_and_finish_once(owner):
    group = swarm([sign("examples.echo", value=1), sign("examples.fail"), sign("examples.echo", value=3)],
                  max_concurrency=2, task_on_success=[NOOP], task_on_finish=[ECHO]).on_finish(NOOP).run(owner=owner)
    drain()
    group = group.refresh().signature
    assert group.status == Status.COMPLETED and group.result == [1, None, 3]
    per_member = {c.trigger.position: c for c in group.callbacks.filter(callback_on=CallbackOn.TASK_FINISH)}
    assert sorted(per_member) == [0, 1, 2]  # one per member, completed or failed
    assert [per_member[i].inbound for i in (0, 2)] == [{"input": 1}, {"input": 3}]
    assert per_member[1].inbound["error"]["type"] == "RuntimeError"
    assert all(c.status == Status.COMPLETED and c.runs.count() == 1 for c in per_member.values())
    assert group.callbacks.filter(callback_on=CallbackOn.TASK_SUCCESS).count() == 2
    finish = group.callbacks.get(callback_on=CallbackOn.FINISH)
    assert (finish.status, finish.inbound, finish.runs.count()) == (Status.COMPLETED, {"input": [1, None, 3]}, 1)


@pytest.mark.django_db
def test_a_swarm_stopped_by_failures_fires_finish_once_with_the_error(owner):
    group = execution.submit({"kind": "swarm", "max_concurrency": 1, "stop_after_n_failures": 1,
                              "tasks": [{"task": "examples.fail"}, {"task": "examples.noop"}],
                              "task_on_finish": [NOOP], "on_finish": [ECHO], "on_success": [NOOP]}, owner=owner)
    drain()
    group.refresh_from_db()
    assert group.status == Status.FAILED
    finish = group.callbacks.get(callback_on=CallbackOn.FINISH)
    assert (finish.status, finish.runs.count(), finish.inbound["error"]["type"]) == (Status.COMPLETED, 1, "SwarmFailed")
    assert group.callbacks.filter(callback_on=CallbackOn.TASK_FINISH).count() == 1  # the skipped member never ran
    assert fired(group, CallbackOn.SUCCESS) == [(Status.SKIPPED, 0)]


@pytest.mark.django_db
def test_the_detail_lists_finish_callbacks(owner, owner_client):
    sig = execution.submit({"kind": "swarm", "tasks": [{"task": "examples.noop"}], "task_on_finish": [NOOP],
                            "on_finish": [NOOP]}, owner=owner)
    drain()
    callbacks = owner_client.get(f"/api/tasks/{sig.pk}/").json()["callbacks"]
    assert sorted(c["on"] for c in callbacks) == ["finish", "task_finish"]
    assert all(c["status"] == "completed" for c in callbacks)
    bad = owner_client.post("/api/tasks/", {"task": "examples.noop", "on_finish": [{"task": "nope"}]}, format="json")
    assert bad.status_code == 400 and "on_finish[0].task" in bad.json()["errors"]


@pytest.mark.django_db(transaction=True)
def test_two_members_ending_at_once_fire_the_swarms_finish_callbacks_once(owner, redis_conn):
    """Two members complete in two threads, each with its own connection, released together: the
    swarm ends once, its finish callback is queued once, each member's task_finish callback once."""
    group = execution.submit({"kind": "swarm", "max_concurrency": 2, "tasks": [ECHO | {"kwargs": {"value": v}}
                                                                               for v in (1, 2)],
                              "task_on_finish": [NOOP], "on_finish": [ECHO]}, owner=owner)
    claimed = [execution.claim(m.pk, 1) for m in group.members.order_by("position")]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def end(sig: Signature, run) -> None:
        try:
            barrier.wait(timeout=30)
            execution.complete(sig, run, sig.kwargs["value"])
            execution.complete(sig, run, sig.kwargs["value"])  # a duplicate end of the same run changes nothing
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=end, args=pair) for pair in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    group.refresh_from_db()
    assert (group.status, group.result) == (Status.COMPLETED, [1, 2])
    assert Event.objects.filter(signature=group, type=Status.COMPLETED).count() == 1
    finish = group.callbacks.get(callback_on=CallbackOn.FINISH)
    assert (finish.status, finish.inbound, queued_times(finish)) == (Status.QUEUED, {"input": [1, 2]}, 1)
    per_member = group.callbacks.filter(callback_on=CallbackOn.TASK_FINISH)
    assert sorted(c.trigger_id for c in per_member) == sorted(sig.pk for sig, _ in claimed)
    assert all(queued_times(c) == 1 for c in per_member)
