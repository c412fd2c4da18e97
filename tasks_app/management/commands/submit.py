"""Submit a registered task or a whole spec; optionally wait for it with a live progress bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tasks_app import cli
from tasks_app.models import Kind, Priority, Signature, Status
from tasks_app.services import execution, progress, specs, swarms
from tasks_app.services.errors import InvalidTransition, PayloadTooLarge, SpecError


class Command(BaseCommand):
    help = """Submit a registered task (TASK), or any JSON spec (task, chain, swarm, graph) with --spec.

examples:
  manage.py submit examples.sleep --kwargs '{"seconds": 5}' --wait
  manage.py submit examples.echo --kwargs '{"value": 1}' --priority high --owner alice
  manage.py submit --spec workflow.json
  manage.py submit --workflow nightly-etl --kwargs '{"day": "2026-12-04"}'
  generate-swarm | manage.py submit --spec - --batch-size 500

--wait redraws a progress bar (percent, current step, ETA) until the task ends, prints the result
and exits 0 when it completed, 1 when it failed, was interrupted or skipped.

Bulk swarms: with --batch-size N and a swarm spec, every member spec is validated first; then the
swarm is created with its first N tasks and left open, the remaining tasks are added N at a time
(a bar shows "added N/M"), and the swarm is closed at the end unless the spec says "closed": false.
This also takes swarms larger than the size limit of a single spec."""
    stealth_options = ("stdin",)

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, formatter_class=cli.HelpFormatter, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("task", nargs="?", help="Registered task name, e.g. examples.sleep.")
        parser.add_argument("--kwargs", default=None, help="Keyword arguments as a JSON object.")
        parser.add_argument("--priority", choices=Priority.values, help="Queue priority (default: the task's).")
        parser.add_argument("--name", default=None, help="A title for the signature.")
        parser.add_argument("--spec", default=None, metavar="FILE", help="A JSON spec file, or - for stdin.")
        parser.add_argument("--workflow", default=None, metavar="NAME",
                            help="A saved workflow (POST /api/workflows/), at its latest version.")
        parser.add_argument("--owner", default=None, metavar="USERNAME", help="Owner (default: the first superuser).")
        parser.add_argument("--idempotency-key", default=None, help="Return the existing signature for a repeated key.")
        parser.add_argument("--wait", action="store_true", help="Show live progress until the task ends.")
        parser.add_argument("--interval", type=float, default=0.5, help="Seconds between two redraws (--wait).")
        parser.add_argument("--batch-size", type=int, default=None, help="Add a swarm's tasks N at a time.")

    def handle(self, *args, **options):
        if options["batch_size"] and options["idempotency_key"]:
            raise CommandError("--idempotency-key cannot be combined with --batch-size")
        owner = resolve_owner(options["owner"])
        spec = self.build_spec(options)
        try:
            if options["batch_size"]:
                sig = self.submit_in_batches(spec, owner, options["batch_size"])
            else:
                sig = execution.submit(spec, owner=owner, idempotency_key=options["idempotency_key"], actor=cli.actor())
        except SpecError as exc:
            raise CommandError(f"invalid spec:\n{cli.field_errors(exc.errors)}") from exc
        except PayloadTooLarge as exc:
            raise CommandError(f"{exc} (a large swarm can be added in batches with --batch-size)") from exc
        self.stdout.write(f"submitted #{sig.pk} {sig.task_name or sig.kind} ({sig.status})")
        if options["wait"]:
            self.wait(sig, options["interval"])

    # Building the spec ----------------------------------------------------------------------

    def build_spec(self, options: dict) -> dict:
        if sum(bool(options.get(key)) for key in ("task", "spec", "workflow")) > 1:
            raise CommandError("give one of a TASK name, --spec FILE or --workflow NAME")
        if options["spec"]:
            spec = self.read_spec(options["spec"], options.get("stdin") or sys.stdin)
        elif options.get("workflow"):
            spec = {"workflow": options["workflow"]}
        elif options["task"]:
            spec = {"task": options["task"]}
        else:
            raise CommandError("give a TASK name (see GET /api/registry/), --spec FILE or --workflow NAME")
        if options["kwargs"] is not None:
            kwargs = cli.parse_json(options["kwargs"], "--kwargs")
            given = spec.get("kwargs")
            merge = isinstance(kwargs, dict) and isinstance(given, dict)
            spec["kwargs"] = {**given, **kwargs} if merge else kwargs
        for key in ("priority", "name"):
            if options[key]:
                spec[key] = options[key]
        return spec

    def read_spec(self, source: str, stdin) -> dict:
        try:
            text = stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read the spec file: {exc}") from exc
        spec = cli.parse_json(text, "the spec" if source == "-" else source)
        if not isinstance(spec, dict):
            raise CommandError("invalid spec:\n  spec: must be a JSON object")
        return spec

    # Bulk swarms ----------------------------------------------------------------------------

    def submit_in_batches(self, spec: dict, owner, batch_size: int) -> Signature:
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more")
        if spec.get("kind") != Kind.SWARM:
            raise CommandError('--batch-size takes a swarm spec ("kind": "swarm")')
        tasks = spec.get("tasks", [])
        if not isinstance(tasks, list):
            raise SpecError({"tasks": "must be a list of specs"})
        shell = specs.validate({**spec, "tasks": [], "closed": False}, owner=owner)
        check_members(tasks, shell, batch_size, owner)
        actor = cli.actor()
        swarm = execution.submit({**spec, "tasks": tasks[:batch_size], "closed": False}, owner=owner, actor=actor)
        screen = cli.Screen(self.stdout)
        screen.line(added_line(min(batch_size, len(tasks)), len(tasks)))
        try:
            for start in range(batch_size, len(tasks), batch_size):
                self.add_batch(swarm, tasks[start : start + batch_size], batch_size, actor)
                screen.line(added_line(min(start + batch_size, len(tasks)), len(tasks)))
        except KeyboardInterrupt:
            screen.end()
            message = f"stopped adding; swarm #{swarm.pk} stays open (manage.py control close {swarm.pk})"
            raise CommandError(message) from None
        screen.end()
        if spec.get("closed", True) is not False:
            close_swarm(swarm, actor)
        swarm.refresh_from_db()
        return swarm

    def add_batch(self, swarm: Signature, batch: list, batch_size: int, actor: str) -> None:
        try:
            swarms.add_tasks(swarm, batch, batch_size=batch_size, actor=actor)
        except InvalidTransition as exc:
            raise CommandError(f"cannot add to swarm #{swarm.pk}: {exc}", returncode=2) from exc

    # Waiting --------------------------------------------------------------------------------

    def wait(self, sig: Signature, interval: float) -> None:
        screen = cli.Screen(self.stdout)
        try:
            while True:
                sig, payload = self.poll(sig)
                screen.line(cli.progress_line(payload))
                if sig.is_terminal:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            screen.end()
            message = f"stopped waiting; task #{sig.pk} carries on (manage.py status {sig.pk})"
            raise CommandError(message, returncode=130) from None
        screen.end()
        self.report_outcome(sig)

    def poll(self, sig: Signature) -> tuple[Signature, dict]:
        """One step of the wait: the signature as it is now, and its progress payload."""
        fresh = Signature.objects.filter(pk=sig.pk).first()
        if fresh is None:
            raise CommandError(f"task #{sig.pk} was cancelled")
        return fresh, progress.payload(fresh)

    def report_outcome(self, sig: Signature) -> None:
        took = ""
        if sig.started_at and sig.finished_at:
            took = f" in {cli.duration((sig.finished_at - sig.started_at).total_seconds())}"
        if sig.status == Status.COMPLETED:
            self.stdout.write(f"✓ completed{took}")
            self.stdout.write(json.dumps(sig.result, default=str))
            return
        self.stderr.write(f"{cli.status_label(sig.status)}{took}: {cli.error_text(sig.error)}")
        raise CommandError(f"task #{sig.pk} {sig.status}", returncode=1)


def resolve_owner(username: str | None):
    User = get_user_model()
    if username:
        user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        return user
    user = User.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if user is None:
        raise CommandError(
            "no superuser exists to own the task: create one (manage.py createsuperuser) or pass --owner USERNAME"
        )
    return user


def check_members(tasks: list, shell: dict, batch_size: int, owner) -> None:
    """Validate every member spec before anything is written, naming each bad one by its index."""
    max_tasks = shell.get("max_tasks")
    if max_tasks is not None and len(tasks) > max_tasks:
        raise SpecError({"tasks": f"{len(tasks)} tasks exceed max_tasks={max_tasks}"})
    errors: dict[str, str] = {}
    for start in range(0, len(tasks), batch_size):
        _, rejected = specs.validate_many(tasks[start : start + batch_size], inherited=shell["kwargs"], owner=owner)
        for index, problems in rejected.items():
            for path, problem in problems.items():
                errors[path.replace(f"tasks[{index}]", f"tasks[{start + index}]", 1)] = problem
    if errors:
        raise SpecError(errors)


def close_swarm(swarm: Signature, actor: str) -> None:
    swarm.refresh_from_db()
    if not swarm.config.get("closed"):  # reaching max_tasks closes it already
        swarms.close(swarm, actor=actor)


def added_line(done: int, total: int) -> str:
    percent = 100.0 * done / total if total else 100.0
    return f"{cli.bar(percent, 20)} added {done}/{total}"
