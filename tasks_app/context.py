"""What a running task sees: ``ctx`` with progress, steps, logs and checkpoints.

Every ``ctx`` call that reports progress is also a checkpoint: the place where a pause requested
from outside takes effect (``PauseRequested`` ends the run, its state kept for resume).

An ``async def`` task uses the awaitable variants (``await ctx.aprogress(...)``, ``acheckpoint``,
``asave_state``, ``async with ctx.astep(...)``, ``arequest_approval``): each runs the sync call
in a thread of the worker's database pool, so the event loop never waits on the database.
Logging (``ctx.log`` or any logger) only appends to a buffer that a flusher thread writes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from django.conf import settings
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from .models import Run, Signature, Status, Step, StepStatus
from .services import events, live, progress

DONE_STEPS = (StepStatus.COMPLETED, StepStatus.SKIPPED)  # a skipped step (``skip``) counts as done


class PauseRequested(BaseException):
    """Raised at a checkpoint when the signature was paused; a BaseException so tasks don't swallow it."""


class StopRequested(BaseException):
    """Raised at a checkpoint when the signature was interrupted or removed."""


class ApprovalPending(BaseException):
    """Ends the run at an approval request until a decision exists; tasks don't swallow it."""

    def __init__(self, approval):
        self.approval = approval


class StepHandle:
    """One step of a running task, handed out by ``ctx.step``."""

    def __init__(self, ctx: TaskContext, step: Step):
        self._ctx = ctx
        self.step = step

    @property
    def name(self) -> str:
        return self.step.name

    def remaining(self) -> list[str]:
        """Substeps not done yet: a resumed task iterates these and does not redo finished ones."""
        return [s["name"] for s in self.step.substeps if not s["done"]]

    def substep_done(self, name: str) -> None:
        for sub in self.step.substeps:
            if sub["name"] == name:
                sub["done"] = True
        done = sum(1 for s in self.step.substeps if s["done"])
        self.step.progress = 100.0 * done / len(self.step.substeps)
        self.step.save(update_fields=["substeps", "progress"])
        self._ctx._report(force=True)

    def progress(self, percent: float) -> None:
        self.step.progress = max(self.step.progress, min(100.0, float(percent)))
        self._ctx._report()

    async def asubstep_done(self, name: str) -> None:
        await off_loop(self.substep_done, name)

    async def aprogress(self, percent: float) -> None:
        await off_loop(self.progress, percent)


async def off_loop(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run a sync ``ctx`` call in the loop's executor (the worker's database threads), with the
    caller's context variables, so its log records still reach the run's log."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(None, call)


class TaskContext:
    def __init__(self, signature: Signature, run: Run, logger: logging.Logger | None = None):
        self.signature = signature
        self.run = run
        self.log = logger or logging.getLogger(f"tasks.{signature.task_name}")
        self.checkpoint_data: Any = signature.checkpoint
        self._percent = 0.0 if run.attempt > 1 or signature.progress >= 100 else signature.progress
        self._last_write = 0.0
        self._last_control = 0.0
        self._dirty = False
        self._eta: int | None = None
        # Set from outside for a task that runs in a thread beside others (it cannot be killed):
        # "interrupt" or "timeout", raised at its next ctx call.
        self.stop_reason: str | None = None
        self._unsaved_state = False  # a checkpoint given to progress(state=...), written by the next flush

    @functools.cached_property
    def _steps(self) -> list[Step]:
        """Read when the task first reports progress: a task that never does costs no query."""
        return list(self.signature.steps.all())

    @property
    def attempt(self) -> int:
        return self.run.attempt

    # Progress ---------------------------------------------------------------------------------

    def progress(self, percent: float, message: str | None = None, *, state: Any = None) -> None:
        """Report overall progress of a task without declared steps (0-100, never backwards);
        ``state`` saves a checkpoint, written with the progress in one statement."""
        if state is not None:
            self.checkpoint_data = state
            self._unsaved_state = True
        before = self._percent
        self._percent = max(self._percent, min(100.0, float(percent)))
        if message:
            self.log.info(message)
        self._report(force=state is not None, changed=self._percent != before)

    def _overall(self) -> float:
        if not self._steps:
            return self._percent
        total = sum(s.weight for s in self._steps) or 1
        done = sum(s.weight * (100.0 if s.status in DONE_STEPS else s.progress) for s in self._steps)
        return max(self._percent, done / total)

    def _report(self, force: bool = False, changed: bool = False) -> None:
        percent = self._overall()
        changed = changed or force or percent != self._percent
        self._percent = percent
        self._dirty = True
        now = time.monotonic()
        if force or now - self._last_write >= settings.ORCHESTRATOR["PROGRESS_WRITE_INTERVAL"]:
            self.flush()
        if changed:
            self._broadcast()
        self._check_control()

    def flush(self) -> None:
        """Write progress (throttled by the callers) and refresh the ETA the broadcasts carry."""
        if self._unsaved_state:
            Signature.objects.filter(pk=self.signature.pk).update(
                checkpoint=self.checkpoint_data, progress=Greatest(F("progress"), Value(self._percent))
            )
            self._unsaved_state = False
        elif not self._dirty:
            return
        else:
            Signature.objects.filter(pk=self.signature.pk, progress__lt=self._percent).update(progress=self._percent)
        self.signature.progress = max(self.signature.progress, self._percent)
        progress.member_moved(self.signature)  # a workflow's own progress moves with its members'
        # At 100 % nothing is left: no need to read the task's history for an estimate.
        self._eta = 0 if self._percent >= 100 else progress.task_eta(self.signature, self._percent)
        self._last_write = time.monotonic()
        self._dirty = False

    def _broadcast(self) -> None:
        current = next((i for i, s in enumerate(self._steps) if s.status not in DONE_STEPS), len(self._steps) - 1)
        live.progress(
            self.signature,
            percent=self._percent,
            current_step=current + 1 if self._steps else 0,
            total_steps=len(self._steps),
            eta_seconds=self._eta,
            current_step_name=self._steps[current].name if self._steps else None,
        )

    # Steps ------------------------------------------------------------------------------------

    def _get_step(self, name: str, substeps: list[str] | None, weight: float | None) -> Step:
        for step in self._steps:
            if step.name == name:
                return step
        step = Step.objects.create(
            signature=self.signature,
            order=len(self._steps) + 1,
            name=name,
            weight=weight or 1,
            substeps=[{"name": s, "done": False} for s in substeps or []],
        )
        self._steps.append(step)
        return step

    def step_completed(self, name: str) -> bool:
        """True when a previous run completed the step, or a person skipped it: do not run it (again)."""
        return any(s.name == name and s.status in DONE_STEPS for s in self._steps)

    @contextmanager
    def step(self, name: str, substeps: list[str] | None = None, weight: float | None = None) -> Iterator[StepHandle]:
        """A named step; its substeps are kept done across pause and resume."""
        step = self._get_step(name, substeps, weight)
        if substeps and not step.substeps:
            step.substeps = [{"name": s, "done": False} for s in substeps]
        step.status = StepStatus.RUNNING
        step.started_at = step.started_at or timezone.now()
        step.save(update_fields=["status", "started_at", "substeps"])
        self._report(force=True)
        try:
            yield StepHandle(self, step)
        except PauseRequested:
            step.status = StepStatus.PAUSED
            step.save(update_fields=["status"])
            raise
        except BaseException:
            step.status = StepStatus.FAILED
            step.finished_at = timezone.now()
            step.save(update_fields=["status", "finished_at"])
            raise
        step.status = StepStatus.COMPLETED
        step.progress = 100
        for sub in step.substeps:
            sub["done"] = True
        step.finished_at = timezone.now()
        step.save(update_fields=["status", "progress", "substeps", "finished_at"])
        live.publish(self.signature, "step_complete", step={"order": step.order, "name": step.name,
                                                              "duration_ms": step.duration_ms})
        events.record(self.signature, "step_completed", order=step.order, name=step.name, duration_ms=step.duration_ms)
        self._report(force=True)

    # Approvals ------------------------------------------------------------------------------

    def request_approval(self, title: str, details: str = "", timeout: float | None = None,
                         default: str = "reject") -> bool:
        """True or False once a human (or the timeout default) decided. Until then the run ends
        in ``waiting_approval`` without holding a worker, and re-runs from here after the decision."""
        from .services import approvals

        self.flush()
        return approvals.request(self.signature, self.run, title=title, details=details, timeout=timeout,
                                 default=default)

    def require_approval(self, title: str, details: str = "", timeout: float | None = None,
                         default: str = "reject") -> None:
        """Like ``request_approval`` but a rejection raises ``ApprovalRejected``."""
        from .registry import ApprovalRejected

        if not self.request_approval(title, details, timeout, default):
            raise ApprovalRejected(f"{title}: rejected")

    # Checkpoints and control ------------------------------------------------------------------

    def checkpoint(self, state: Any = None) -> None:
        """Save state for a resume (JSON) and honour a pending pause."""
        if state is not None:
            self.save_state(state)
        self.flush()
        self._check_control(force=True)

    def save_state(self, state: Any) -> None:
        """Save state for a resume without stopping here (pair it with a later checkpoint)."""
        self.checkpoint_data = state
        Signature.objects.filter(pk=self.signature.pk).update(checkpoint=state)

    async def aprogress(self, percent: float, message: str | None = None, *, state: Any = None) -> None:
        """``progress`` from an async task; ``state`` saves a checkpoint in the same trip."""
        if state is not None:
            self.checkpoint_data = state
        await off_loop(self.progress, percent, message, state=state)

    async def acheckpoint(self, state: Any = None) -> None:
        await off_loop(self.checkpoint, state)

    async def asave_state(self, state: Any) -> None:
        self.checkpoint_data = state
        await off_loop(self.save_state, state)

    @asynccontextmanager
    async def astep(self, name: str, substeps: list[str] | None = None,
                    weight: float | None = None) -> AsyncIterator[StepHandle]:
        """``step`` for an async task: entering and leaving the step run off the loop."""
        manager = self.step(name, substeps, weight)
        handle = await off_loop(manager.__enter__)
        try:
            yield handle
        except BaseException as exc:
            if not await off_loop(manager.__exit__, type(exc), exc, exc.__traceback__):
                raise
        else:
            await off_loop(manager.__exit__, None, None, None)

    async def arequest_approval(self, title: str, details: str = "", timeout: float | None = None,
                                default: str = "reject") -> bool:
        return await off_loop(self.request_approval, title, details, timeout, default)

    async def arequire_approval(self, title: str, details: str = "", timeout: float | None = None,
                                default: str = "reject") -> None:
        await off_loop(self.require_approval, title, details, timeout, default)

    def _check_control(self, force: bool = False) -> None:
        if self.stop_reason == "interrupt":
            raise StopRequested()
        if self.stop_reason == "timeout":
            from rq.timeouts import JobTimeoutException

            raise JobTimeoutException("the task exceeded its timeout")
        now = time.monotonic()
        if not force and now - self._last_control < 0.2:
            return
        self._last_control = now
        status = Signature.objects.filter(pk=self.signature.pk).values_list("status", flat=True).first()
        if status == Status.PAUSED:
            self.flush()
            raise PauseRequested()
        if status is None or status in (Status.INTERRUPTED,):
            raise StopRequested()
