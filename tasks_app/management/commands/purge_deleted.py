"""Delete signatures whose deletion window has passed (also a periodic job)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from tasks_app.services import deletion


class Command(BaseCommand):
    help = "Delete signatures marked for deletion whose window has passed, in batches; active work is kept."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be purged.")
        parser.add_argument("--batch-size", type=int, default=deletion.PURGE_BATCH,
                            help=f"Signatures per transaction (default {deletion.PURGE_BATCH}).")

    def handle(self, *args, **options):
        count = deletion.purge(dry_run=options["dry_run"], batch_size=max(1, options["batch_size"]))
        trees = "tree" if count == 1 else "trees"
        if options["dry_run"]:
            self.stdout.write(f"would purge {count} deleted signature {trees} (dry run)")
        else:
            self.stdout.write(f"purged {count} deleted signature {trees}")
