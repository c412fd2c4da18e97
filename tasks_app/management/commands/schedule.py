"""`manage.py schedule ...`: schedules from a terminal; each subcommand calls one service."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from tasks_app import cli
from tasks_app.models import CatchUp, Schedule
from tasks_app.services import schedules
from tasks_app.services.errors import OrchestratorError, SpecError

from .submit import resolve_owner


class Command(BaseCommand):
    help = """Schedules: run a spec on a cron expression (in a time zone) or every N seconds.
  list                        every schedule with its next and last run
  create --name N --spec JSON|FILE|- (--cron EXPR [--timezone ZONE] | --interval SECONDS)
         [--start-at ISO] [--end-at ISO] [--max-active N] [--catch-up skip|once] [--owner USERNAME]
  pause ID / resume ID        stop ticking / tick again from now
  run ID                      one run now (its task id is printed)
  delete ID                   remove the schedule (its runs stay)
Examples:
  manage.py schedule create --name nightly --spec '{"task": "examples.echo", "kwargs": {"value": 1}}' \\
      --cron '30 2 * * *' --timezone Europe/Paris
  manage.py schedule create --name often --spec flow.json --interval 300 --max-active 1
Exit status: 0 done, 1 bad input or no such schedule."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, formatter_class=cli.HelpFormatter, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "create", "pause", "resume", "run", "delete"])
        parser.add_argument("id", nargs="?", type=int, help="A schedule id (pause, resume, run, delete).")
        parser.add_argument("--name")
        parser.add_argument("--spec", help="The spec: JSON, a JSON file, or - for stdin.")
        parser.add_argument("--cron", default="", help="5 fields, or 6 with seconds last.")
        parser.add_argument("--timezone", default="UTC", help="IANA zone of the cron expression.")
        parser.add_argument("--interval", type=int, default=None, help="Seconds between runs, instead of --cron.")
        parser.add_argument("--start-at", default=None, help="ISO 8601 with an offset, e.g. 2026-06-01T09:00+02:00.")
        parser.add_argument("--end-at", default=None)
        parser.add_argument("--max-active", type=int, default=None, help="Skip a tick while N runs are active.")
        parser.add_argument("--catch-up", choices=CatchUp.values, default=CatchUp.SKIP)
        parser.add_argument("--owner", default=None, metavar="USERNAME", help="Owner (default: the first superuser).")

    def handle(self, *args, **options):
        action = options["action"]
        if action not in ("list", "create") and options["id"] is None:
            raise CommandError(f"{action} needs a schedule id")
        try:
            self.stdout.write(getattr(self, f"do_{action}")(options))
        except SpecError as exc:
            raise CommandError(f"cannot {action} the schedule:\n{cli.field_errors(exc.errors)}") from exc
        except OrchestratorError as exc:
            raise CommandError(f"cannot {action} the schedule: {exc}") from exc

    def do_list(self, options: dict) -> str:
        rows = [row(s) for s in Schedule.objects.select_related("owner")]
        if not rows:
            return "no schedules (manage.py schedule create --help)"
        return cli.table(["ID", "NAME", "OWNER", "WHEN", "NEXT RUN (UTC)", "LAST RUN", "ACTIVE"], rows)

    def do_create(self, options: dict) -> str:
        data = {"name": options["name"], "spec": read_spec(options["spec"]), "cron": options["cron"],
                "timezone": options["timezone"], "interval": options["interval"], "max_active": options["max_active"],
                "catch_up": options["catch_up"], "start_at": moment(options["start_at"], "start_at"),
                "end_at": moment(options["end_at"], "end_at")}
        schedule = schedules.create(data, owner=resolve_owner(options["owner"]), actor=cli.actor())
        return f"created schedule #{schedule.pk} {schedule.name!r}; next run {cli.local_time(schedule.next_run_at)} UTC"

    def do_pause(self, options: dict) -> str:
        schedule = schedules.pause(get_schedule(options["id"]), actor=cli.actor())
        return f"paused schedule #{schedule.pk} {schedule.name!r}"

    def do_resume(self, options: dict) -> str:
        schedule = schedules.resume(get_schedule(options["id"]), actor=cli.actor())
        return f"resumed schedule #{schedule.pk}; next run {cli.local_time(schedule.next_run_at)} UTC"

    def do_run(self, options: dict) -> str:
        run = schedules.run_now(get_schedule(options["id"]), actor=cli.actor())
        return f"started #{run.pk} (manage.py status {run.pk})"

    def do_delete(self, options: dict) -> str:
        schedule = get_schedule(options["id"])
        schedules.delete(schedule, actor=cli.actor())
        return f"deleted schedule #{options['id']} {schedule.name!r} (its runs stay)"


def row(s: Schedule) -> list[str]:
    next_run = "paused" if s.paused else cli.local_time(s.next_run_at)
    return [str(s.pk), s.name, s.owner.get_username(), when(s), next_run, cli.local_time(s.last_run_at),
            str(schedules.active_runs(s))]


def when(schedule: Schedule) -> str:
    return f"{schedule.cron} ({schedule.timezone})" if schedule.cron else f"every {schedule.interval} s"


def get_schedule(pk: int) -> Schedule:
    schedule = Schedule.objects.select_related("owner").filter(pk=pk).first()
    if schedule is None:
        raise CommandError(f"no schedule with id {pk}")
    return schedule


def read_spec(value: str | None):
    if not value:
        raise CommandError("create needs --spec (JSON, a JSON file, or - for stdin)")
    if value == "-":
        return cli.parse_json(sys.stdin.read(), "the spec")
    if not value.lstrip().startswith(("{", "[")) and Path(value).is_file():
        return cli.parse_json(Path(value).read_text(), value)
    return cli.parse_json(value, "--spec")


def moment(value: str | None, field: str):
    if value is None:
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        option = "--" + field.replace("_", "-")
        raise CommandError(f"{option} must be an ISO 8601 date and time, e.g. 2026-06-01T09:00+02:00")
    return parsed
