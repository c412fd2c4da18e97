"""The life of a signature: submit, start, claim, execute, complete, fail, call back.

Every transition is a guarded update (``filter(pk=..., status__in=allowed).update(...)``; zero
rows means another process won) with its Event, in one transaction; jobs go out after commit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import F, Max
from django.db.models.functions import Coalesce
from django.utils import timezone
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from ..context import ApprovalPending, PauseRequested, StopRequested, TaskContext, off_loop
from ..models import (
    CallbackOn,
    Kind,
    Run,
    RunStatus,
    Signature,
    Status,
    Step,
)
from ..registry import NonRetryable, TaskDef, get_task
from . import bulk, events, live, logs, specs, transport

MAX_RETRY_DELAY = 3600.0  # seconds: exponential backoff stops growing at an hour


def retry_on_conflict(fn: Callable) -> Callable:
    """Re-run a transactional service when the database reports a deadlock or a lock timeout."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for attempt in range(5):
            try:
                return fn(*args, **kwargs)
            except OperationalError as exc:
                if attempt == 4 or transaction.get_connection().in_atomic_block:
                    raise
                if "deadlock" not in str(exc).lower() and "locked" not in str(exc).lower():
                    raise
                time.sleep(0.05 * (attempt + 1))

    return wrapper


# Submitting and starting ----------------------------------------------------------------------


@bulk.collector_paused()
def submit(raw_spec: Any, *, owner, run: bool = True, idempotency_key: str | None = None,
           actor: str = "system") -> Signature:
    """Validate a spec, write its tree and (by default) start it."""
    spec = specs.validate(raw_spec, owner=owner)  # the owner's saved workflows resolve now
    with transaction.atomic():
        if idempotency_key:
            existing = Signature.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
            if existing is not None:
                return existing
        sig = specs.build(spec, owner=owner, idempotency_key=idempotency_key)
        events.record(sig, "created", actor=actor, kind=sig.kind, task=sig.task_name)
        if run:
            start(sig, actor=actor)
    return sig


def start(sig: Signature, *, inbound: dict | None = None, actor: str = "system") -> bool:
    """pending → queued (a task) or running (a container). False when it was not pending."""
    received = {} if inbound is None else {"inbound": inbound}
    if sig.kind == Kind.TASK:
        return queue_run(sig, allowed=[Status.PENDING], attempt=1, actor=actor, **received) is not None
    now = timezone.now()
    if not Signature.objects.filter(pk=sig.pk, status=Status.PENDING).update(
        status=Status.RUNNING, started_at=now, updated_at=now, **received
    ):
        return False
    if inbound is not None:
        sig.inbound = inbound
    sig.status = Status.RUNNING
    events.record(sig, "started", actor=actor)
    from . import containers

    containers.advance(sig)
    return True


def queue_run(sig: Signature, *, allowed, attempt: int, delay: float = 0, actor: str = "system",
              event: str = "queued", **changes) -> Run | None:
    """Move a task signature to queued with a new Run whose job is enqueued after commit.

    ``changes``: more fields of the signature to write with the status (``inbound`` when fired)."""
    now = timezone.now()
    changes.update(status=Status.QUEUED, attempts=attempt, updated_at=now)
    guarded = Signature.objects.filter(pk=sig.pk, status__in=allowed)
    # A signature queued before has attempts >= 1 for good: one still at 0 has no run yet, which
    # the guard confirms for a loaded row that might be stale.
    first = sig.attempts == 0 and guarded.filter(attempts=0).update(**changes)
    if not first and not guarded.update(**changes):
        return None
    for field, value in changes.items():
        setattr(sig, field, value)
    number = 1 if first else (sig.runs.aggregate(n=Max("number"))["n"] or 0) + 1
    run = Run.objects.create(
        signature=sig,
        number=number,
        attempt=attempt,
        queue=transport.QUEUE_BY_PRIORITY[sig.priority],
        job_id=f"orch-{sig.pk}-{number}",
        not_before=now + timezone.timedelta(seconds=delay) if delay else None,
    )
    events.record(sig, event, actor=actor, attempt=attempt, run=number, delay=delay)
    transport.enqueue_run(run, delay=delay)
    return run


# Executing (inside the RQ work horse) ---------------------------------------------------------


@retry_on_conflict
def claim(signature_id: int, number: int) -> tuple[Signature, Run] | None:
    """queued → running for the run and its signature; None when this job lost (stale or duplicate)."""
    now = timezone.now()
    with transaction.atomic():
        if not Run.objects.filter(signature_id=signature_id, number=number, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started_at=now, worker_name=os.environ.get("RQ_WORKER_ID", "")[:200]
        ):
            return None
        if not Signature.objects.filter(pk=signature_id, status=Status.QUEUED).update(
            status=Status.RUNNING, started_at=Coalesce(F("started_at"), now), updated_at=now
        ):
            Run.objects.filter(signature_id=signature_id, number=number).update(
                status=RunStatus.LOST, finished_at=now
            )
            return None
        run = Run.objects.select_related("signature").get(signature_id=signature_id, number=number)
        sig = run.signature
        live.remember(sig)
        taskdef = get_task(sig.task_name)
        if taskdef and taskdef.steps and not sig.steps.exists():
            Step.objects.bulk_create(
                [Step(signature=sig, order=i + 1, name=name) for i, name in enumerate(taskdef.steps)]
            )
        events.record(sig, "running", run=number, attempt=run.attempt, worker=run.worker_name)
    return sig, run


def execute(signature_id: int, number: int) -> None:
    """The RQ job: run one claimed Run of a task signature to its end (an async task on a loop of its own)."""
    prepared = prepare(signature_id, number)
    if prepared is None:
        return
    if prepared.taskdef.is_async:
        asyncio.run(run_coroutine(prepared))
        return
    run_sync(prepared)


@dataclass
class Prepared:
    """A claimed run, ready to call its task."""

    sig: Signature
    run: Run
    taskdef: TaskDef
    ctx: TaskContext
    kwargs: dict


def prepare(signature_id: int, number: int) -> Prepared | None:
    """Claim the run; None when this job lost the claim or the task is not registered (it failed)."""
    claimed = claim(signature_id, number)
    if claimed is None:
        return None
    sig, run = claimed
    taskdef = get_task(sig.task_name)
    if taskdef is None:
        fail(sig, run, error_payload(sig, LookupError(f"task {sig.task_name!r} is not registered")), retryable=False)
        return None
    kwargs = {**sig.kwargs, **{k: v for k, v in sig.inbound.items() if taskdef.accepts(k)}}
    ctx = TaskContext(sig, run)
    # Read the steps here, off any event loop (an async task may ask ctx.step_completed at once):
    # a first run of a task that declares none has none.
    ctx.__dict__["_steps"] = list(sig.steps.all()) if taskdef.steps or run.number > 1 else []
    return Prepared(sig, run, taskdef, ctx, kwargs)


def run_sync(p: Prepared, *, limit: bool = True) -> None:
    """Call a sync task; ``limit=False`` in a thread, where the timeout is watched from outside."""
    try:
        with logs.capture(p.run):
            with time_limit(p.sig.timeout if limit else None):
                result = p.taskdef.fn(p.ctx, **p.kwargs)
    except (PauseRequested, StopRequested, ApprovalPending, Exception) as exc:
        conclude(p, exc=exc)
    else:
        conclude(p, result=result)


async def run_coroutine(p: Prepared, *, db: Callable = off_loop) -> None:
    """Await an async task on the running loop; the database work around it runs off the loop
    (``db``: how; a worker's slots end many runs in one transaction).

    Cancelling the coroutine (an interrupt) ends here without writing anything: the interrupt
    already ended the run."""
    handler = logs.start_capture(p.run)
    outcome: dict = {}
    try:
        with logs.routed(handler):
            async with asyncio.timeout(p.sig.timeout or None) as deadline:
                outcome["result"] = await p.taskdef.fn(p.ctx, **p.kwargs)
    except TimeoutError as exc:
        outcome["exc"] = JobTimeoutException(str(exc)) if deadline.expired() else exc
    except (PauseRequested, StopRequested, ApprovalPending, Exception) as exc:
        outcome["exc"] = exc
    finally:
        await off_loop(logs.end_capture, handler)  # alone: it may wait for the log's flusher thread
    await db(functools.partial(conclude, p, **outcome))


def conclude(p: Prepared, *, result: Any = None, exc: BaseException | None = None) -> None:
    """Record how a task's call ended: its result, a failure (retried while attempts remain), a
    pause or an approval wait. A stop (interrupt, cancel) records nothing: the action ended the run."""
    if isinstance(exc, StopRequested):
        return
    p.ctx.flush()
    if exc is None:
        problem = result_problem(result)
        if problem is None:
            complete(p.sig, p.run, result)
        else:
            fail(p.sig, p.run, error_payload(p.sig, ValueError(problem)), retryable=False)
    elif isinstance(exc, PauseRequested):
        run_paused(p.sig, p.run)
    elif isinstance(exc, ApprovalPending):
        from .approvals import wait

        wait(p.sig, p.run, exc.approval)
    else:
        fail(p.sig, p.run, error_payload(p.sig, exc), retryable=not isinstance(exc, NonRetryable))


def result_problem(result: Any) -> str | None:
    """Why the database would refuse a task's result (not JSON, NaN or infinity, too large), or None.

    Such a result fails the task once, without retries: stored as it is, it made the end of the
    run fail at every attempt, and the run was resumed for ever."""
    try:
        size = len(json.dumps(result, allow_nan=False))
    except (TypeError, ValueError) as exc:
        return f"the task's result is not JSON: {exc}"
    limit = settings.ORCHESTRATOR["MAX_RESULT_BYTES"]
    if size > limit:
        return f"the task's result is {size} bytes of JSON, over the limit of {limit} (ORCHESTRATOR_MAX_RESULT_BYTES)"
    return None


class time_limit(UnixSignalDeathPenalty):
    """SIGALRM-based timeout around the task function only (the work horse runs one job)."""

    def __init__(self, seconds: float | None):
        super().__init__(seconds or 0, JobTimeoutException)

    def setup_death_penalty(self):
        if self._timeout > 0:
            import signal

            signal.signal(signal.SIGALRM, self.handle_death_penalty)
            signal.setitimer(signal.ITIMER_REAL, self._timeout)

    def cancel_death_penalty(self):
        import signal

        if self._timeout <= 0:  # nothing was set up; signal calls would fail outside the main thread
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def error_payload(sig: Signature, exc: BaseException) -> dict:
    if isinstance(exc, JobTimeoutException):
        return {"type": "TimeoutError", "message": f"task exceeded its timeout of {sig.timeout or 0:g} s",
                "traceback": "", "task_id": sig.pk}
    if isinstance(exc, TypeError) and "JSON serializable" in str(exc):
        exc = TypeError(f"the task's result is not JSON: {exc}")
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc))[-20_000:],
        "task_id": sig.pk,
    }


def _end_run(run: Run, status: str, error: dict | None = None) -> bool:
    return bool(
        Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=status, finished_at=timezone.now(), error=error
        )
    )


@retry_on_conflict
def complete(sig: Signature, run: Run, result: Any) -> None:
    from . import graphs

    decided = graphs.decide_outgoing(sig, result)  # edge conditions are user input: evaluated before any lock
    with transaction.atomic(), graphs.decided(decided):
        lock_parent(sig)
        if not _end_run(run, RunStatus.COMPLETED):
            return  # a late result of an interrupted, cancelled or reconciled run is dropped
        finish(sig, Status.COMPLETED, result=result, allowed=(Status.RUNNING, Status.PAUSED))


@retry_on_conflict
def fail(sig: Signature, run: Run, error: dict, *, retryable: bool = True) -> None:
    """A run raised: retry with backoff while attempts remain, else fail the signature."""
    with transaction.atomic():
        lock_parent(sig)
        if not _end_run(run, RunStatus.FAILED, error):
            return
        if retryable and run.attempt <= sig.retries:
            delay = min(MAX_RETRY_DELAY, sig.retry_backoff * 2 ** min(run.attempt - 1, 30))
            Signature.objects.filter(pk=sig.pk, status=Status.RUNNING).update(
                status=Status.PENDING, error=error, progress=0, checkpoint=None
            )
            sig.steps.all().delete()
            queue_run(sig, allowed=[Status.PENDING], attempt=run.attempt + 1, delay=delay, event="retrying")
            return
        finish(sig, Status.FAILED, error=error, allowed=(Status.RUNNING, Status.PAUSED))


def run_paused(sig: Signature, run: Run) -> None:
    with transaction.atomic():
        if _end_run(run, RunStatus.PAUSED):
            events.record(sig, "paused_at_checkpoint", run=run.number)


def lock_parent(sig: Signature) -> Signature | None:
    """Lock the container first, always, so member ends and container actions take locks in one order."""
    if sig.parent_id is None:
        return None
    container = Signature.objects.locked().filter(pk=sig.parent_id).first()
    if container is None:  # cancelled meanwhile: the run row went too, and the caller drops the result
        return None
    sig._locked_container = container  # containers.member_finished uses it in this transaction
    return container


# Ending and calling back ----------------------------------------------------------------------


def finish(sig: Signature, status: str, *, result: Any = None, error: dict | None = None,
           allowed=(Status.RUNNING,), actor: str = "system") -> bool:
    """End a signature (task or container) once: fire its callbacks and tell its container."""
    now = timezone.now()
    changes = {"status": status, "finished_at": now, "updated_at": now}
    if status == Status.COMPLETED:
        changes.update(result=result, progress=100, error=None)
    else:
        changes["error"] = error
    if not Signature.objects.filter(pk=sig.pk, status__in=allowed).update(**changes):
        return False
    for key, value in changes.items():
        setattr(sig, key, value)
    events.record(sig, status, actor=actor, **({"error": _short(error)} if error else {}))
    fire_callbacks(sig)
    if sig.parent_id is not None:
        from . import containers

        containers.member_finished(sig)
    return True


def _short(error: dict | None) -> dict | None:
    return error and {"type": error.get("type"), "message": str(error.get("message"))[:500]}


def fire_callbacks(sig: Signature) -> None:
    """Start the callbacks that match the outcome, and the finish ones whatever it is (they receive
    what the matching ones do); the others can no longer fire and are skipped. Only pending ones
    start, each through a guarded update, so a second end of the same signature fires nothing."""
    if sig.status == Status.COMPLETED:
        fire, skip, inbound = (CallbackOn.SUCCESS, CallbackOn.FINISH), CallbackOn.ERROR, {"input": sig.result}
    else:
        fire, skip, inbound = (CallbackOn.ERROR, CallbackOn.FINISH), CallbackOn.SUCCESS, {"error": sig.error}
    if not _may_have_callbacks(sig):
        return
    pending = list(sig.callbacks.filter(status=Status.PENDING))
    if not pending:
        return
    skip_callbacks(sig, [skip])
    held = _in_paused_container(sig)
    for callback in pending:
        if callback.callback_on not in fire:
            continue
        if held:  # it waits with the rest of the paused workflow; resume queues it
            Signature.objects.filter(pk=callback.pk, status=Status.PENDING).update(status=Status.PAUSED,
                                                                                  inbound=inbound)
        else:
            start(callback, inbound=inbound)


def _may_have_callbacks(sig: Signature) -> bool:
    """A signature's own callbacks come from its spec's on_success, on_error and on_finish, written
    with it: a loaded spec without them saves the query (a container's spec is usually not loaded)."""
    if "spec" in sig.get_deferred_fields() or not sig.spec:
        return True
    return specs.has_callbacks(sig.spec)


def _in_paused_container(sig: Signature) -> bool:
    """A member that ended inside a paused container (a running member carries on to its end)."""
    if sig.parent_id is None:
        return False
    container = sig.__dict__.get("_locked_container")
    if container is not None and container.pk == sig.parent_id:
        return container.status == Status.PAUSED
    return Signature.objects.filter(pk=sig.parent_id, status=Status.PAUSED).exists()


def skip_callbacks(sig: Signature, kinds) -> None:
    sig.callbacks.filter(callback_on__in=kinds, status=Status.PENDING).update(
        status=Status.SKIPPED, finished_at=timezone.now()
    )

