"""Schedules, as services: next-run computation (cron in a zone across DST, interval, start/end),
the claim of a tick, max_active and the catch-up policies, with time frozen (time-machine)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from tasks_app.models import Schedule, Signature, Status
from tasks_app.services import schedules
from tasks_app.services.errors import SpecError

ECHO = {"task": "examples.echo", "kwargs": {"value": 1}}
PARIS = ZoneInfo("Europe/Paris")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ticks(schedule: Schedule, after: datetime, n: int) -> list[datetime]:
    found = []
    for _ in range(n):
        after = schedules.next_tick(schedule, after)
        found.append(after)
    return found


def cron(expr: str, tz: str = "Europe/Paris", **extra) -> Schedule:
    return Schedule(name="s", spec=ECHO, cron=expr, timezone=tz, created_at=utc(2026, 1, 1), **extra)


# Next-run computation ---------------------------------------------------------------------------


def test_a_daily_time_the_spring_change_skips_runs_at_the_first_valid_time_after_it():
    daily = cron("30 2 * * *")  # 02:30 does not exist in Paris on 2026-03-29
    expected = [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]  # 03:00, then 02:30 CEST
    assert ticks(daily, utc(2026, 3, 28, 12), 3) == expected


def test_a_daily_time_keeps_its_wall_clock_across_the_spring_change():
    daily = cron("0 9 * * *")
    found = ticks(daily, utc(2026, 3, 27, 12), 3)
    assert [t.astimezone(PARIS).strftime("%d %H:%M") for t in found] == ["28 09:00", "29 09:00", "30 09:00"]
    assert found[1] - found[0] == timedelta(hours=23)  # the day of the change is 23 hours long


def test_a_daily_time_in_the_repeated_autumn_hour_runs_once():
    daily = cron("30 2 * * *")  # 02:30 happens twice in Paris on 2026-10-25
    assert ticks(daily, utc(2026, 10, 24, 12), 2) == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_an_hourly_cron_runs_every_real_hour_across_the_autumn_change():
    hourly = cron("0 * * * *")
    found = ticks(hourly, utc(2026, 10, 24, 23, 30), 4)
    assert found == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]
    assert [t.astimezone(PARIS).strftime("%H:%M%z") for t in found] == ["02:00+0200", "02:00+0100", "03:00+0100",
                                                                         "04:00+0100"]


def test_a_cron_in_another_zone_reads_its_own_wall_clock():
    tokyo = cron("0 9 * * 1-5", tz="Asia/Tokyo")  # weekdays at 09:00 Tokyo = 00:00 UTC
    assert ticks(tokyo, utc(2026, 5, 1, 12), 2) == [utc(2026, 5, 4, 0), utc(2026, 5, 5, 0)]


def test_interval_ticks_are_anchored_at_start_and_stop_at_end():
    every = Schedule(name="s", spec=ECHO, interval=90, start_at=utc(2026, 5, 1, 10), end_at=utc(2026, 5, 1, 10, 4),
                     created_at=utc(2026, 1, 1))
    assert schedules.next_tick(every, utc(2026, 5, 1, 9)) == utc(2026, 5, 1, 10)
    assert ticks(every, utc(2026, 5, 1, 10, 0, 30), 2) == [utc(2026, 5, 1, 10, 1, 30), utc(2026, 5, 1, 10, 3)]
    assert schedules.next_tick(every, utc(2026, 5, 1, 10, 3)) is None  # 10:04:30 is past end_at


def test_a_cron_waits_for_its_start_date():
    daily = cron("0 9 * * *", start_at=utc(2026, 6, 1, 7))  # 09:00 Paris in summer is 07:00 UTC
    assert schedules.next_tick(daily, utc(2026, 5, 1)) == utc(2026, 6, 1, 7)


# Validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "field"), [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"),
    ({"cron": "* * *"}, "cron"),
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"cron": "0 9 * * *", "interval": 60}, "cron"),
    ({}, "cron"),
    ({"interval": 0}, "interval"),
    ({"interval": "60"}, "interval"),
    ({"interval": 60, "max_active": 0}, "max_active"),
    ({"interval": 60, "catch_up": "all"}, "catch_up"),
    ({"interval": 60, "start_at": utc(2026, 5, 2), "end_at": utc(2026, 5, 1)}, "end_at"),
    ({"interval": 60, "spec": {"task": "no.such.task"}}, "spec.task"),
    ({"interval": 60, "name": ""}, "name"),
])
def test_bad_fields_are_named(owner, data, field):
    with pytest.raises(SpecError) as caught:
        schedules.validate({"name": "s", "spec": ECHO, **data}, owner=owner)
    assert field in caught.value.errors


# Firing ----------------------------------------------------------------------------------------


@pytest.fixture
def clock():
    with time_machine.travel(utc(2026, 5, 1, 10), tick=False) as traveller:
        yield traveller


def every_minute(owner, **extra) -> Schedule:
    return schedules.create({"name": "every minute", "spec": ECHO, "interval": 60, **extra}, owner=owner)


def test_each_tick_writes_one_run_linked_to_its_schedule(owner, clock):
    schedule = every_minute(owner)
    assert schedule.next_run_at == utc(2026, 5, 1, 10, 1)
    assert schedules.fire_due() == 0

    clock.shift(60)
    assert schedules.fire_due() == 1
    assert schedules.fire_due() == 0  # the tick is claimed: a second pass (another scheduler) writes nothing
    assert schedules.fire(schedule.pk, now=utc(2026, 5, 1, 10, 1)) is None

    run = Signature.objects.get(schedule=schedule)
    assert (run.scheduled_for, run.task_name, run.owner) == (utc(2026, 5, 1, 10, 1), "examples.echo", owner)
    schedule.refresh_from_db()
    assert (schedule.next_run_at, schedule.last_run_at) == (utc(2026, 5, 1, 10, 2), utc(2026, 5, 1, 10, 1))


def test_max_active_skips_a_tick_while_that_many_runs_are_active(owner, clock):
    schedule = every_minute(owner, max_active=1)
    clock.shift(60)
    assert schedules.fire_due() == 1
    first = Signature.objects.get(schedule=schedule)
    assert first.status == Status.QUEUED  # no worker in this test: it stays active

    clock.shift(60)
    assert schedules.fire_due() == 0
    schedule.refresh_from_db()
    assert (schedule.skipped_ticks, schedule.next_run_at) == (1, utc(2026, 5, 1, 10, 3))

    Signature.objects.filter(pk=first.pk).update(status=Status.COMPLETED)
    clock.shift(60)
    assert schedules.fire_due() == 1
    assert schedule.runs.count() == 2


@pytest.mark.parametrize(("policy", "runs"), [("skip", 0), ("once", 1)])
def test_ticks_missed_while_no_scheduler_ran_follow_the_catch_up_policy(owner, clock, settings, policy, runs):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "SCHEDULE_GRACE": 10}
    schedule = every_minute(owner, catch_up=policy)
    clock.shift(12 * 60 + 30)  # no scheduler for 12.5 minutes: twelve ticks, the last one 30 s old
    assert schedules.fire_due() == runs
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 5, 1, 10, 13)
    assert [r.scheduled_for for r in schedule.runs.all()] == [utc(2026, 5, 1, 10, 1)] * runs
    assert schedules.fire_due() == 0


def test_an_on_time_tick_runs_whatever_the_policy_and_the_missed_ones_before_it_do_not(owner, clock):
    schedule = every_minute(owner, catch_up="skip")
    clock.shift(5 * 60 + 2)  # the scheduler was away; 10:05 is 2 s old
    assert schedules.fire_due() == 1
    assert [r.scheduled_for for r in schedule.runs.all()] == [utc(2026, 5, 1, 10, 5)]
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 5, 1, 10, 6)


def test_every_tick_still_within_the_grace_period_gets_its_own_run(owner, clock, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "SCHEDULE_GRACE": 300}
    schedule = every_minute(owner, catch_up="skip")
    clock.shift(3 * 60 + 5)  # a slow scheduler: three ticks due, none missed
    assert schedules.fire_due() == 3
    assert sorted(r.scheduled_for for r in schedule.runs.all()) == [utc(2026, 5, 1, 10, m) for m in (1, 2, 3)]


def test_pause_stops_ticks_and_resume_goes_on_from_now(owner, clock):
    schedule = schedules.pause(every_minute(owner), actor="owner")
    clock.shift(5 * 60)
    assert schedules.fire_due() == 0
    assert schedule.next_run_at is None

    schedule = schedules.resume(schedule)
    assert schedule.next_run_at == utc(2026, 5, 1, 10, 6)
    assert not schedule.runs.exists()


def test_run_now_writes_a_linked_run_and_moves_no_tick(owner, clock):
    schedule = every_minute(owner, max_active=1)
    run = schedules.run_now(schedule)
    again = schedules.run_now(schedule)  # max_active governs the clock, not a person's request
    assert {run.schedule_id, again.schedule_id} == {schedule.pk}
    assert run.scheduled_for is None
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 5, 1, 10, 1)


def test_an_edit_recomputes_the_next_run(owner, clock):
    schedule = every_minute(owner)
    schedule = schedules.update(schedule, {"cron": "0 12 * * *", "interval": None, "timezone": "Europe/Paris"})
    assert schedule.next_run_at == utc(2026, 5, 2, 10)  # noon in Paris is 10:00 UTC in May; 12:00 today has passed


def test_a_spec_no_longer_valid_moves_the_tick_and_says_why(owner, clock):
    schedule = every_minute(owner)
    Schedule.objects.filter(pk=schedule.pk).update(spec={"task": "no.such.task"})
    clock.shift(60)
    assert schedules.fire_due() == 0
    schedule.refresh_from_db()
    assert "no.such.task" in schedule.last_error
    assert schedule.next_run_at == utc(2026, 5, 1, 10, 2)


def test_a_saved_workflow_runs_at_its_newest_version_and_must_exist(owner, colleague, clock):
    from tasks_app.services import workflows

    workflows.save(owner=owner, name="nightly", spec={"task": "examples.echo", "kwargs": {"value": 1}})
    schedule = every_minute(owner, spec={"workflow": "nightly"})
    workflows.save(owner=owner, name="nightly", spec={"task": "examples.echo", "kwargs": {"value": 2}})
    clock.shift(60)
    assert schedules.fire_due() == 1
    assert schedule.runs.get().kwargs == {"value": 2}

    with pytest.raises(SpecError) as caught:  # another user's saved workflow is not theirs to name
        every_minute(colleague, spec={"workflow": "nightly"})
    assert "spec.workflow" in caught.value.errors
