"""One RQ worker on the orchestrator's queues, in priority order; reconciles when it starts."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django_rq.jobs import get_job_class
from django_rq.workers import get_exception_handlers, get_worker_class

from tasks_app.services import transport

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = ("Run one RQ worker for the orchestrator's queues (high, medium, low): async and threads=True tasks "
            "side by side in slots, other jobs in a forked horse each.")

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true", help="Quit once the queues are empty.")
        parser.add_argument("--queues", nargs="+", default=None, help="Queue names, in the order read.")
        parser.add_argument("--with-scheduler", action="store_true", help="Also run RQ's scheduler (delayed retries).")
        parser.add_argument("--name", default=None, help="Worker name (default: RQ's).")
        parser.add_argument("--no-reconcile", action="store_true", help="Skip the auto-resume pass at start.")
        parser.add_argument("--concurrency", type=int, default=None,
                            help="Async and threads=True tasks in flight at once in this process "
                                 "(ORCHESTRATOR_CONCURRENCY, default 250); 1: a forked horse per job, one at a time.")

    def handle(self, *args, **options):
        queues = options["queues"] or settings.ORCHESTRATOR_QUEUES
        if not options["no_reconcile"]:
            self.reconcile()
        connections.close_all()
        # As django_rq's get_worker, on the process's shared Redis client (transport.connection).
        rq_queues = [transport.get_queue(name) for name in queues]
        worker = get_worker_class()(
            rq_queues,
            connection=rq_queues[0].connection,
            exception_handlers=get_exception_handlers() or None,
            job_class=get_job_class(),
            queue_class=type(rq_queues[0]),
            serializer=rq_queues[0].serializer,
            name=options["name"],
            worker_ttl=30,
            job_monitoring_interval=5,
        )
        worker.concurrency = self.concurrency(options["concurrency"])
        worker.work(burst=options["burst"], with_scheduler=options["with_scheduler"], logging_level="WARNING")

    def concurrency(self, value: int | None) -> int:
        value = settings.ORCHESTRATOR["CONCURRENCY"] if value is None else value
        if value < 1:
            raise CommandError(f"--concurrency must be at least 1, not {value}")
        return value

    def reconcile(self) -> None:
        """The auto-resume pass at start; whatever it meets (the database or Redis away, a broken
        row) is logged, and the worker starts anyway: the periodic pass tries again."""
        from tasks_app.services import reconcile

        if not settings.ORCHESTRATOR["AUTO_RESUME"]:
            return
        try:
            reconcile.run_pass(trigger="worker start")
        except Exception:
            log.exception("the auto-resume pass at worker start failed; the worker starts anyway")
