"""Tasks registered for the benchmarks only; workers import this module (see common.LAUNCHER)."""

from __future__ import annotations

import time

from tasks_app.registry import task

ETA_STEPS = ("Fetch", "Transform", "Validate", "Publish")
SLICES = 10


@task("bench.four_steps", category="bench", steps=ETA_STEPS)
def four_steps(ctx, durations: list[float]):
    """Four declared steps lasting the given seconds each, reporting progress in tenths."""
    for name, seconds in zip(ETA_STEPS, durations, strict=True):
        with ctx.step(name) as step:
            for i in range(SLICES):
                time.sleep(seconds / SLICES)
                step.progress(100 * (i + 1) / SLICES)
    return sum(durations)


SLOWING_STEPS = tuple(f"Stage {i}" for i in range(1, 9))


@task("bench.slowing_steps", category="bench", steps=SLOWING_STEPS)
def slowing_steps(ctx, durations: list[float]):
    """Eight declared steps lasting the given seconds (bench/eta.py makes each longer than the last)."""
    for name, seconds in zip(SLOWING_STEPS, durations, strict=True):
        with ctx.step(name) as step:
            for i in range(SLICES):
                time.sleep(seconds / SLICES)
                step.progress(100 * (i + 1) / SLICES)
    return sum(durations)
