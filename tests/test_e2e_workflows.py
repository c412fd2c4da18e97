"""End to end on real `manage.py worker` processes and a real Redis: results, limits, priority,
retries, timeouts, interrupt, worker crashes, Redis loss and cancel."""

from __future__ import annotations

import time

import pytest

from tasks_app.models import Event, ResumeReport, Run, RunStatus, Signature, Status
from tasks_app.services import execution, lifecycle, reconcile

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def sleeper(seconds: float, step: float = 0.1, **extra) -> dict:
    return {"task": "examples.sleep", "kwargs": {"seconds": seconds, "step": step}, **extra}


def status_of(sig: Signature) -> str:
    return Signature.objects.get(pk=sig.pk).status


def max_overlap(runs) -> int:
    """The largest number of runs that were running at the same instant."""
    points = sorted([(r.started_at, 1) for r in runs] + [(r.finished_at, -1) for r in runs], key=lambda p: (p[0], p[1]))
    current = peak = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak


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


def test_max_concurrency_holds_across_three_workers(owner, workers):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 2, "tasks": [sleeper(0.3) for _ in range(9)]},
                             owner=owner)
    workers.start(3)
    workers.drain(lambda: status_of(swarm) == Status.COMPLETED, timeout=60)
    runs = list(Run.objects.filter(signature__parent=swarm))
    assert len(runs) == 9 and all(r.status == RunStatus.COMPLETED for r in runs)
    assert max_overlap(runs) == 2
    assert len({r.worker_name for r in runs}) >= 2  # the work really was shared


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
    workers.drain(lambda: status_of(flaky) == Status.COMPLETED and status_of(slow) == Status.FAILED, timeout=40)
    runs = list(Run.objects.filter(signature=flaky).order_by("number"))
    assert (runs[1].started_at - runs[0].finished_at).total_seconds() >= 0.9
    slow.refresh_from_db()
    assert slow.error["type"] == "TimeoutError" and slow.callbacks.get().status in (Status.QUEUED, Status.COMPLETED)


def test_interrupt_kills_a_task_stuck_in_a_blocking_call_within_seconds(owner, workers):
    stuck = execution.submit(sleeper(3600, step=3600, on_error=[{"task": "examples.noop"}]), owner=owner)
    workers.start(1)
    workers.drain(lambda: status_of(stuck) == Status.RUNNING)
    started = time.monotonic()
    lifecycle.interrupt(Signature.objects.get(pk=stuck.pk), actor="test")
    workers.drain(lambda: "stopped by user" in workers.output() or "killed horse" in workers.output(), timeout=5)
    assert time.monotonic() - started < 5
    after = execution.submit({"task": "examples.echo", "kwargs": {"value": "worker still alive"}}, owner=owner)
    workers.drain(lambda: status_of(after) == Status.COMPLETED, timeout=20)
    stuck.refresh_from_db()
    assert stuck.status == Status.INTERRUPTED and stuck.callbacks.get().status == Status.PENDING
    assert stuck.runs.get().status == RunStatus.INTERRUPTED


def test_a_worker_killed_mid_swarm_is_replaced_and_every_member_completes_once(owner, workers):
    members = 60  # the chaos suite (bench/chaos.py, tests/test_chaos.py) runs thousands
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 4,
                              "tasks": [sleeper(0.6, 0.2) for _ in range(6)] + [sleeper(0.02, 0.01) for _ in range(members - 6)],
                              "task_on_success": [{"task": "examples.noop"}]}, owner=owner)
    (victim,) = workers.start(1)
    workers.drain(lambda: Run.objects.filter(signature__parent=swarm, status=RunStatus.COMPLETED).count() >= 2)
    workers.drain(lambda: Run.objects.filter(signature__parent=swarm, status=RunStatus.RUNNING).exists())
    workers.kill(victim)
    workers.start(2)  # each reconciles at start: the dead worker's run is queued again from its checkpoint
    workers.drain(lambda: status_of(swarm) == Status.COMPLETED, timeout=120)
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
        return status_of(swarm) == Status.COMPLETED

    workers.drain(periodic_reconcile_until_done, timeout=60, interval=0.5)
    reasons = {item["reason"] for report in ResumeReport.objects.all() for item in report.resumed}
    assert "job missing" in reasons
    swarm.refresh_from_db()
    assert swarm.result == [0.4] * 9
    per_member = [m.runs.filter(status=RunStatus.COMPLETED).count() for m in swarm.members.all()]
    assert per_member == [1] * 9


def test_cancel_while_members_run_leaves_nothing_behind(owner, workers):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 2, "tasks": [sleeper(2, 0.1) for _ in range(6)],
                              "task_on_success": [{"task": "examples.noop"}], "on_success": [{"task": "examples.noop"}]},
                             owner=owner)
    workers.start(2)
    workers.drain(lambda: Run.objects.filter(signature__parent=swarm, status=RunStatus.RUNNING).count() == 2)
    lifecycle.cancel(Signature.objects.get(pk=swarm.pk), confirm=True, actor="test")
    assert not Signature.objects.exists()
    time.sleep(3)  # let the workers drain whatever was in flight
    assert not Signature.objects.exists() and not Run.objects.exists()
    audit = Event.objects.get(type="cancelled")
    assert audit.data["deleted"]["signatures"] == 8
