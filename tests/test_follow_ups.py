"""A work horse goes on with the task jobs queued behind its own (tasks_app.worker.FollowUps): no
fork per chain step or swarm member, and a follow-up can still be stopped, and recovered when its
horse dies."""

from __future__ import annotations

import time

import psutil
import pytest
from django.conf import settings
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from tasks_app.models import ResumeReport, Run, RunStatus, Signature, Status
from tasks_app.services import execution, lifecycle, reconcile, transport
from tasks_app.worker import POP_FOLLOW_UP

from .workers import Workers, subprocess_env

MEDIUM = "orchestrator-medium"


def chain(*steps: dict) -> dict:
    return {"kind": "chain", "steps": list(steps)}


def noop() -> dict:
    return {"task": "examples.noop"}


def status_of(sig: Signature) -> str:
    return Signature.objects.get(pk=sig.pk).status


def step_runs(sig: Signature) -> list[Run]:
    return list(Run.objects.filter(signature__parent=sig).order_by("signature__position", "number"))


def second_step_running(sig: Signature) -> bool:
    return Run.objects.filter(signature__parent=sig, signature__position=1, status=RunStatus.RUNNING).exists()


def finished_jobs() -> set[str]:
    return set(FinishedJobRegistry(MEDIUM, connection=transport.connection(MEDIUM)).get_job_ids())


def forked_jobs() -> set[str]:
    """Jobs RQ ran in a work horse of their own: a follow-up names the job whose horse ran it."""
    connection = transport.connection(MEDIUM)
    jobs = finished_jobs() | started_jobs()
    return {job_id for job_id in jobs if not connection.hget(Job.key_for(job_id), "horse_of")}


def started_jobs() -> set[str]:
    registry = StartedJobRegistry(MEDIUM, connection=transport.connection(MEDIUM))
    return set(registry.get_job_ids())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_chain_runs_its_steps_in_the_work_horse_of_the_first(owner, workers):
    sig = execution.submit(chain(*[noop() for _ in range(4)]), owner=owner)
    workers.start(1)
    workers.drain(lambda: status_of(sig) == Status.COMPLETED)
    runs = step_runs(sig)

    def job_statuses() -> list[JobStatus]:  # RQ's side is written after the database commits
        jobs = Job.fetch_many([r.job_id for r in runs], connection=transport.connection(MEDIUM))
        return [job.get_status(refresh=False) for job in jobs]

    workers.drain(lambda: job_statuses() == [JobStatus.FINISHED] * 4)
    jobs = Job.fetch_many([r.job_id for r in runs], connection=transport.connection(MEDIUM))
    assert forked_jobs() == {runs[0].job_id}  # the first step's horse ran the other three
    assert finished_jobs() == {r.job_id for r in runs}  # and RQ's registry shows every one of them
    assert {r.worker_name for r in runs} == {jobs[0].worker_name}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_with_horse_seconds_0_every_job_has_its_own_work_horse(owner, redis_conn, tmp_path):
    sig = execution.submit(chain(*[noop() for _ in range(3)]), owner=owner)
    pool = Workers(tmp_path, env={**subprocess_env(), "ORCHESTRATOR_HORSE_SECONDS": "0"})
    try:
        pool.start(1)
        pool.drain(lambda: status_of(sig) == Status.COMPLETED)
        # RQ files a job as finished after the database commits: each of the three in turn.
        pool.drain(lambda: forked_jobs() == {r.job_id for r in step_runs(sig)})
    finally:
        pool.stop()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_interrupt_kills_a_follow_up_stuck_in_a_blocking_call(owner, workers):
    sig = execution.submit(chain(noop(), {"task": "examples.sleep", "kwargs": {"seconds": 3600, "step": 3600}}),
                           owner=owner)
    workers.start(1)
    workers.drain(lambda: second_step_running(sig))
    stuck = step_runs(sig)[1]
    assert stuck.job_id not in forked_jobs() and forked_jobs() == {step_runs(sig)[0].job_id}
    started = time.monotonic()
    lifecycle.interrupt(Signature.objects.get(pk=sig.pk), actor="test")
    workers.drain(lambda: "stopping follow-up job" in workers.output(), timeout=5)
    workers.drain(lambda: Job.fetch(stuck.job_id, connection=transport.connection(MEDIUM)).get_status()
                  == JobStatus.FAILED, timeout=5)
    assert time.monotonic() - started < 5
    after = execution.submit({"task": "examples.echo", "kwargs": {"value": "worker still alive"}}, owner=owner)
    workers.drain(lambda: status_of(after) == Status.COMPLETED, timeout=20)
    assert Run.objects.get(pk=stuck.pk).status == RunStatus.INTERRUPTED
    assert status_of(sig) == Status.INTERRUPTED


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_follow_up_whose_horse_dies_is_resumed_by_the_reconciler(owner, workers):
    sig = execution.submit(chain(noop(), {"task": "examples.sleep", "kwargs": {"seconds": 1.5, "step": 0.1}}),
                           owner=owner)
    (worker,) = workers.start(1)
    workers.drain(lambda: second_step_running(sig))
    (horse,) = psutil.Process(worker.pid).children()
    horse.kill()
    cut_off = step_runs(sig)[1]
    workers.drain(lambda: Job.fetch(cut_off.job_id, connection=transport.connection(MEDIUM)).get_status()
                  == JobStatus.FAILED, timeout=10)
    assert worker.poll() is None  # the worker itself carries on
    reconcile.run_pass(trigger="test")
    workers.drain(lambda: status_of(sig) == Status.COMPLETED, timeout=30)
    assert [r.status for r in step_runs(sig)] == [RunStatus.COMPLETED, RunStatus.LOST, RunStatus.COMPLETED]
    (report,) = ResumeReport.objects.filter(trigger="test")
    assert [item["reason"] for item in report.resumed] == ["job ended"]


@pytest.mark.django_db
def test_the_horse_takes_task_jobs_in_queue_order_and_leaves_any_other_job_to_its_worker(redis_conn):
    """The script a horse pops its next job with: the head of the first non-empty queue, if it is a task's."""
    pop = redis_conn.register_script(POP_FOLLOW_UP)
    queues = [f"rq:queue:{name}" for name in settings.ORCHESTRATOR_QUEUES]
    marker = "orchestrator:follow-up:test-worker"
    redis_conn.rpush(queues[1], "orch-7-1", "orch-8-1")
    redis_conn.rpush(queues[2], "orch-9-1")
    redis_conn.rpush(queues[0], "orch-5-2", "3f1c-not-a-task")

    def take() -> str | None:
        popped = pop(keys=[marker, *queues], args=["test-worker", "2026-12-03T08:00:00.000000Z", 60, "orch-4-1"])
        return popped[0].decode() if popped else None

    assert take() == "orch-5-2"
    assert redis_conn.get(marker) == b"orch-5-2"
    assert redis_conn.hget("rq:job:orch-5-2", "status") == b"started"
    assert redis_conn.hget("rq:job:orch-5-2", "worker_name") == b"test-worker"
    assert redis_conn.hget("rq:job:orch-5-2", "horse_of") == b"orch-4-1"
    assert take() is None  # the high queue's head is another kind of job: the worker runs it
    assert redis_conn.lrange(queues[0], 0, -1) == [b"3f1c-not-a-task"]
    redis_conn.delete(queues[0])
    assert [take(), take(), take(), take()] == ["orch-7-1", "orch-8-1", "orch-9-1", None]
