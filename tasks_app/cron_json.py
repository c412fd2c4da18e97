"""RQ's cron scheduler writes the periodic jobs as JSON, like every other job of the orchestrator.

``rq.cron.CronJob.enqueue`` builds its queue as ``Queue(name, connection=...)``, so with RQ's
default serializer (pickle), and takes no serializer option; the workers read JSON only. The cron
configs (``tasks_app.cron``, ``bench.chaos_cron``) call ``enqueue_as_json()`` when ``manage.py rqcron``
loads them, in that process only, so its queues take the serializer RQ_QUEUES gives them.
"""

from __future__ import annotations

from rq import cron as rq_cron
from rq.queue import Queue

from .services import transport


class JSONCronQueue(Queue):
    """A queue built by RQ's cron code, with the serializer of the queue of that name in RQ_QUEUES."""

    def __init__(self, name: str = "default", *args, **kwargs):
        kwargs.setdefault("serializer", transport.serializer(name))
        super().__init__(name, *args, **kwargs)


def enqueue_as_json() -> None:
    rq_cron.Queue = JSONCronQueue
