"""The example tasks of CONTRACT.md §3: always registered; the demo, the docs and the tests use them."""

from __future__ import annotations

import asyncio
import logging
import time

from .registry import task

logger = logging.getLogger(__name__)

CRM_STEPS = [
    ("Create database tables", []),
    ("Generate application UI", ["Customer list view", "Product list view", "Sales form", "Repair board"]),
    ("Add search and filters", []),
    ("Configure workflows", []),
]


@task("examples.noop", category="examples")
def noop(ctx):
    """Returns null at once."""
    return None


@task("examples.echo", category="examples")
def echo(ctx, value=None):
    """Returns value."""
    return value


@task("examples.double", category="examples")
def double(ctx, input=0):
    """Returns input * 2 (in a chain, input is the previous step's result)."""
    return input * 2


@task("examples.add", category="examples")
def add(ctx, a: float, b: float = 0, input=None):
    """Returns a + b + (input or 0)."""
    return a + b + (input or 0)


@task("examples.sleep", category="examples")
def sleep(ctx, seconds: float, step: float = 1):
    """Sleeps in a blocking call, reporting progress and a checkpoint every `step` seconds."""
    done = float((ctx.checkpoint_data or {}).get("slept", 0))
    step = max(float(step), 0.01)
    while done < seconds:
        chunk = min(step, seconds - done)
        time.sleep(chunk)
        done += chunk
        ctx.progress(100.0 * done / seconds if seconds else 100, state={"slept": done})
    return seconds


@task("examples.async_sleep", category="examples")
async def async_sleep(ctx, seconds: float, step: float = 1):
    """Awaits asyncio.sleep in steps of `step` seconds, with progress and a checkpoint each step."""
    done = float((ctx.checkpoint_data or {}).get("slept", 0))
    step = max(float(step), 0.01)
    while done < seconds:
        chunk = min(step, seconds - done)
        await asyncio.sleep(chunk)
        done += chunk
        await ctx.aprogress(100.0 * done / seconds if seconds else 100, state={"slept": done})
    return seconds


@task("examples.thread_sleep", category="examples", threads=True)
def thread_sleep(ctx, seconds: float, step: float = 1):
    """examples.sleep in a worker's thread pool (threads=True), beside other tasks of the process."""
    return sleep(ctx, seconds, step)


@task("examples.fail", category="examples")
def fail(ctx, message: str = "boom", times: int | None = None):
    """Raises; with times=N fails only the first N attempts, then returns "ok"."""
    if times is not None and ctx.attempt > times:
        return "ok"
    raise RuntimeError(message)


@task("examples.classify", category="examples")
def classify(ctx, value: float = 0, input=None):
    """Returns {"label": "high" if value >= 50 else "low", "value": value} (for graph routing)."""
    if input is not None and isinstance(input, (int, float)):
        value = input
    return {"label": "high" if value >= 50 else "low", "value": value}


@task("examples.log", category="examples")
def log(ctx, lines: int = 10, level: str = "INFO"):
    """Emits `lines` log records at `level` and returns their count."""
    levelno = logging.getLevelName(level.upper())
    if not isinstance(levelno, int):
        raise ValueError(f"unknown level {level!r}")
    for i in range(lines):
        ctx.log.log(levelno, "line %d of %d", i + 1, lines)
    return lines


@task("examples.build_crm", category="examples", steps=[name for name, _ in CRM_STEPS])
def build_crm(ctx, title: str = "Cellphone Store CRM", seconds_per_item: float = 1, approval: bool = False,
              fail_step: str | None = None):
    """The four-step demo; with approval=true step 4 waits for a human approval; with fail_step (a step's
    name) that step raises on the first attempt, after its first piece of work: the result's `executed`
    counts show what ran twice once it is retried or skipped."""
    executed = dict((ctx.checkpoint_data or {}).get("executed", {}))

    def work(step: str, item: str) -> None:
        time.sleep(seconds_per_item)
        executed[item] = executed.get(item, 0) + 1
        ctx.save_state({"executed": executed})  # the pause point is the substep/step boundary after it
        if step == fail_step and ctx.attempt == 1:
            raise RuntimeError(f"{step} failed (fail_step, first attempt only)")

    for name, substeps in CRM_STEPS:
        if ctx.step_completed(name):
            continue
        if name == "Configure workflows" and approval:
            ctx.require_approval(f"Configure workflows of {title}?",
                                 "The app is built; approve to configure workflows.")
        with ctx.step(name, substeps=substeps) as step:
            ctx.log.info("%s: %s", title, name)
            for sub in step.remaining():
                work(name, sub)
                step.substep_done(sub)
            if not substeps:
                work(name, name)
    return {"title": title, "steps": len(CRM_STEPS), "executed": executed}


@task("orchestrator.approval", category="builtin")
def approval(ctx, title: str = "Approve?", details: str = "", timeout: float | None = None, default: str = "reject",
             input=None):
    """A graph node that waits for a human decision; routes on {"approved": true|false}."""
    approved = ctx.request_approval(title, details, timeout=timeout, default=default)
    return {"approved": approved, "input": input}
