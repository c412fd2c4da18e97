"""Schedules: a spec run on a clock (a cron expression in a time zone, or an interval in seconds).

RQ's cron (tasks_app.cron) enqueues ``jobs.fire_schedules`` every ORCHESTRATOR_SCHEDULE_TICK
seconds; ``fire_due`` fires every schedule whose ``next_run_at`` has come. The claim is a
conditional update of ``next_run_at`` (from the tick it read to the next one) in the transaction
that writes the run, and a unique (schedule, scheduled_for) on the run backs it: several
schedulers, on several hosts, and a restart fire each tick once.

Cron times are wall-clock times in the schedule's zone (croniter). Across a DST change: a time
the spring change skips runs at the first valid time after it; on the autumn change, a time of
the repeated hour runs once (its first occurrence) unless the hour field is a wildcard, whose
ticks are real, distinct instants (as Vixie cron does).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..models import TERMINAL, CatchUp, Schedule, Signature, controls_all_tasks, sees_all_tasks
from . import events, execution, specs
from .errors import OrchestratorError, SpecError

FIELDS = ("name", "spec", "cron", "timezone", "interval", "start_at", "end_at", "max_active", "catch_up")
MAX_INTERVAL = 366 * 86400
MAX_TICKS_PER_PASS = 1000  # ticks of one schedule fired by one pass (on-time ones, within the grace period)
MAX_CRON_STEPS = 1000  # ticks walked to skip repeated autumn hours before giving up on an expression


# Who sees what ---------------------------------------------------------------------------------


def visible_to(user):
    rows = Schedule.objects.select_related("owner")
    return rows if sees_all_tasks(user) else rows.filter(owner=user)


def controllable_by(user):
    rows = Schedule.objects.select_related("owner")
    return rows if controls_all_tasks(user) else rows.filter(owner=user)


# Validation ------------------------------------------------------------------------------------


def zone(name: Any) -> ZoneInfo:
    """The IANA zone named ``name``; SpecError naming ``timezone`` otherwise."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise SpecError({"timezone": "must be an IANA time zone name such as Europe/Paris"})
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError({"timezone": f"unknown time zone {name!r}"}) from None


def check_cron(expr: Any, tz: ZoneInfo) -> str:
    """Five fields (minute hour day month weekday), or six with seconds last; it must ever fire."""
    if not isinstance(expr, str) or len(expr.split()) not in (5, 6) or not croniter.is_valid(expr):
        raise SpecError({"cron": "must be a cron expression of 5 fields (or 6, seconds last), e.g. '*/15 * * * *'"})
    try:
        croniter(expr, timezone.now().astimezone(tz)).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError):
        raise SpecError({"cron": "never fires (no such date)"}) from None
    return expr.strip()


def validate(data: dict, *, owner, current: Schedule | None = None) -> dict:
    """A whole schedule's fields, ``data`` over ``current``'s: normalised, or SpecError naming each field.
    The spec is checked as ``owner`` submitting it would be (their saved workflows resolve)."""
    merged = {f: getattr(current, f) for f in FIELDS} if current else {}
    merged.update({k: v for k, v in data.items() if k in FIELDS})
    if not merged.get("timezone"):
        merged["timezone"] = "UTC"
    if not merged.get("catch_up"):
        merged["catch_up"] = CatchUp.SKIP
    errors: dict[str, str] = {}
    for check in (_check_name, _check_clock, _check_window, _check_limits, _check_spec):
        try:
            check(merged, owner)
        except SpecError as exc:
            for field, problem in exc.errors.items():
                errors.setdefault(field, problem)
    if errors:
        raise SpecError(errors)
    return merged


def _check_name(data: dict, owner) -> None:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise SpecError({"name": "required, at most 200 characters"})
    data["name"] = name.strip()


def _check_clock(data: dict, owner) -> None:
    cron, interval = data.get("cron") or "", data.get("interval")
    tz = zone(data["timezone"])
    if bool(cron) == (interval is not None):
        raise SpecError({"cron": "give either cron (with timezone) or interval (seconds), not both"})
    if cron:
        data["cron"], data["interval"] = check_cron(cron, tz), None
        return
    if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= MAX_INTERVAL:
        raise SpecError({"interval": f"must be a whole number of seconds from 1 to {MAX_INTERVAL}"})
    data["cron"] = ""


def _check_window(data: dict, owner) -> None:
    for field in ("start_at", "end_at"):
        value = data.get(field)
        if value is not None and (not isinstance(value, datetime) or timezone.is_naive(value)):
            raise SpecError({field: "must be a date and time with a UTC offset"})
    if data.get("start_at") and data.get("end_at") and data["end_at"] <= data["start_at"]:
        raise SpecError({"end_at": "must be after start_at"})


def _check_limits(data: dict, owner) -> None:
    max_active = data.get("max_active")
    if max_active is not None and (isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1):
        raise SpecError({"max_active": "must be a whole number of at least 1, or null for no limit"})
    if data["catch_up"] not in CatchUp.values:
        raise SpecError({"catch_up": f"must be one of {', '.join(CatchUp.values)}"})


def _check_spec(data: dict, owner) -> None:
    """The spec is checked as a submission would be, and stored as given: a saved workflow it names is
    read at each run, so its newest version runs."""
    specs.validate(data.get("spec"), path="spec", owner=owner)


def field_errors(exc: SpecError) -> dict[str, str]:
    """A form's view of the errors: a path inside the spec (``spec.steps[1].task``) is the spec field's."""
    found: dict[str, str] = {}
    for path, problem in exc.errors.items():
        field = path.split(".")[0].split("[")[0]
        found.setdefault(field, problem if field == path else f"{path}: {problem}")
    return found


# Clock ----------------------------------------------------------------------------------------


def next_tick(schedule: Schedule, after: datetime) -> datetime | None:
    """The schedule's first tick strictly after ``after`` (not before start_at); None past end_at."""
    if schedule.start_at and after < schedule.start_at:
        after = schedule.start_at - timedelta(microseconds=1)
    tick = _next_cron(schedule, after) if schedule.cron else _next_interval(schedule, after)
    if tick is None or (schedule.end_at and tick > schedule.end_at):
        return None
    return tick


def _next_interval(schedule: Schedule, after: datetime) -> datetime:
    anchor = schedule.start_at or schedule.created_at
    step = timedelta(seconds=schedule.interval)
    if after < anchor:
        return anchor
    return anchor + ((after - anchor) // step + 1) * step


def _next_cron(schedule: Schedule, after: datetime) -> datetime | None:
    tz = ZoneInfo(schedule.timezone)
    ticks = croniter(schedule.cron, after.astimezone(tz))
    for _ in range(MAX_CRON_STEPS):
        tick = ticks.get_next(datetime).astimezone(tz)
        if not _repeated_hour(tick, schedule.cron):
            return tick.astimezone(UTC)
    return None


def _repeated_hour(tick: datetime, cron: str) -> bool:
    """The second occurrence of an autumn wall-clock time, for an expression with a fixed hour."""
    second = tick.fold == 1 and tick.replace(fold=0).utcoffset() != tick.utcoffset()
    return second and not cron.split()[1].startswith("*")


def grace() -> timedelta:
    return timedelta(seconds=settings.ORCHESTRATOR["SCHEDULE_GRACE"])


# Changes ---------------------------------------------------------------------------------------


def create(data: dict, *, owner, actor: str = "system") -> Schedule:
    fields = validate(data, owner=owner)
    with transaction.atomic():
        schedule = Schedule.objects.create(owner=owner, **fields)
        schedule.next_run_at = next_tick(schedule, timezone.now())
        schedule.save(update_fields=["next_run_at"])
    return schedule


def update(schedule: Schedule, data: dict, *, actor: str = "system") -> Schedule:
    """Edit any field; the next run is computed again from now (a paused schedule stays paused)."""
    fields = validate(data, owner=schedule.owner, current=schedule)
    with transaction.atomic():
        schedule = Schedule.objects.select_for_update().get(pk=schedule.pk)
        for field, value in fields.items():
            setattr(schedule, field, value)
        schedule.next_run_at = None if schedule.paused else next_tick(schedule, timezone.now())
        schedule.last_error = ""
        schedule.save()
    return schedule


def pause(schedule: Schedule, *, actor: str = "system") -> Schedule:
    """Stop ticking; a tick a scheduler already claimed still runs. Pausing twice is harmless."""
    Schedule.objects.filter(pk=schedule.pk).update(paused=True, next_run_at=None, updated_at=timezone.now())
    schedule.refresh_from_db()
    return schedule


def resume(schedule: Schedule, *, actor: str = "system") -> Schedule:
    """Tick again from now: ticks passed while paused are not caught up."""
    with transaction.atomic():
        schedule = Schedule.objects.select_for_update().get(pk=schedule.pk)
        if schedule.paused:
            schedule.paused = False
            schedule.next_run_at = next_tick(schedule, timezone.now())
            schedule.save(update_fields=["paused", "next_run_at", "updated_at"])
    return schedule


def delete(schedule: Schedule, *, actor: str = "system") -> None:
    """The schedule goes; its runs stay, unlinked."""
    schedule.delete()


def run_now(schedule: Schedule, *, actor: str = "system") -> Signature:
    """One run at once, outside the clock: it moves no tick and ignores max_active."""
    return _submit(schedule, tick=None, actor=actor)


# Firing ----------------------------------------------------------------------------------------


def fire_due(now: datetime | None = None) -> int:
    """Fire every due schedule, each due tick in its own transaction; the number of runs written."""
    now = now or timezone.now()
    written = 0
    for pk in list(Schedule.objects.filter(paused=False, next_run_at__lte=now).values_list("pk", flat=True)):
        for _ in range(MAX_TICKS_PER_PASS):
            outcome = fire(pk, now=now)
            if outcome is None:
                break
            written += outcome
    return written


@execution.retry_on_conflict
def fire(schedule_id: int, *, now: datetime) -> int | None:
    """Claim this schedule's due tick and write its run, or pass over it: 1 or 0. None when no tick
    was due or another scheduler claimed it first."""
    schedule = Schedule.objects.filter(pk=schedule_id, paused=False, next_run_at__lte=now).first()
    if schedule is None:
        return None
    tick = schedule.next_run_at
    run_for, following = _plan(schedule, tick, now)
    with transaction.atomic():
        if not Schedule.objects.filter(pk=schedule.pk, paused=False, next_run_at=tick).update(
            next_run_at=following, updated_at=timezone.now()
        ):
            return None
        if run_for is None:
            return 0
        if schedule.max_active and active_runs(schedule) >= schedule.max_active:
            Schedule.objects.filter(pk=schedule.pk).update(skipped_ticks=F("skipped_ticks") + 1)
            return 0
        try:
            with transaction.atomic():
                _submit(schedule, tick=run_for, actor="scheduler")
        except OrchestratorError as exc:  # the spec no longer holds (a task or a saved workflow gone)
            Schedule.objects.filter(pk=schedule.pk).update(last_error=str(exc)[:2000])
            return 0
    return 1


def _plan(schedule: Schedule, tick: datetime, now: datetime) -> tuple[datetime | None, datetime | None]:
    """(the tick to run, if any; the next tick). A tick within the grace period is on time (a scheduler's
    normal lateness) and runs; older ones were missed while no scheduler ran: ``once`` runs the first of
    them and ``skip`` none, and the schedule goes on from the first tick that is on time."""
    if now - tick <= grace():
        return tick, next_tick(schedule, tick)
    first_on_time = next_tick(schedule, now - grace())
    return (tick if schedule.catch_up == CatchUp.ONCE else None), first_on_time


def active_runs(schedule: Schedule) -> int:
    return Signature.objects.filter(schedule=schedule).exclude(status__in=TERMINAL).count()


def _submit(schedule: Schedule, *, tick: datetime | None, actor: str) -> Signature:
    with transaction.atomic():
        sig = execution.submit(schedule.spec, owner=schedule.owner, actor=actor)
        Signature.objects.filter(pk=sig.pk).update(schedule=schedule, scheduled_for=tick)
        Schedule.objects.filter(pk=schedule.pk).update(last_run_at=timezone.now(), last_error="")
        events.record(sig, "scheduled", actor=actor, schedule=schedule.pk, tick=tick.isoformat() if tick else None)
    sig.schedule, sig.scheduled_for = schedule, tick
    return sig
