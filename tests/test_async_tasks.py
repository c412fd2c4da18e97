"""`async def` and `threads=True` tasks run in-process: ctx's awaitable calls, logs routed per task
when tasks run side by side, timeouts, and results the database would refuse."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tasks_app.models import LogEntry, Signature, Status, StepStatus
from tasks_app.registry import get_task, task
from tasks_app.services import execution
from tests.drain import drain

# The async calls of ctx run in threads with connections of their own: they must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


@task("tests.async_steps", steps=["Fetch", "Store"])
async def async_steps(ctx, pages: int = 3):
    for name in ("Fetch", "Store"):
        if ctx.step_completed(name):
            continue
        async with ctx.astep(name, substeps=[f"page {i}" for i in range(pages)]) as step:
            for sub in step.remaining():
                await asyncio.sleep(0.01)
                logging.getLogger("tests.scraper").info("%s %s", name, sub)
                await step.asubstep_done(sub)
    return "stored"


@task("tests.async_logs")
async def async_logs(ctx, label: str, lines: int = 20):
    for i in range(lines):
        ctx.log.info("%s line %d", label, i)
        await asyncio.sleep(0.001)
    return label


@task("tests.async_slow", timeout=0.3)
async def async_slow(ctx):
    await asyncio.sleep(5)
    return "late"


@task("tests.async_infinite")
async def async_infinite(ctx):
    return float("inf")


@task("tests.not_a_number")
def not_a_number(ctx, input: float = 0):
    return input * float("nan")


def submit(owner, spec) -> Signature:
    return execution.submit(spec, owner=owner)


def test_examples_async_sleep_reports_progress_checkpoints_and_resumes_from_them(owner):
    sig = submit(owner, {"task": "examples.async_sleep", "kwargs": {"seconds": 0.3, "step": 0.1}})
    Signature.objects.filter(pk=sig.pk).update(checkpoint={"slept": 0.2})  # as a paused earlier run left it
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result, sig.progress) == (Status.COMPLETED, 0.3, 100)
    assert sig.checkpoint == {"slept": pytest.approx(0.3)}


def test_an_async_task_with_steps_records_steps_substeps_and_logs_of_any_logger(owner):
    sig = submit(owner, {"task": "tests.async_steps", "kwargs": {"pages": 2}})
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result) == (Status.COMPLETED, "stored")
    steps = list(sig.steps.order_by("order"))
    assert [(s.name, s.status, s.progress) for s in steps] == [("Fetch", StepStatus.COMPLETED, 100),
                                                                ("Store", StepStatus.COMPLETED, 100)]
    assert all(sub["done"] for s in steps for sub in s.substeps)
    messages = list(LogEntry.objects.filter(signature=sig).values_list("message", flat=True))
    assert messages == ["Fetch page 0", "Fetch page 1", "Store page 0", "Store page 1"]


def test_tasks_side_by_side_on_one_loop_each_log_to_their_own_run(owner):
    sigs = [submit(owner, {"task": "tests.async_logs", "kwargs": {"label": label}}) for label in "abc"]
    prepared = [execution.prepare(sig.pk, 1) for sig in sigs]

    async def together():
        await asyncio.gather(*(execution.run_coroutine(p) for p in prepared))

    asyncio.run(together())
    for sig, label in zip(sigs, "abc", strict=True):
        lines = list(LogEntry.objects.filter(signature=sig).values_list("message", flat=True))
        assert lines == [f"{label} line {i}" for i in range(20)]
        assert Signature.objects.get(pk=sig.pk).status == Status.COMPLETED


def test_an_async_task_past_its_timeout_fails_with_a_timeout_error(owner):
    sig = submit(owner, {"task": "tests.async_slow"})
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.FAILED
    assert sig.error["type"] == "TimeoutError" and "timeout of 0.3 s" in sig.error["message"]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"task": "tests.not_a_number", "kwargs": {"input": 2}}, "not JSON"),
        ({"task": "tests.async_infinite"}, "not JSON"),
        ({"task": "examples.echo", "kwargs": {"value": "x" * 2000}, "retries": 3}, "over the limit of 1000"),
    ],
)
def test_a_result_the_database_would_refuse_fails_the_task_once(owner, settings, spec, problem):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_RESULT_BYTES": 1000}
    sig = submit(owner, spec)
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.FAILED and sig.attempts == 1  # no retry: it would fail the same way
    assert sig.error["type"] == "ValueError" and problem in sig.error["message"]


def test_threads_is_refused_for_an_async_task():
    with pytest.raises(TypeError, match="threads=True is for sync functions"):
        task("tests.async_in_threads", threads=True)(async_logs)


def test_the_registry_says_which_tasks_run_in_slots():
    assert get_task("examples.async_sleep").runs_in_slot and get_task("examples.async_sleep").is_async
    assert get_task("examples.thread_sleep").runs_in_slot and not get_task("examples.thread_sleep").is_async
    assert not get_task("examples.sleep").runs_in_slot


@task("tests.async_flaky", retries=2, retry_backoff=0)
async def async_flaky(ctx):
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} failed")
    return ctx.attempt


@task("tests.async_approval")
async def async_approval(ctx):
    approved = await ctx.arequest_approval("Ship it?", "an async task asks")
    return {"approved": approved}


def test_an_async_task_is_retried_until_an_attempt_succeeds(owner):
    sig = submit(owner, {"task": "tests.async_flaky"})
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result, sig.attempts) == (Status.COMPLETED, 3, 3)


def test_an_async_task_waiting_for_an_approval_holds_no_run_and_continues_with_the_decision(owner):
    from tasks_app.models import RunStatus
    from tasks_app.services import approvals

    sig = submit(owner, {"task": "tests.async_approval"})
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.WAITING_APPROVAL
    assert not sig.runs.filter(status=RunStatus.RUNNING).exists()  # nothing in flight while it waits
    approvals.decide(sig, approve=True, actor="owner")
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result) == (Status.COMPLETED, {"approved": True})
