"""Print a task's logs (and its descendants'); --follow keeps printing new lines until it ends."""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError

from tasks_app import cli
from tasks_app.models import TERMINAL, LogEntry, Signature
from tasks_app.services import logs

FORMATS = ("text", "json", "csv")
POLL_LIMIT = 1000


class Command(BaseCommand):
    help = """Print the logs of a task and everything below it, oldest first.
--level WARNING keeps that level and above; --search TEXT keeps matching lines; --format text|json|csv.
--follow keeps printing new lines until the task ends (Ctrl-C stops); with --format json it prints
one JSON object per line."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, formatter_class=cli.HelpFormatter, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("id", type=int, help="A task id.")
        parser.add_argument("--follow", "-f", action="store_true", help="Keep printing new lines until the task ends.")
        parser.add_argument("--level", default="", help="Minimum level: DEBUG, INFO, WARNING, ERROR, CRITICAL.")
        parser.add_argument("--search", default="", help="Only lines containing these words.")
        parser.add_argument("--format", choices=FORMATS, default="text", help="Output format (default text).")
        parser.add_argument("--interval", type=float, default=0.5, help="Seconds between two polls (--follow).")

    def handle(self, *args, **options):
        sig = cli.get_signature(options["id"])
        try:
            min_level = logs.parse_level(options["level"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.entries = logs.for_tree(sig, min_level=min_level, q=options["search"])
        self.format = options["format"]
        if options["follow"]:
            self.follow(sig, options["interval"])
        else:
            body, _ = logs.export(self.entries, self.format)
            self.stdout.write(body, ending="" if body.endswith("\n") else "\n")

    # Following ------------------------------------------------------------------------------

    def follow(self, sig: Signature, interval: float) -> None:
        last_id, header = 0, self.format == "csv"
        try:
            while True:
                ended = self.ended(sig)
                last_id, header = self.drain(last_id, header)
                if ended:
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            return

    def drain(self, last_id: int, header: bool) -> tuple[int, bool]:
        """Print every line written since ``last_id``; returns the new last id and header flag."""
        while batch := self.poll(last_id):
            self.print_batch(batch, header)
            last_id, header = batch[-1].pk, False
            if len(batch) < POLL_LIMIT:
                break
        return last_id, header

    def ended(self, sig: Signature) -> bool:
        """Read before the poll, so the lines a task writes just before it ends are still printed."""
        status = Signature.objects.filter(pk=sig.pk).values_list("status", flat=True).first()
        return status is None or status in TERMINAL

    def poll(self, after_id: int) -> list[LogEntry]:
        """One step of --follow: the lines written since the last one printed."""
        return list(self.entries.filter(pk__gt=after_id).order_by("pk")[:POLL_LIMIT])

    def print_batch(self, batch: list[LogEntry], header: bool) -> None:
        if self.format == "json":
            body = "".join(json.dumps(logs.entry_dict(e)) + "\n" for e in batch)
        else:
            body, _ = logs.export(batch, self.format)
            if self.format == "csv" and not header:
                body = body.partition("\n")[2]
        self.stdout.write(body, ending="")
