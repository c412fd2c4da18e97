"""Single tasks: statuses, events, retries, timeouts, NonRetryable and callbacks."""

from __future__ import annotations

import pytest

from tasks_app.models import Event, Run, RunStatus, Signature, Status
from tasks_app.registry import NonRetryable, task
from tasks_app.services import execution
from tasks_app.services.errors import PayloadTooLarge, SpecError
from tests.drain import drain

pytestmark = pytest.mark.django_db


@task("tests.non_retryable")
def non_retryable(ctx):
    raise NonRetryable("give up")


@task("tests.slow", timeout=0.2)
def slow(ctx, seconds: float = 2):
    import time

    time.sleep(seconds)
    return "late"


@task("tests.not_json")
def not_json(ctx):
    return {1, 2}


def submit(owner, spec, **kw) -> Signature:
    return execution.submit(spec, owner=owner, **kw)


def event_types(sig: Signature) -> list[str]:
    return list(Event.objects.filter(signature_ref=sig.pk).values_list("type", flat=True))


def test_a_task_moves_pending_queued_running_completed_with_an_event_each(owner):
    sig = submit(owner, {"task": "examples.echo", "kwargs": {"value": 7}})
    assert sig.status == Status.QUEUED
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result, sig.progress, sig.attempts) == (Status.COMPLETED, 7, 100, 1)
    assert event_types(sig) == ["created", "queued", "running", "completed"]
    assert sig.started_at <= sig.finished_at


def test_run_false_leaves_it_pending(owner):
    sig = submit(owner, {"task": "examples.noop"}, run=False)
    assert sig.status == Status.PENDING
    assert drain() == []


def test_idempotency_key_returns_the_same_signature(owner):
    first = submit(owner, {"task": "examples.noop"}, idempotency_key="k1")
    again = submit(owner, {"task": "examples.noop"}, idempotency_key="k1")
    assert first.pk == again.pk
    assert Signature.objects.count() == 1


def test_retries_with_backoff_until_success(owner):
    sig = submit(owner, {"task": "examples.fail", "kwargs": {"times": 2}, "retries": 2, "retry_backoff": 0.5})
    drain()
    sig.refresh_from_db()
    assert (sig.status, sig.result, sig.attempts) == (Status.COMPLETED, "ok", 3)
    runs = list(sig.runs.order_by("number"))
    assert [r.status for r in runs] == [RunStatus.FAILED, RunStatus.FAILED, RunStatus.COMPLETED]
    delays = [e.data["delay"] for e in Event.objects.filter(signature_ref=sig.pk, type="retrying")]
    assert delays == [0.5, 1.0]


def test_last_failure_fails_and_the_error_callback_fires_once_with_the_error(owner):
    sig = submit(owner, {
        "task": "examples.fail", "kwargs": {"message": "kaput"}, "retries": 1, "retry_backoff": 0,
        "on_error": [{"task": "examples.echo"}], "on_success": [{"task": "examples.echo"}],
    })
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.FAILED and sig.attempts == 2
    assert sig.error["type"] == "RuntimeError" and sig.error["message"] == "kaput" and sig.error["task_id"] == sig.pk
    on_error = sig.callbacks.get(callback_on="error")
    on_success = sig.callbacks.get(callback_on="success")
    assert on_error.status == Status.COMPLETED and on_error.runs.count() == 1
    assert on_error.inbound["error"]["message"] == "kaput"
    assert on_success.status == Status.SKIPPED


def test_success_callback_receives_the_result_as_input(owner):
    sig = submit(owner, {"task": "examples.echo", "kwargs": {"value": 21}, "on_success": [{"task": "examples.double"}]})
    drain()
    callback = Signature.objects.get(callback_of=sig)
    assert (callback.status, callback.result) == (Status.COMPLETED, 42)


def test_non_retryable_skips_retries(owner):
    sig = submit(owner, {"task": "tests.non_retryable", "retries": 5})
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.FAILED and sig.attempts == 1
    assert sig.error["type"] == "NonRetryable"


def test_timeout_counts_as_a_failure(owner):
    sig = submit(owner, {"task": "tests.slow", "retries": 1, "retry_backoff": 0})
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.FAILED and sig.attempts == 2
    assert sig.error["type"] == "TimeoutError"


def test_a_result_that_is_not_json_fails_clearly(owner):
    sig = submit(owner, {"task": "tests.not_json"})
    drain()
    sig.refresh_from_db()
    assert sig.status == Status.FAILED and "not JSON" in sig.error["message"]


def test_a_stale_or_duplicate_job_is_ignored(owner):
    sig = submit(owner, {"task": "examples.echo", "kwargs": {"value": 1}})
    drain()
    execution.execute(sig.pk, 1)  # the same job delivered again
    sig.refresh_from_db()
    assert sig.runs.count() == 1 and Event.objects.filter(signature_ref=sig.pk, type="completed").count() == 1


def test_logs_of_any_logger_are_captured(owner):
    sig = submit(owner, {"task": "examples.log", "kwargs": {"lines": 3, "level": "WARNING"}})
    drain()
    assert list(sig.logs.values_list("message", "level")) == [(f"line {i} of 3", 30) for i in (1, 2, 3)]


def test_declared_steps_and_substeps_persist(owner):
    sig = submit(owner, {"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0}})
    drain()
    steps = list(sig.steps.all())
    assert [s.name for s in steps] == ["Create database tables", "Generate application UI",
                                       "Add search and filters", "Configure workflows"]
    assert all(s.status == "completed" for s in steps)
    assert [sub["name"] for sub in steps[1].substeps] == ["Customer list view", "Product list view", "Sales form",
                                                         "Repair board"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"task": "nope.missing"}, "task"),
        ({"task": "examples.echo", "kwargs": [1]}, "kwargs"),
        ({"task": "examples.add", "kwargs": {}}, "kwargs.a"),
        ({"task": "examples.echo", "kwargs": {"bogus": 1}}, "kwargs.bogus"),
        ({"task": "examples.echo", "priority": "urgent"}, "priority"),
        ({"task": "examples.echo", "retries": -1}, "retries"),
        ({"task": "examples.echo", "colour": "red"}, "colour"),
        ({"kind": "pipeline"}, "kind"),
        ({"kind": "chain", "steps": [{"task": "examples.noop"}]}, "steps"),
        ({"kind": "swarm", "tasks": [{"task": "examples.noop"}, {"task": "x"}]}, "tasks[1].task"),
        ("not an object", "spec"),
    ],
)
def test_bad_specs_name_the_field_and_write_nothing(owner, spec, field):
    with pytest.raises(SpecError) as info:
        submit(owner, spec)
    assert field in info.value.errors
    assert not Signature.objects.exists() and not Run.objects.exists()


def test_oversize_spec_is_refused(owner, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_SPEC_BYTES": 100}
    with pytest.raises(PayloadTooLarge):
        submit(owner, {"task": "examples.echo", "kwargs": {"value": "x" * 200}})
