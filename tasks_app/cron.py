"""The periodic jobs, for RQ's cron scheduler: `manage.py rqcron tasks_app.cron` (`orchestrate` runs it).

Interval jobs run once at scheduler start, then every interval.
"""

from __future__ import annotations

from django.conf import settings
from rq import cron

from . import jobs
from .cron_json import enqueue_as_json

enqueue_as_json()

# Recovery must not wait behind a backlog of work: reconcile goes first; purge is housekeeping.
RECONCILE_QUEUE = "orchestrator-high"
PURGE_QUEUE = "orchestrator-low"
RECONCILE_EVERY = 60
SCHEDULES_EVERY = settings.ORCHESTRATOR["SCHEDULE_TICK"]
PURGE_EVERY = 300

cron.register(jobs.reconcile, RECONCILE_QUEUE, interval=RECONCILE_EVERY, job_timeout=600, result_ttl=600)
cron.register(jobs.purge, PURGE_QUEUE, interval=PURGE_EVERY, job_timeout=600, result_ttl=600)
# Schedules fire on the high queue too: a tick waiting behind a backlog would run late.
cron.register(jobs.fire_schedules, RECONCILE_QUEUE, interval=SCHEDULES_EVERY, job_timeout=300, result_ttl=60)
