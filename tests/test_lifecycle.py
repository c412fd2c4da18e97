"""Pause, resume, interrupt, cancel, retry, rerun and priority on tasks and workflows."""

from __future__ import annotations

import pytest

from tasks_app.models import Event, LogEntry, Run, RunStatus, Signature, Status, Step
from tasks_app.registry import task
from tasks_app.services import execution, lifecycle
from tasks_app.services.errors import InvalidTransition, SpecError
from tests.drain import drain, step

pytestmark = pytest.mark.django_db
ACTOR = "tester"


@task("tests.pauses_itself")
def pauses_itself(ctx, parts: int = 4):
    """Pauses its own signature after part 2, as a person clicking Pause would."""
    done = list((ctx.checkpoint_data or {}).get("done", []))
    for part in range(parts):
        if part in done:
            continue
        done.append(part)
        ctx.save_state({"done": done, "runs": (ctx.checkpoint_data or {}).get("runs", 0)})
        if part == 1 and ctx.run.number == 1:
            lifecycle.pause(ctx.signature, actor=ACTOR)
        ctx.checkpoint()
    return done


@task("tests.interrupted_midway")
def interrupted_midway(ctx):
    lifecycle.interrupt(ctx.signature, actor=ACTOR)
    ctx.checkpoint()
    return "should not complete"


def test_pause_queued_then_resume(owner):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}}, owner=owner)
    sig = lifecycle.pause(sig, actor=ACTOR)
    assert sig.status == Status.PAUSED and drain() == []
    assert sig.runs.get().status == RunStatus.PAUSED
    sig = lifecycle.resume(sig, actor=ACTOR)
    assert sig.status == Status.QUEUED
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.COMPLETED and sig.runs.count() == 2


def test_running_work_stops_at_its_checkpoint_and_resumes_without_redoing(owner):
    sig = execution.submit({"task": "tests.pauses_itself"}, owner=owner)
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.PAUSED and sig.checkpoint["done"] == [0, 1]
    lifecycle.resume(sig, actor=ACTOR)
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result) == (Status.COMPLETED, [0, 1, 2, 3])


def test_forbidden_transitions_are_refused(owner):
    sig = execution.submit({"task": "examples.noop"}, owner=owner)
    drain()
    for action in (lifecycle.pause, lifecycle.resume, lifecycle.interrupt, lifecycle.retry):
        with pytest.raises(InvalidTransition):
            action(Signature.objects.get(pk=sig.pk), actor=ACTOR)


def test_a_paused_chain_starts_nothing_new_and_continues_where_it_stopped(owner):
    chain = execution.submit({"kind": "chain", "steps": [{"task": "examples.echo", "kwargs": {"value": 3}},
                                                          {"task": "examples.double"}, {"task": "examples.double"}]},
                             owner=owner)
    step(1)
    lifecycle.pause(chain, actor=ACTOR)
    assert drain() == []
    statuses = list(chain.members.order_by("position").values_list("status", flat=True))
    assert statuses == [Status.COMPLETED, Status.PAUSED, Status.PENDING]
    lifecycle.resume(chain, actor=ACTOR)
    drain()
    chain.refresh_from_db()
    assert (chain.status, chain.result) == (Status.COMPLETED, 12)


def test_a_member_ending_in_a_paused_chain_holds_its_callback_until_resume(owner):
    chain = execution.submit({"kind": "chain", "steps": [
        {"task": "examples.echo", "kwargs": {"value": 3}, "on_success": [{"task": "examples.double"}]},
        {"task": "examples.double"}]}, owner=owner)
    first = chain.members.get(position=0)
    run = first.runs.get()
    member, run = execution.claim(first.pk, run.number)
    lifecycle.pause(chain, actor=ACTOR)
    execution.complete(member, run, 3)  # the running member reaches its end after the pause
    callback = first.callbacks.get()
    assert callback.status == Status.PAUSED and callback.inbound == {"input": 3}
    assert drain() == []
    lifecycle.resume(chain, actor=ACTOR)
    drain()
    chain.refresh_from_db()
    callback.refresh_from_db()
    assert (chain.status, chain.result) == (Status.COMPLETED, 6)
    assert (callback.status, callback.result) == (Status.COMPLETED, 6) and callback.runs.count() == 1


def test_a_paused_swarm_resumes_every_member_exactly_once(owner):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 2,
                              "tasks": [{"task": "examples.echo", "kwargs": {"value": i}} for i in range(6)]},
                             owner=owner)
    step(2)
    lifecycle.pause(swarm, actor=ACTOR)
    assert drain() == []
    lifecycle.resume(swarm, actor=ACTOR)
    drain()
    swarm.refresh_from_db()
    assert swarm.result == list(range(6))
    assert Run.objects.filter(signature__parent=swarm, status=RunStatus.COMPLETED).count() == 6


def test_interrupt_stops_running_work_drops_queued_and_fires_no_callback(owner):
    sig = execution.submit({"task": "tests.interrupted_midway", "on_error": [{"task": "examples.noop"}],
                            "on_success": [{"task": "examples.noop"}]}, owner=owner)
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.INTERRUPTED and sig.result is None
    assert set(sig.callbacks.values_list("status", flat=True)) == {Status.PENDING}
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 1,
                              "tasks": [{"task": "examples.noop"} for _ in range(3)]}, owner=owner)
    lifecycle.interrupt(swarm, actor=ACTOR)
    assert drain() == []
    statuses = sorted(swarm.members.values_list("status", flat=True))
    assert statuses == [Status.INTERRUPTED, Status.PENDING, Status.PENDING]
    resumed = lifecycle.resume(Signature.objects.get(pk=swarm.pk), actor=ACTOR)
    assert resumed.status == Status.RUNNING
    drain()
    swarm.refresh_from_db()
    assert swarm.status == Status.COMPLETED


def test_cancel_needs_confirmation_deletes_the_tree_and_keeps_an_audit_event(owner):
    chain = execution.submit({"kind": "chain", "steps": [{"task": "examples.log", "kwargs": {"lines": 3}},
                                                          {"task": "examples.noop"}],
                              "on_success": [{"task": "examples.noop"}]}, owner=owner)
    step(1)
    with pytest.raises(SpecError):
        lifecycle.cancel(chain, confirm=False, actor=ACTOR)
    audit = lifecycle.cancel(chain, confirm=True, actor=ACTOR)
    assert not Signature.objects.exists() and not Run.objects.exists() and not LogEntry.objects.exists()
    assert audit.type == "cancelled" and audit.actor == ACTOR and audit.signature_ref == chain.pk
    assert audit.data["deleted"]["signatures"] == 4 and audit.data["deleted"]["logs"] == 3
    assert Event.objects.filter(type="cancelled").count() == 1
    assert drain() == []


def test_a_late_job_of_a_cancelled_task_recreates_nothing(owner):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 1},
                            "on_success": [{"task": "examples.noop"}]}, owner=owner)
    lifecycle.cancel(sig, confirm=True, actor=ACTOR)
    execution.execute(sig.pk, 1)
    assert not Signature.objects.exists() and not Run.objects.exists() and not Step.objects.exists()


def test_retry_a_failed_task_and_only_the_failed_members_of_a_swarm(owner):
    sig = execution.submit({"task": "examples.fail", "kwargs": {"times": 1}}, owner=owner)
    drain()
    lifecycle.retry(Signature.objects.get(pk=sig.pk), actor=ACTOR)
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result, sig.attempts, sig.runs.count()) == (Status.COMPLETED, "ok", 2, 2)

    swarm = execution.submit({"kind": "swarm", "stop_after_n_failures": 1, "max_concurrency": 1, "tasks": [
        {"task": "examples.echo", "kwargs": {"value": 1}}, {"task": "examples.fail", "kwargs": {"times": 1}},
        {"task": "examples.echo", "kwargs": {"value": 3}}]}, owner=owner)
    drain()
    swarm.refresh_from_db()
    assert swarm.status == Status.FAILED
    lifecycle.retry(swarm, actor=ACTOR)
    drain()
    swarm.refresh_from_db()
    assert (swarm.status, swarm.result) == (Status.COMPLETED, [1, "ok", 3])
    first = swarm.members.get(position=0)
    assert first.runs.count() == 1  # the completed member did not run again


def test_retry_of_a_graph_reruns_only_failed_nodes(owner):
    graph = execution.submit({"kind": "graph", "nodes": {
        "a": {"task": "examples.echo", "kwargs": {"value": 1}},
        "b": {"task": "examples.fail", "kwargs": {"times": 1}},
        "c": {"task": "examples.noop"}},
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]}, owner=owner)
    drain()
    graph.refresh_from_db()
    assert graph.status == Status.FAILED
    lifecycle.retry(graph, actor=ACTOR)
    drain()
    graph.refresh_from_db()
    assert graph.status == Status.COMPLETED
    assert {m.node_key: m.runs.count() for m in graph.members.all()} == {"a": 1, "b": 2, "c": 1}


def test_rerun_runs_a_completed_workflow_again_and_keeps_history(owner):
    chain = execution.submit({"kind": "chain", "steps": [{"task": "examples.echo", "kwargs": {"value": 2}},
                                                          {"task": "examples.double"}]}, owner=owner)
    drain()
    lifecycle.rerun(Signature.objects.get(pk=chain.pk), actor=ACTOR)
    drain()
    chain.refresh_from_db()
    assert (chain.status, chain.result) == (Status.COMPLETED, 4)
    assert [m.runs.count() for m in chain.members.order_by("position")] == [2, 2]


def test_priority_change_of_a_queued_task_moves_its_queue(owner):
    sig = execution.submit({"task": "examples.noop", "priority": "low"}, owner=owner)
    lifecycle.set_priority(sig, "high", actor=ACTOR)
    assert sig.runs.get().queue == "orchestrator-high"
    with pytest.raises(SpecError):
        lifecycle.set_priority(sig, "urgent", actor=ACTOR)


def test_priority_change_of_a_pending_member_changes_when_it_starts(owner):
    swarm = execution.submit({"kind": "swarm", "max_concurrency": 1,
                              "tasks": [{"task": "examples.echo", "kwargs": {"value": i}} for i in range(3)]},
                             owner=owner)
    last = swarm.members.get(position=2)
    lifecycle.set_priority(last, "high", actor=ACTOR)
    order = [Signature.objects.get(pk=pk).result for pk, _ in drain()]
    assert order == [0, 2, 1]


def test_start_a_stored_signature_once(owner):
    swarm = execution.submit({"kind": "swarm", "tasks": [{"task": "examples.noop"}]}, owner=owner, run=False)
    with pytest.raises(InvalidTransition):
        lifecycle.start(swarm.members.get(), actor=ACTOR)
    assert lifecycle.start(swarm, actor=ACTOR).status == Status.RUNNING
    with pytest.raises(InvalidTransition):
        lifecycle.start(swarm, actor=ACTOR)
    drain()
    swarm.refresh_from_db()
    assert swarm.status == Status.COMPLETED
