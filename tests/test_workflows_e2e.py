"""Workflows end to end on real `manage.py worker` processes, a real Redis and the test database,
driven through the API, the services and the Python canvas as a user would.

The capabilities first, one test (or two) each, each with its own marker so it runs alone:
``pytest -m chains``, ``-m swarms``, ``-m bulk_add``, ``-m priority``, ``-m composites``,
``-m exactly_once``, ``-m canvas``. Then graphs, retries and timeouts, and what the workers survive:
an interrupt, a worker killed mid-swarm, Redis losing everything, a cancel while members run.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import close_old_connections, transaction
from django.db.models import Q

from tasks_app.canvas import chain, sign, swarm
from tasks_app.models import TERMINAL, Event, ResumeReport, Run, RunStatus, Signature, Status
from tasks_app.services import containers, execution, lifecycle, reconcile

from .api_helpers import echo, fresh, max_overlap, submitted, url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def settled(*sigs: Signature) -> bool:
    """The signatures, everything in their trees and their callbacks have ended."""
    ids = [s.pk for s in sigs]
    return not Signature.objects.filter(Q(pk__in=ids) | Q(root__in=ids)).exclude(status__in=TERMINAL).exists()


def ran(sig: Signature) -> int:
    return Run.objects.filter(signature=sig).count()


def sleeper(seconds: float, step: float = 0.1, **extra) -> dict:
    return {"task": "examples.sleep", "kwargs": {"seconds": seconds, "step": step}, **extra}


@pytest.mark.chains
def test_a_chain_passes_results_on_and_calls_back_once(owner_client, workers):
    flow = submitted(owner_client, {
        "kind": "chain", "kwargs": {"b": 10},
        "steps": [{"task": "examples.add", "kwargs": {"a": 1}},
                  {"task": "examples.add", "kwargs": {"a": 0}, "on_success": [{"task": "examples.double"}]},
                  {"task": "examples.double"}],
        "on_success": [{"task": "examples.double"}], "on_error": [{"task": "examples.noop"}]})
    workers.burst()
    flow = fresh(flow)
    steps = list(flow.members.order_by("position"))
    assert [s.result for s in steps] == [11, 21, 42]  # 1 + 10; 0 + 10 + 11; 21 × 2 (kwargs reach add, not double)
    assert steps[1].callbacks.get().result == 42  # a step's own callback, given the step's result
    assert flow.status == Status.COMPLETED and flow.result == 42
    success, error = flow.callbacks.get(callback_on="success"), flow.callbacks.get(callback_on="error")
    assert (success.status, success.result, ran(success)) == (Status.COMPLETED, 84, 1)
    assert (error.status, ran(error)) == (Status.SKIPPED, 0)


@pytest.mark.chains
def test_a_failing_or_timed_out_step_stops_the_chain(owner_client, workers):
    failing = submitted(owner_client, {
        "kind": "chain",
        "steps": [echo(1), {"task": "examples.fail", "kwargs": {"message": "bad row"}}, {"task": "examples.double"}],
        "on_success": [{"task": "examples.noop"}], "on_error": [{"task": "examples.echo"}]})
    timed_out = submitted(owner_client, {
        "kind": "chain", "steps": [{"task": "examples.sleep", "kwargs": {"seconds": 5}, "timeout": 0.5}, echo(2)],
        "on_error": [{"task": "examples.noop"}]})
    too_short = owner_client.post("/api/tasks/", {"kind": "chain", "steps": [echo(1)]}, format="json")
    assert too_short.status_code == 400 and "steps" in too_short.json()["errors"]
    workers.burst()
    for flow, last in ((failing, 2), (timed_out, 1)):
        flow = fresh(flow)
        assert flow.status == Status.FAILED
        assert flow.members.get(position=last).status == Status.SKIPPED
        assert ran(flow.members.get(position=last)) == 0  # the steps after the failure never ran
        assert [(c.status, ran(c)) for c in flow.callbacks.filter(callback_on="error")] == [(Status.COMPLETED, 1)]
        assert all(c.status == Status.SKIPPED for c in flow.callbacks.filter(callback_on="success"))
    assert fresh(failing).error["message"] == "bad row" and fresh(timed_out).error["type"] == "TimeoutError"


@pytest.mark.swarms
def test_a_swarm_holds_its_limit_calls_back_per_member_and_once_at_the_end(owner_client, workers):
    group = submitted(owner_client, {
        "kind": "swarm", "max_concurrency": 2, "kwargs": {"step": 0.05},
        "tasks": [{"task": "examples.sleep", "kwargs": {"seconds": 0.2}, "priority": p}
                  for p in ("low", "low", "medium", "high", "high", "low")],
        "task_on_success": [{"task": "examples.noop"}], "on_success": [{"task": "examples.echo"}]})
    workers.start(3)
    workers.drain(lambda: settled(group), timeout=60)
    members = list(group.members.order_by("position"))
    runs = {r.signature_id: r for r in Run.objects.filter(signature__in=members)}
    assert max_overlap(runs.values()) == 2
    assert all(m.kwargs == {"seconds": 0.2, "step": 0.05} for m in members)  # shared kwargs reach each
    started = [m.position for m in sorted(members, key=lambda m: runs[m.pk].pk)]  # in the order queued
    assert started == [3, 4, 2, 0, 1, 5]  # high, then medium, then low; in the order added within each
    assert group.callbacks.filter(callback_on="task_success", status=Status.COMPLETED).count() == 6
    assert group.callbacks.get(callback_on="success").inbound == {"input": [0.2] * 6}  # sleep returns its seconds


@pytest.mark.swarms
def test_stop_after_n_failures_and_an_open_swarm_with_late_members(owner_client, workers):
    brittle = submitted(owner_client, {
        "kind": "swarm", "max_concurrency": 1, "stop_after_n_failures": 2,
        "tasks": [{"task": "examples.fail"}, {"task": "examples.fail"}, echo(1), echo(2)],
        "on_error": [{"task": "examples.noop"}]})
    tolerant = submitted(owner_client, {"kind": "swarm", "tasks": [{"task": "examples.fail"}, echo(1)]})
    open_swarm = submitted(owner_client, {"kind": "swarm", "closed": False, "max_tasks": 4, "tasks": [echo(0)]})
    workers.start(2)
    workers.drain(lambda: fresh(open_swarm).members.filter(status=Status.COMPLETED).exists(), timeout=30)
    assert fresh(open_swarm).status == Status.RUNNING  # its only member ended; it waits for more
    added = owner_client.post(url(open_swarm, "tasks"), {"tasks": [echo(1), echo(2)]}, format="json")
    assert added.status_code == 201
    workers.drain(lambda: fresh(open_swarm).members.filter(status=Status.COMPLETED).count() == 3, timeout=30)
    assert fresh(open_swarm).status == Status.RUNNING
    assert owner_client.post(url(open_swarm, "tasks"), {"tasks": [echo(3)]}, format="json").status_code == 201
    assert fresh(open_swarm).config["closed"] is True  # max_tasks reached closes it
    assert owner_client.post(url(open_swarm, "tasks"), {"tasks": [echo(4)]}, format="json").status_code == 409
    workers.drain(lambda: settled(open_swarm, brittle, tolerant), timeout=30)
    assert fresh(open_swarm).result == [0, 1, 2, 3]
    brittle = fresh(brittle)
    assert brittle.status == Status.FAILED
    assert sorted(brittle.members.values_list("status", flat=True)) == ["failed", "failed", "skipped", "skipped"]
    assert [(c.status, ran(c)) for c in brittle.callbacks.all()] == [(Status.COMPLETED, 1)]
    assert fresh(tolerant).status == Status.COMPLETED  # member failures alone do not fail a swarm


@pytest.mark.swarms
def test_closing_an_open_swarm_through_the_api_completes_it(owner_client, workers):
    group = submitted(owner_client, {"kind": "swarm", "closed": False, "tasks": [echo("a")],
                                     "on_success": [{"task": "examples.echo"}]})
    workers.start(1)
    workers.drain(lambda: fresh(group).members.filter(status=Status.COMPLETED).exists(), timeout=30)
    owner_client.post(url(group, "tasks"), {"tasks": [echo("late")]}, format="json")
    assert owner_client.post(url(group, "close")).status_code == 200
    workers.drain(lambda: fresh(group).status == Status.COMPLETED, timeout=30)
    assert fresh(group).result == ["a", "late"]
    assert fresh(group).callbacks.get().inbound == {"input": ["a", "late"]}


@pytest.mark.bulk_add
def test_bulk_add_in_one_request_atomic_and_not(owner_client, workers):
    group = submitted(owner_client, {"kind": "swarm", "closed": False, "max_concurrency": 20, "tasks": []})
    bad = [echo(0), {"task": "examples.nope"}, echo(2)]
    refused = owner_client.post(url(group, "tasks"), {"tasks": bad}, format="json")
    assert refused.status_code == 400 and "tasks[1].task" in refused.json()["errors"]
    assert group.members.count() == 0  # atomic: nothing added
    partial = owner_client.post(url(group, "tasks"), {"tasks": bad, "atomic": False}, format="json").json()
    assert len(partial["added"]) == 2 and [r["index"] for r in partial["rejected"]] == [1]
    many = owner_client.post(url(group, "tasks"), {"tasks": [echo(i) for i in range(2, 502)], "batch_size": 100},
                             format="json")
    assert many.status_code == 201 and len(many.json()["added"]) == 500
    owner_client.post(url(group, "close"))
    workers.burst(2)
    group = fresh(group)
    assert group.status == Status.COMPLETED
    assert group.result == [0, 2, *range(2, 502)]  # in the order added
    assert Run.objects.filter(signature__parent=group, status=RunStatus.COMPLETED).count() == 502


@pytest.mark.priority
def test_moving_a_queued_task_to_high_lets_it_start_before_the_low_queue(owner, owner_client, workers):
    lows = [execution.submit({"task": "examples.noop", "priority": "low"}, owner=owner) for _ in range(20)]
    late = execution.submit({"task": "examples.noop", "priority": "low"}, owner=owner)
    assert owner_client.patch(url(late), {"priority": "high"}, format="json").status_code == 200
    assert Run.objects.get(signature=late).queue == "orchestrator-high"
    members = submitted(owner_client, {"kind": "swarm", "max_concurrency": 1, "tasks": [echo(i) for i in range(4)]})
    last = members.members.get(position=3)
    assert owner_client.patch(url(last), {"priority": "high"}, format="json").status_code == 200
    workers.burst()
    first_low = min(Run.objects.filter(signature__in=lows).values_list("started_at", flat=True))
    assert Run.objects.get(signature=late).started_at < first_low
    order = [r.signature.position for r in Run.objects.filter(signature__parent=members).order_by("started_at")
             .select_related("signature")]
    assert order[:2] == [0, 3]  # member 0 started with the swarm; the raised member next


@pytest.mark.composites
def test_workflows_nest_and_roll_up(owner_client, workers):
    inner_chain = {"kind": "chain", "steps": [echo(3), {"task": "examples.double"}]}
    top = submitted(owner_client, {  # a chain containing a swarm of two chains and a swarm
        "kind": "chain",
        "steps": [echo(0),
                  {"kind": "swarm", "tasks": [inner_chain, inner_chain, {"kind": "swarm", "tasks": [echo(1)]}]}],
        "on_success": [{"task": "examples.noop"}]})
    workers.burst(2)
    top = fresh(top)
    assert top.status == Status.COMPLETED and top.progress == 100
    assert top.result == [6, 6, [1]]
    callback = top.callbacks.get()
    assert (callback.inbound, ran(callback)) == ({"input": [6, 6, [1]]}, 1)
    children = owner_client.get(url(top)).json()["children"]
    assert [(c["kind"], c["status"]) for c in children] == [("task", "completed"), ("swarm", "completed")]
    inner = owner_client.get(url(children[1]["id"])).json()["children"]
    assert [c["kind"] for c in inner] == ["chain", "chain", "swarm"]
    progress = owner_client.get(url(top, "progress")).json()
    assert progress["total_steps"] == 2 and progress["progress"] == 100
    assert [s["status"] for s in progress["steps"]] == ["completed", "completed"]


@pytest.mark.exactly_once
def test_duplicated_and_concurrent_member_end_handling_changes_nothing(owner, workers):
    group = execution.submit({"kind": "swarm", "max_concurrency": 3, "tasks": [echo(i) for i in range(12)],
                              "task_on_success": [{"task": "examples.noop"}],
                              "on_success": [{"task": "examples.noop"}]}, owner=owner)
    workers.start(3)
    workers.drain(lambda: settled(group), timeout=60)

    def written() -> tuple[int, int]:
        return Run.objects.filter(signature__root=group).count(), Event.objects.filter(root_ref=group.pk).count()

    before = written()

    def handle(member: Signature) -> None:
        try:
            for _ in range(2):
                with transaction.atomic():
                    member = Signature.objects.get(pk=member.pk)
                    member._locked_container = Signature.objects.locked().get(pk=group.pk)
                    containers.member_finished(member)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=handle, args=(m,)) for m in group.members.all() for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert written() == before
    assert group.callbacks.filter(callback_on="task_success").count() == 12
    assert group.callbacks.filter(callback_on="success").count() == 1
    assert Event.objects.filter(signature=group, type="completed").count() == 1
    assert all(ran(m) == 1 for m in group.members.all())


@pytest.mark.canvas
def test_the_python_canvas_reads_naturally(owner, workers):
    workers.start(2)
    flow = chain([sign("examples.add", a=1, b=2), sign("examples.double")]).on_success(sign("examples.double"))
    flow = flow.run(owner=owner)
    assert flow.wait(timeout=30).result == 6
    batch = swarm([], max_concurrency=5, closed=False).run(owner=owner)
    batch.add_task_and_run(sign("examples.echo", value=0))
    batch.add_tasks_and_run([sign("examples.echo", value=i) for i in range(1, 4)])
    batch.add_tasks([sign("examples.echo", value=4)])
    batch.close()
    assert batch.wait(timeout=30).result == [0, 1, 2, 3, 4]
    workers.drain(lambda: flow.signature.callbacks.get().result == 12, timeout=30)


# Graphs, retries and timeouts, and what the workers survive ------------------------------------------


def test_chain_swarm_and_graph_complete_on_a_real_worker(owner, workers):
    chain = execution.submit({"kind": "chain", "steps": [{"task": "examples.add", "kwargs": {"a": 2}},
                                                          {"task": "examples.double"}]}, owner=owner)
    swarm = execution.submit({"kind": "swarm", "tasks": [{"task": "examples.echo", "kwargs": {"value": i}}
                                                         for i in range(5)]}, owner=owner)
    graph = execution.submit({"kind": "graph", "nodes": {"c": {"task": "examples.classify", "kwargs": {"value": 80}},
                                                         "hi": {"task": "examples.echo", "kwargs": {"value": "hi"}},
                                                         "lo": {"task": "examples.echo", "kwargs": {"value": "lo"}}},
                              "edges": [{"from": "c", "to": "hi", "when": {"template": "label_is",
                                                                           "params": {"value": "high"}}},
                                        {"from": "c", "to": "lo", "when": {"template": "label_is",
                                                                           "params": {"value": "low"}}}]},
                             owner=owner)
    workers.burst()
    assert Signature.objects.get(pk=chain.pk).result == 4
    assert Signature.objects.get(pk=swarm.pk).result == [0, 1, 2, 3, 4]
    graph.refresh_from_db()
    assert graph.status == Status.COMPLETED and set(graph.result) == {"c", "hi"}


def test_graph_fan_out_join_skips_and_failure_path_on_real_workers(owner, workers):
    graph = execution.submit({"kind": "graph", "nodes": {
        "start": {"task": "examples.echo", "kwargs": {"value": 3}},
        "a": {"task": "examples.double"}, "b": {"task": "examples.add", "kwargs": {"a": 1}},
        "join": {"task": "examples.echo"},
        "broken": {"task": "examples.fail", "kwargs": {"message": "bad input"}},
        "fallback": {"task": "examples.echo", "kwargs": {"value": "fallback"}},
        "never": {"task": "examples.noop"}, "after_never": {"task": "examples.noop"}},
        "edges": [{"from": "start", "to": "a"}, {"from": "start", "to": "b"},
                  {"from": "a", "to": "join"}, {"from": "b", "to": "join"},
                  {"from": "start", "to": "broken"},
                  {"from": "broken", "to": "fallback", "when": {"on": "failure"}},
                  {"from": "broken", "to": "never"}, {"from": "never", "to": "after_never", "when": {"on": "always"}}]},
        owner=owner)
    workers.burst(2)
    graph.refresh_from_db()
    assert dict(graph.members.values_list("node_key", "status")) == {
        "start": "completed", "a": "completed", "b": "completed", "join": "completed", "broken": "failed",
        "fallback": "completed", "never": "skipped", "after_never": "skipped"}
    assert graph.members.get(node_key="join").inbound == {"input": {"a": 6, "b": 4}}
    assert graph.status == Status.COMPLETED


@pytest.mark.swarms
def test_max_concurrency_holds_across_three_workers(owner, workers):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 2, "tasks": [sleeper(0.3) for _ in range(9)]},
                             owner=owner)
    workers.start(3)
    workers.drain(lambda: fresh(swarm).status == Status.COMPLETED, timeout=60)
    runs = list(Run.objects.filter(signature__parent=swarm))
    assert len(runs) == 9 and all(r.status == RunStatus.COMPLETED for r in runs)
    assert max_overlap(runs) == 2
    assert len({r.worker_name for r in runs}) >= 2  # the work really was shared


@pytest.mark.priority
def test_a_high_priority_task_starts_before_a_long_queue_of_low_ones(owner, workers):
    lows = [execution.submit({"task": "examples.noop", "priority": "low"}, owner=owner) for _ in range(20)]
    high = execution.submit({"task": "examples.noop", "priority": "high"}, owner=owner)
    workers.burst()
    first_low = min(Run.objects.filter(signature__in=lows).values_list("started_at", flat=True))
    assert Run.objects.get(signature=high).started_at < first_low


def test_retries_with_backoff_on_the_scheduler_and_timeouts(owner, workers):
    flaky = execution.submit({"task": "examples.fail", "kwargs": {"times": 1}, "retries": 1, "retry_backoff": 1},
                             owner=owner)
    slow = execution.submit({**sleeper(5), "timeout": 0.5, "on_error": [{"task": "examples.noop"}]}, owner=owner)
    workers.start(1, with_scheduler=True)
    workers.drain(lambda: fresh(flaky).status == Status.COMPLETED and fresh(slow).status == Status.FAILED, timeout=40)
    runs = list(Run.objects.filter(signature=flaky).order_by("number"))
    assert (runs[1].started_at - runs[0].finished_at).total_seconds() >= 0.9
    slow.refresh_from_db()
    assert slow.error["type"] == "TimeoutError" and slow.callbacks.get().status in (Status.QUEUED, Status.COMPLETED)


def test_interrupt_kills_a_task_stuck_in_a_blocking_call_within_seconds(owner, workers):
    stuck = execution.submit(sleeper(3600, step=3600, on_error=[{"task": "examples.noop"}]), owner=owner)
    workers.start(1)
    workers.drain(lambda: fresh(stuck).status == Status.RUNNING)
    started = time.monotonic()
    lifecycle.interrupt(Signature.objects.get(pk=stuck.pk), actor="test")
    workers.drain(lambda: "stopped by user" in workers.output() or "killed horse" in workers.output(), timeout=5)
    assert time.monotonic() - started < 5
    after = execution.submit({"task": "examples.echo", "kwargs": {"value": "worker still alive"}}, owner=owner)
    workers.drain(lambda: fresh(after).status == Status.COMPLETED, timeout=20)
    stuck.refresh_from_db()
    assert stuck.status == Status.INTERRUPTED and stuck.callbacks.get().status == Status.PENDING
    assert stuck.runs.get().status == RunStatus.INTERRUPTED


def test_a_worker_killed_mid_swarm_is_replaced_and_every_member_completes_once(owner, workers):
    members = 60  # the chaos suite (bench/chaos.py, tests/test_chaos.py) runs thousands
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 4,
                              "tasks": [sleeper(0.6, 0.2) for _ in range(6)]
                              + [sleeper(0.02, 0.01) for _ in range(members - 6)],
                              "task_on_success": [{"task": "examples.noop"}]}, owner=owner)
    (victim,) = workers.start(1)
    workers.drain(lambda: Run.objects.filter(signature__parent=swarm, status=RunStatus.COMPLETED).count() >= 2)
    workers.drain(lambda: Run.objects.filter(signature__parent=swarm, status=RunStatus.RUNNING).exists())
    workers.kill(victim)
    workers.start(2)  # each reconciles at start: the dead worker's run is queued again from its checkpoint
    workers.drain(lambda: fresh(swarm).status == Status.COMPLETED, timeout=120)
    assert all(m.status == Status.COMPLETED for m in swarm.members.all())
    assert Run.objects.filter(signature__parent=swarm, status=RunStatus.COMPLETED).count() == members
    assert Run.objects.filter(signature__parent=swarm, status=RunStatus.LOST).count() == 1
    assert swarm.callbacks.filter(callback_on="task_success").count() == members
    resumed = [item for report in ResumeReport.objects.filter(trigger="worker start") for item in report.resumed]
    assert [item["reason"] for item in resumed].count("worker gone") == 1


def test_redis_losing_everything_mid_swarm_loses_no_task(owner, workers, redis_loss):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 3, "tasks": [sleeper(0.4, 0.2) for _ in range(9)]},
                             owner=owner)
    workers.start(2)
    workers.drain(lambda: Run.objects.filter(signature__parent=swarm, status=RunStatus.COMPLETED).count() >= 2)
    redis_loss()

    def periodic_reconcile_until_done() -> bool:  # what the scheduler's periodic job does
        reconcile.run_pass(trigger="periodic")
        return fresh(swarm).status == Status.COMPLETED

    workers.drain(periodic_reconcile_until_done, timeout=60, interval=0.5)
    reasons = {item["reason"] for report in ResumeReport.objects.all() for item in report.resumed}
    assert "job missing" in reasons
    swarm.refresh_from_db()
    assert swarm.result == [0.4] * 9
    per_member = [m.runs.filter(status=RunStatus.COMPLETED).count() for m in swarm.members.all()]
    assert per_member == [1] * 9


def test_cancel_while_members_run_leaves_nothing_behind(owner, workers):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 2, "tasks": [sleeper(2, 0.1) for _ in range(6)],
                              "task_on_success": [{"task": "examples.noop"}],
                              "on_success": [{"task": "examples.noop"}]}, owner=owner)
    workers.start(2)
    workers.drain(lambda: Run.objects.filter(signature__parent=swarm, status=RunStatus.RUNNING).count() == 2)
    lifecycle.cancel(Signature.objects.get(pk=swarm.pk), confirm=True, actor="test")
    assert not Signature.objects.exists()
    workers.drain(workers.drained)  # the two members in flight were stopped and nothing else is left
    assert not Signature.objects.exists() and not Run.objects.exists()
    audit = Event.objects.get(type="cancelled")
    assert audit.data["deleted"]["signatures"] == 8
