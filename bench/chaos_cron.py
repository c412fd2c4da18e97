"""The periodic reconcile of the chaos runs: `tasks_app.cron`'s job, every CHAOS_RECONCILE_EVERY seconds.

`manage.py rqcron bench.chaos_cron` in place of `rqcron tasks_app.cron`, whose 60 s period is
longer than a whole shortened chaos run.
"""

from __future__ import annotations

import os

from rq import cron

from tasks_app import jobs
from tasks_app.cron_json import enqueue_as_json

enqueue_as_json()

cron.register(
    jobs.reconcile,
    "orchestrator-high",
    interval=int(os.environ.get("CHAOS_RECONCILE_EVERY", "5")),
    job_timeout=600,
    result_ttl=600,
)
