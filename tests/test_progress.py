"""The progress payload and its ETA: history medians, the running step's rate, never negative."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from tasks_app.models import Run, RunStatus, Signature, Status, Step, StepStatus
from tasks_app.services import execution, progress
from tests.drain import drain, step

pytestmark = pytest.mark.django_db
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def history(owner, durations: dict[str, float], count: int = 3) -> None:
    """Completed build_crm runs whose steps took the given seconds."""
    for _ in range(count):
        sig = Signature.objects.create(owner=owner, task_name="examples.build_crm", status=Status.COMPLETED)
        start = T0
        for order, (name, seconds) in enumerate(durations.items(), start=1):
            end = start + dt.timedelta(seconds=seconds)
            Step.objects.create(signature=sig, order=order, name=name, status=StepStatus.COMPLETED,
                                started_at=start, finished_at=end)
            start = end
        Run.objects.create(signature=sig, number=1, status=RunStatus.COMPLETED, started_at=T0, finished_at=start)


STEPS = {"Create database tables": 10, "Generate application UI": 40, "Add search and filters": 20,
         "Configure workflows": 30}


def test_payload_shape_for_a_task_with_steps_and_substeps(owner):
    sig = execution.submit({"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0}}, owner=owner)
    data = progress.payload(sig)
    assert data["title"] == "examples.build_crm" and data["total_steps"] == 4 and data["current_step"] == 1
    assert data["eta_seconds"] is None  # no history, not started: no basis
    drain()
    sig.refresh_from_db()
    data = progress.payload(sig)
    assert (data["status"], data["progress"], data["eta_seconds"]) == ("completed", 100, 0)
    ui = data["steps"][1]
    assert ui["name"] == "Generate application UI" and ui["status"] == "completed" and ui["duration_ms"] is not None
    assert ui["substeps"] == [{"name": n, "done": True} for n in
                              ("Customer list view", "Product list view", "Sales form", "Repair board")]


def test_eta_from_history_and_the_running_steps_rate(owner):
    history(owner, STEPS)
    sig = Signature.objects.create(owner=owner, task_name="examples.build_crm", status=Status.RUNNING,
                                   started_at=T0, progress=37.5)
    Step.objects.create(signature=sig, order=1, name="Create database tables", status=StepStatus.COMPLETED,
                        started_at=T0, finished_at=T0 + dt.timedelta(seconds=10), progress=100)
    Step.objects.create(signature=sig, order=2, name="Generate application UI", status=StepStatus.RUNNING,
                        started_at=T0 + dt.timedelta(seconds=10), progress=50,
                        substeps=[{"name": "a", "done": True}, {"name": "b", "done": False}])
    Step.objects.create(signature=sig, order=3, name="Add search and filters")
    Step.objects.create(signature=sig, order=4, name="Configure workflows")
    with time_machine.travel(T0 + dt.timedelta(seconds=40), tick=False):
        data = progress.payload(sig)
    # Running step: 30 s elapsed at 50 % → rate says 30 s more, history says 40 - 30 = 10 s: the larger, 30.
    assert data["eta_seconds"] == 30 + 20 + 30
    assert (data["current_step"], data["current_step_name"]) == (2, "Generate application UI")
    with time_machine.travel(T0 + dt.timedelta(hours=5), tick=False):
        assert progress.payload(sig)["eta_seconds"] >= 0


def test_container_steps_are_members_and_percent_rolls_up(owner):
    chain = execution.submit({"kind": "chain", "steps": [{"task": "examples.noop"}, {"task": "examples.noop"},
                                                          {"task": "examples.noop"}, {"task": "examples.noop"}]},
                             owner=owner)
    step(2)
    data = progress.payload(Signature.objects.get(pk=chain.pk))
    assert [s["status"] for s in data["steps"]] == ["completed", "completed", "pending", "pending"]
    assert data["progress"] == 50 and data["total_steps"] == 4 and data["current_step"] == 3


def test_percent_never_goes_backwards_within_an_attempt(owner):
    sig = execution.submit({"task": "examples.noop"}, owner=owner)
    Signature.objects.filter(pk=sig.pk).update(progress=60)
    from tasks_app.context import TaskContext

    sig.refresh_from_db()
    run = sig.runs.get()
    ctx = TaskContext(sig, run)
    ctx.progress(40)
    ctx.flush()
    sig.refresh_from_db()
    assert sig.progress == 60


def test_a_run_slower_than_history_gets_proportionally_longer_estimates(owner):
    history(owner, STEPS)
    sig = Signature.objects.create(owner=owner, task_name="examples.build_crm", status=Status.RUNNING,
                                   started_at=T0, progress=25)
    Step.objects.create(signature=sig, order=1, name="Create database tables", status=StepStatus.COMPLETED,
                        started_at=T0, finished_at=T0 + dt.timedelta(seconds=20), progress=100)  # twice the median
    for order, name in enumerate(["Generate application UI", "Add search and filters", "Configure workflows"], 2):
        Step.objects.create(signature=sig, order=order, name=name)
    with time_machine.travel(T0 + dt.timedelta(seconds=20), tick=False):
        assert progress.payload(sig)["eta_seconds"] == 2 * (40 + 20 + 30)


def test_the_current_member_of_a_swarm_longer_than_the_listed_steps(owner, monkeypatch):
    monkeypatch.setattr(progress, "MAX_MEMBER_STEPS", 3)
    swarm = execution.submit({"kind": "swarm", "tasks": [{"task": "examples.noop", "name": f"m{i}"} for i in range(6)]},
                             owner=owner, run=False)
    members = swarm.members.order_by("position")

    def current() -> tuple[int, str | None, int]:
        data = progress.payload(Signature.objects.get(pk=swarm.pk))
        return data["current_step"], data["current_step_name"], data["total_steps"]

    Signature.objects.filter(pk__in=[m.pk for m in members[:3]]).update(status=Status.COMPLETED)
    assert current() == (4, "m3", 6)  # the first yet to run, past the three listed
    Signature.objects.filter(pk=members[4].pk).update(status=Status.RUNNING)
    assert current() == (5, "m4", 6)  # one under way comes first
    swarm.members.update(status=Status.COMPLETED)
    assert current() == (6, None, 6)  # all ended: the last step of 6, not of the 3 listed


def runs_with(owner, step_seconds: list[dict[str, float]]) -> None:
    """Completed build_crm runs, one per dict of step seconds."""
    for durations in step_seconds:
        sig = Signature.objects.create(owner=owner, task_name="examples.build_crm", status=Status.COMPLETED)
        start = T0
        for order, (name, seconds) in enumerate(durations.items(), start=1):
            Step.objects.create(signature=sig, order=order, name=name, status=StepStatus.COMPLETED,
                                started_at=start, finished_at=start + dt.timedelta(seconds=seconds))
            start += dt.timedelta(seconds=seconds)


def eta_after_a_slow_first_step(owner) -> float:
    """The ETA of a run whose first step took 20 s (its median is 10 s), the other three pending."""
    sig = Signature.objects.create(owner=owner, task_name="examples.build_crm", status=Status.RUNNING, started_at=T0)
    Step.objects.create(signature=sig, order=1, name="Create database tables", status=StepStatus.COMPLETED,
                        started_at=T0, finished_at=T0 + dt.timedelta(seconds=20), progress=100)
    for order, name in enumerate(["Generate application UI", "Add search and filters", "Configure workflows"], 2):
        Step.objects.create(signature=sig, order=order, name=name)
    with time_machine.travel(T0 + dt.timedelta(seconds=20), tick=False):
        return progress.payload(sig)["eta_seconds"]


def test_a_slow_step_says_nothing_of_the_next_when_history_shows_steps_independent(owner):
    # The first step varies from run to run, the others do not follow it: the rest keep their medians.
    runs_with(owner, [{**STEPS, "Create database tables": first} for first in (5, 20, 10, 7, 14, 10, 6, 16)])
    assert eta_after_a_slow_first_step(owner) == 40 + 20 + 30


def test_a_slow_step_carries_over_when_history_shows_runs_differ_in_size(owner):
    # Whole runs are bigger or smaller: a first step twice its median foretells the rest twice theirs.
    sizes = (0.5, 1, 2, 1, 0.7, 1.5, 1)
    runs_with(owner, [{name: seconds * size for name, seconds in STEPS.items()} for size in sizes])
    assert eta_after_a_slow_first_step(owner) == pytest.approx(2 * (40 + 20 + 30), rel=0.02)


def test_the_time_between_steps_counts_too(owner):
    # Each earlier run ended 2 s after its four steps' own 100 s: half a second per step outside the steps.
    runs_with(owner, [STEPS] * 3)
    for sig in Signature.objects.filter(status=Status.COMPLETED):
        Signature.objects.filter(pk=sig.pk).update(finished_at=T0 + dt.timedelta(seconds=100 + 2))
    sig = Signature.objects.create(owner=owner, task_name="examples.build_crm", status=Status.RUNNING, started_at=T0)
    for order, name in enumerate(STEPS, 1):
        Step.objects.create(signature=sig, order=order, name=name)
    with time_machine.travel(T0, tick=False):
        assert progress.payload(sig)["eta_seconds"] == 100 + 4 * 0.5
