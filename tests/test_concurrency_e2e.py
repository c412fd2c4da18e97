"""Many tasks in flight per worker process (tasks_app.slots), end to end on real workers and Redis:
async members side by side, control per task (interrupt, timeout), a kill -9 with 100 in flight,
a swarm's max_concurrency across processes and slots, and RQ's registries telling the truth."""

from __future__ import annotations

import time

import pytest
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.worker import Worker

from tasks_app.models import CallbackOn, Event, Run, RunStatus, Signature, Status
from tasks_app.services import execution, lifecycle, reconcile, transport

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MEDIUM = "orchestrator-medium"


def async_sleep(seconds: float, step: float = 1, **options) -> dict:
    return {"task": "examples.async_sleep", "kwargs": {"seconds": seconds, "step": step}, **options}


def swarm(tasks: list[dict], max_concurrency: int, **options) -> dict:
    return {"kind": "swarm", "tasks": tasks, "max_concurrency": max_concurrency, **options}


def member_runs(sig: Signature) -> list[Run]:
    return list(Run.objects.filter(signature__parent=sig))


def most_at_once(runs: list[Run]) -> int:
    """The most runs in flight at one instant, from their start and end times."""
    edges = sorted([(r.started_at, 1) for r in runs] + [(r.finished_at, -1) for r in runs])
    current = peak = 0
    for _, change in edges:
        current += change
        peak = max(peak, current)
    return peak


def status_of(sig: Signature) -> str:
    return Signature.objects.get(pk=sig.pk).status


def running_members(sig: Signature) -> int:
    return Run.objects.filter(signature__parent=sig, status=RunStatus.RUNNING).count()


def test_200_async_members_run_at_once_in_one_process(owner, workers):
    sig = execution.submit(swarm([async_sleep(4, step=2) for _ in range(200)], max_concurrency=200), owner=owner)
    started = time.monotonic()
    workers.start(1, args=["--concurrency", "200"])
    workers.drain(lambda: status_of(sig) == Status.COMPLETED, timeout=90)
    runs = member_runs(sig)
    assert len(runs) == 200 and all(r.status == RunStatus.COMPLETED for r in runs)
    assert most_at_once(runs) == 200
    assert time.monotonic() - started < 60  # one at a time would take 800 s
    assert Signature.objects.get(pk=sig.pk).result == [4] * 200


def test_interrupt_stops_one_member_within_a_second_and_its_siblings_go_on(owner, workers):
    sig = execution.submit(swarm([async_sleep(6, step=3) for _ in range(50)], max_concurrency=50), owner=owner)
    workers.start(1, args=["--concurrency", "50"])
    workers.drain(lambda: running_members(sig) == 50, timeout=60)
    victim = Signature.objects.filter(parent=sig).order_by("position")[7]
    run = victim.runs.get()
    lifecycle.interrupt(victim, actor="test")
    asked = time.monotonic()
    connection = transport.connection(MEDIUM)
    workers.drain(lambda: Job.fetch(run.job_id, connection=connection).get_status() == JobStatus.STOPPED,
                  timeout=5, interval=0.05)
    assert time.monotonic() - asked < 1.5  # the coroutine was cancelled, not left to sleep for 6 s
    members = Signature.objects.filter(parent=sig)
    workers.drain(lambda: members.filter(status=Status.COMPLETED).count() == 49, timeout=60)
    assert status_of(victim) == Status.INTERRUPTED  # resumable; the swarm waits for it
    assert Run.objects.get(pk=run.pk).status == RunStatus.INTERRUPTED


def test_a_timeout_fails_one_task_and_leaves_its_siblings_alone(owner, workers):
    late = async_sleep(30, step=10, timeout=1)
    sig = execution.submit(swarm([async_sleep(3) for _ in range(5)] + [late], max_concurrency=10), owner=owner)
    workers.start(1, args=["--concurrency", "10"])
    workers.drain(lambda: status_of(sig) == Status.COMPLETED, timeout=60)
    member = Signature.objects.get(parent=sig, position=5)
    assert member.status == Status.FAILED
    assert member.error["type"] == "TimeoutError" and "timeout of 1 s" in member.error["message"]
    run = member.runs.get()
    assert (run.finished_at - run.started_at).total_seconds() < 5
    assert Signature.objects.filter(parent=sig, status=Status.COMPLETED).count() == 5


def test_max_concurrency_is_exact_across_three_processes_of_50_slots(owner, workers):
    sig = execution.submit(swarm([async_sleep(0.6, step=0.3) for _ in range(120)], max_concurrency=20), owner=owner)
    workers.start(3, args=["--concurrency", "50"])
    workers.drain(lambda: status_of(sig) == Status.COMPLETED, timeout=90)
    runs = member_runs(sig)
    assert len(runs) == 120
    assert most_at_once(runs) == 20
    assert len({r.worker_name for r in runs}) == 3  # every process took its share


def test_a_thread_task_stops_at_its_next_ctx_call_when_interrupted(owner, workers):
    sig = execution.submit({"task": "examples.thread_sleep", "kwargs": {"seconds": 30, "step": 0.5}}, owner=owner)
    sibling = execution.submit({"task": "examples.thread_sleep", "kwargs": {"seconds": 2, "step": 0.5}}, owner=owner)
    workers.start(1, args=["--concurrency", "4"])
    workers.drain(lambda: status_of(sig) == Status.RUNNING and Signature.objects.get(pk=sig.pk).progress > 0)
    run = sig.runs.get()
    lifecycle.interrupt(sig, actor="test")
    connection = transport.connection(MEDIUM)
    workers.drain(lambda: Job.fetch(run.job_id, connection=connection).get_status() == JobStatus.STOPPED,
                  timeout=3, interval=0.05)
    progress = Signature.objects.get(pk=sig.pk).progress
    workers.drain(lambda: status_of(sibling) == Status.COMPLETED, timeout=30)
    time.sleep(1)  # two more steps of the stopped task, had it not stopped
    stopped = Signature.objects.get(pk=sig.pk)
    assert stopped.status == Status.INTERRUPTED and stopped.progress == progress < 100


def test_kill_9_with_100_in_flight_resumes_each_once(owner, workers):
    per_member = [{"task": "examples.noop"}]
    sig = execution.submit(
        swarm([async_sleep(6, step=2) for _ in range(100)], max_concurrency=100, task_on_success=per_member,
              on_success=[{"task": "examples.noop"}]),
        owner=owner,
    )
    [doomed] = workers.start(1, args=["--concurrency", "100"])
    workers.drain(lambda: running_members(sig) == 100, timeout=60)
    workers.kill(doomed)
    workers.running.remove(doomed)
    report = reconcile.run_pass(trigger="test")
    assert report is not None and len(report.resumed) == 100
    workers.start(1, args=["--concurrency", "100"])
    callbacks = Signature.objects.filter(callback_of=sig)
    workers.drain(lambda: status_of(sig) == Status.COMPLETED and callbacks.count() == 101
                  and not callbacks.exclude(status=Status.COMPLETED).exists(), timeout=90)
    for member in Signature.objects.filter(parent=sig):
        runs = list(member.runs.order_by("number"))
        assert [r.status for r in runs] == [RunStatus.LOST, RunStatus.COMPLETED]
        assert runs[1].attempt == 1  # resumed, not retried
        per_member = Signature.objects.filter(callback_of=sig, trigger=member, callback_on=CallbackOn.TASK_SUCCESS)
        assert [c.status for c in per_member] == [Status.COMPLETED]
        assert per_member.get().runs.count() == 1
    at_end = Signature.objects.filter(callback_of=sig, callback_on=CallbackOn.SUCCESS)
    assert [c.status for c in at_end] == [Status.COMPLETED] and at_end.get().runs.count() == 1


@pytest.mark.timeout(600)
def test_kill_9_while_batches_of_ends_commit_resumes_each_member_once(owner, workers):
    """Members claimed and ended in batches (tasks_app.group_commit), the process killed while they
    end: every member completes once, with one result, one completed event and one callback."""
    n = 200
    sig = execution.submit(
        swarm([async_sleep(0.5, step=0.25) for _ in range(n)], max_concurrency=100,
              task_on_success=[{"task": "examples.noop"}], on_success=[{"task": "examples.noop"}]),
        owner=owner,
    )
    [doomed] = workers.start(1, args=["--concurrency", "100"])
    members = Signature.objects.filter(parent=sig)
    workers.drain(lambda: members.filter(status=Status.COMPLETED).count() >= 20, timeout=60, interval=0.02)
    workers.kill(doomed)
    workers.running.remove(doomed)
    assert members.filter(status=Status.COMPLETED).count() < n  # killed in the middle of the ends
    reconcile.run_pass(trigger="test")
    workers.start(1, args=["--concurrency", "100"])
    callbacks = Signature.objects.filter(callback_of=sig)
    passes = [time.monotonic()]

    def done() -> bool:
        # A job the killed process had taken but not yet claimed is still a queued run: the
        # periodic pass (every minute in `orchestrate`) re-sends it once it is a minute old.
        if time.monotonic() - passes[-1] > 10:
            reconcile.run_pass(trigger="test")
            passes.append(time.monotonic())
        return (status_of(sig) == Status.COMPLETED and callbacks.count() == n + 1
                and not callbacks.exclude(status=Status.COMPLETED).exists())

    workers.drain(done, timeout=400)
    assert Signature.objects.get(pk=sig.pk).result == [0.5] * n
    completed_runs = Run.objects.filter(signature__parent=sig, status=RunStatus.COMPLETED)
    assert completed_runs.count() == n and len({r.signature_id for r in completed_runs}) == n
    ended = Event.objects.filter(signature__parent=sig, type="completed")
    assert ended.count() == n and len(set(ended.values_list("signature_id", flat=True))) == n
    per_member = callbacks.filter(callback_on=CallbackOn.TASK_SUCCESS)
    assert sorted(per_member.values_list("trigger_id", flat=True)) == sorted(members.values_list("pk", flat=True))
    assert Run.objects.filter(signature__in=callbacks).count() == n + 1  # each callback ran once


def test_rq_registries_and_counters_show_slot_jobs(owner, workers):
    sig = execution.submit(swarm([async_sleep(2) for _ in range(10)], max_concurrency=10), owner=owner)
    [process] = workers.start(1, args=["--concurrency", "10"])
    workers.drain(lambda: running_members(sig) == 10, timeout=60)
    connection = transport.connection(MEDIUM)
    started = StartedJobRegistry(MEDIUM, connection=connection)
    assert len(started.get_job_ids()) == 10
    workers.drain(lambda: status_of(sig) == Status.COMPLETED, timeout=60)
    jobs = [r.job_id for r in member_runs(sig)]
    workers.drain(lambda: set(jobs) <= set(FinishedJobRegistry(MEDIUM, connection=connection).get_job_ids()))
    assert started.get_job_ids() == []
    [worker] = [w for w in Worker.all(connection=connection) if w.name in workers.registered()]
    assert worker.successful_job_count >= 10


def test_pause_takes_effect_at_the_next_checkpoint_and_resume_continues_from_it(owner, workers):
    sig = execution.submit(async_sleep(3, step=0.5), owner=owner)
    sibling = execution.submit(async_sleep(2, step=0.5), owner=owner)
    workers.start(1, args=["--concurrency", "4"])
    workers.drain(lambda: Signature.objects.get(pk=sig.pk).progress > 0)
    lifecycle.pause(Signature.objects.get(pk=sig.pk), actor="test")
    workers.drain(lambda: sig.runs.filter(status=RunStatus.PAUSED).exists(), timeout=5)
    slept = Signature.objects.get(pk=sig.pk).checkpoint["slept"]
    assert 0 < slept < 3
    workers.drain(lambda: status_of(sibling) == Status.COMPLETED, timeout=20)  # its sibling went on
    lifecycle.resume(Signature.objects.get(pk=sig.pk), actor="test")
    workers.drain(lambda: status_of(sig) == Status.COMPLETED, timeout=20)
    resumed = sig.runs.order_by("number").last()
    assert (resumed.finished_at - resumed.started_at).total_seconds() < 3 - slept + 1.5  # not from zero


def test_a_freed_slot_goes_to_the_highest_priority_task_waiting(owner, workers):
    blockers = [execution.submit(async_sleep(2), owner=owner) for _ in range(2)]
    workers.start(1, args=["--concurrency", "2"])
    workers.drain(lambda: all(status_of(b) == Status.RUNNING for b in blockers))
    low = [execution.submit(async_sleep(0.2, priority="low"), owner=owner) for _ in range(4)]
    high = execution.submit(async_sleep(0.2, priority="high"), owner=owner)
    workers.drain(lambda: all(status_of(s) == Status.COMPLETED for s in [*low, high]), timeout=30)
    first_low = min(Run.objects.get(signature=s).started_at for s in low)
    assert Run.objects.get(signature=high).started_at <= first_low


def test_sigterm_lets_tasks_end_then_hands_the_rest_back_at_once(owner, workers):
    quick = [execution.submit(async_sleep(1), owner=owner) for _ in range(3)]
    slow = [execution.submit(async_sleep(60, step=0.5), owner=owner) for _ in range(3)]
    [process] = workers.start(1, args=["--concurrency", "10"])
    workers.drain(lambda: all(status_of(s) == Status.RUNNING for s in quick + slow))
    process.terminate()
    process.wait(timeout=10)
    assert all(status_of(s) == Status.COMPLETED for s in quick)  # ended within the grace
    for sig in slow:
        runs = list(Run.objects.filter(signature=sig).order_by("number"))
        assert [r.status for r in runs] == [RunStatus.HANDED_BACK, RunStatus.QUEUED]  # at once, not at a later pass
        assert status_of(sig) == Status.QUEUED
