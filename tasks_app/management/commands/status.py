"""List top-level tasks, or show one task's progress view; --watch redraws until it ends."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial

from django.core.management.base import BaseCommand, CommandError

from tasks_app import cli
from tasks_app.models import Signature, Status
from tasks_app.services import progress


class Command(BaseCommand):
    help = """Without ID: the latest top-level tasks (id, status, kind, name, progress, created).
With ID: the progress view of that task: bar, current step, steps and substeps with
✓ completed, ◐ running, ○ pending, ⚠ approval or needs attention, ✕ failed, ⏸ paused, ⊘ skipped,
when it started and its ETA. --watch redraws until the task ends (Ctrl-C stops watching)."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, formatter_class=cli.HelpFormatter, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("id", nargs="?", type=int, help="A task id; omit it to list tasks.")
        parser.add_argument("--watch", action="store_true", help="Redraw until the task ends.")
        parser.add_argument("--all", action="store_true", help="Also list tasks marked for deletion.")
        parser.add_argument("--status", choices=Status.values, help="List only tasks with this status.")
        parser.add_argument("--limit", type=int, default=20, help="How many tasks to list (default 20).")
        parser.add_argument("--json", action="store_true", help="Print the progress payload as JSON.")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between two redraws (--watch).")

    def handle(self, *args, **options):
        if options["id"] is None:
            self.show(lambda: self.render_list(options), lambda: False, options)
            return
        self.current = cli.get_signature(options["id"])
        self.show(partial(self.render_current, options["json"]), lambda: self.current.is_terminal, options)

    def show(self, render: Callable[[], str], done: Callable[[], bool], options: dict) -> None:
        if options["watch"]:
            self.watch(render, done, options["interval"])
        else:
            self.stdout.write(render())

    # One task -------------------------------------------------------------------------------

    def render_current(self, as_json: bool) -> str:
        """The shown task as it is now (each redraw of --watch reads it again)."""
        self.current = Signature.objects.filter(pk=self.current.pk).first() or _gone(self.current.pk)
        return self.render_detail(self.current, as_json)

    def render_detail(self, sig: Signature, as_json: bool = False) -> str:
        payload = progress.payload(sig)
        if as_json:
            return json.dumps(payload, default=str, indent=2)
        return cli.progress_view(payload, sig)

    # The list -------------------------------------------------------------------------------

    def render_list(self, options: dict) -> str:
        sigs = Signature.objects.top_level().select_related("owner")
        if not options["all"]:
            sigs = sigs.live()
        if options["status"]:
            sigs = sigs.filter(status=options["status"])
        latest = sigs.order_by("-created_at", "-id")[: max(options["limit"], 0)]
        rows = [self.row(sig, options["all"]) for sig in latest]
        if not rows:
            return "no tasks with that status" if options["status"] else "no tasks yet: manage.py submit TASK"
        headers = ["ID", "STATUS", "KIND", "NAME / TASK", "PROGRESS", "OWNER", "CREATED"]
        return cli.table(headers + (["DELETION"] if options["all"] else []), rows)

    def row(self, sig: Signature, with_deletion: bool) -> list[str]:
        percent = 100 if sig.status == Status.COMPLETED else sig.progress
        name = f"{sig.name} ({sig.task_name})" if sig.name and sig.task_name else sig.title
        cells = [
            str(sig.pk),
            cli.status_label(sig.status),
            sig.kind,
            cli.clip(name, 48),
            cli.bar(percent, 10),
            sig.owner.get_username(),
            cli.local_time(sig.created_at),
        ]
        if with_deletion:
            cells.append(f"until {cli.local_time(sig.delete_after)}" if sig.delete_after else "-")
        return cells

    # Watching -------------------------------------------------------------------------------

    def watch(self, render: Callable[[], str], done: Callable[[], bool], interval: float) -> None:
        screen = cli.Screen(self.stdout)
        try:
            while True:
                screen.block(render())
                if done():
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            self.stdout.write("")


def _gone(pk: int) -> Signature:
    raise CommandError(f"task #{pk} no longer exists (cancelled or purged)", returncode=1)
