"""The auto-resume pass, by hand: re-queue work whose worker or job is gone, print the report."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from tasks_app import cli
from tasks_app.models import ResumeReport
from tasks_app.services import reconcile


class Command(BaseCommand):
    help = """Run the auto-resume pass now and print its report: running work whose worker is gone and
queued work whose job is missing are re-queued from their checkpoint; paused, failed and
interrupted work is left alone. --dry-run reports what would be resumed without changing anything."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, formatter_class=cli.HelpFormatter, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Report without resuming anything.")

    def handle(self, *args, **options):
        report = reconcile.run_pass(trigger="manual", dry_run=options["dry_run"])
        if report is None:
            self.stdout.write("nothing to resume")
            return
        self.stdout.write(render_report(report))


def render_report(report: ResumeReport) -> str:
    verb = "would resume" if report.dry_run else "resumed"
    lines = [
        f"resume report #{report.pk} ({report.trigger}{', dry run' if report.dry_run else ''}) at "
        f"{cli.local_time(report.at)}: {len(report.resumed)} {verb}, {len(report.skipped)} skipped, "
        f"{len(report.failures)} failures"
    ]
    lines += [f"  {verb} {_item(item)}" for item in report.resumed]
    lines += [f"  skipped {_item(item)}: {item.get('why', '')}" for item in report.skipped]
    lines += [f"  failed {_item(item)}: {item.get('error', '')}" for item in report.failures]
    return "\n".join(lines)


def _item(item: dict) -> str:
    run = f" run {item['run']}" if item.get("run") else ""
    return f"#{item.get('task_id')} {item.get('title') or item.get('task', '')}{run} ({item.get('reason', '')})"
