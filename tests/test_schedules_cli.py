"""`manage.py schedule`: create, list, pause, resume, run, delete; bad input names the field."""

from __future__ import annotations

from datetime import UTC, datetime
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command

from tasks_app.models import Schedule, Signature

pytestmark = pytest.mark.django_db

SPEC = '{"task": "examples.echo", "kwargs": {"value": 1}}'


def run(*args: str) -> str:
    out = StringIO()
    call_command("schedule", *args, stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(datetime(2026, 5, 1, 10, tzinfo=UTC), tick=False) as traveller:
        yield traveller


def test_create_list_pause_resume_run_delete(owner):
    out = run("create", "--name", "nightly", "--spec", SPEC, "--cron", "30 2 * * *", "--timezone", "Europe/Paris",
              "--max-active", "1", "--owner", "owner")
    schedule = Schedule.objects.get()
    assert f"created schedule #{schedule.pk} 'nightly'; next run 2026-05-02 00:30:00 UTC" in out
    listing = run("list")
    assert "nightly" in listing and "30 2 * * * (Europe/Paris)" in listing and "2026-05-02 00:30:00" in listing

    assert "paused" in run("pause", str(schedule.pk))
    assert "paused" in run("list").splitlines()[2]  # headers, rule, then the row
    assert "next run 2026-05-02 00:30:00" in run("resume", str(schedule.pk))

    started = run("run", str(schedule.pk))
    sig = Signature.objects.get(schedule=schedule)
    assert f"started #{sig.pk}" in started

    run("delete", str(schedule.pk))
    assert not Schedule.objects.exists() and Signature.objects.filter(pk=sig.pk).exists()


def test_an_interval_schedule_from_a_spec_file(owner, tmp_path):
    spec = tmp_path / "flow.json"
    spec.write_text(SPEC)
    run("create", "--name", "often", "--spec", str(spec), "--interval", "90", "--owner", "owner",
        "--start-at", "2026-05-01T12:00:00+02:00")
    assert Schedule.objects.get().next_run_at == datetime(2026, 5, 1, 10, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(("args", "message"), [
    (["--cron", "nope"], "cron:"),
    (["--cron", "0 9 * * *", "--timezone", "Moon/Base"], "timezone:"),
    (["--interval", "0"], "interval:"),
    (["--interval", "60", "--start-at", "tomorrow"], "--start-at must be an ISO 8601"),
    (["--interval", "60", "--start-at", "2026-06-01T09:00"], "start_at:"),
])
def test_bad_input_names_the_field(owner, args, message):
    with pytest.raises(CommandError) as caught:
        run("create", "--name", "x", "--spec", SPEC, "--owner", "owner", *args)
    assert message in str(caught.value)
    assert not Schedule.objects.exists()


def test_an_unknown_id_is_an_error(owner):
    with pytest.raises(CommandError, match="no schedule with id 999"):
        run("pause", "999")
