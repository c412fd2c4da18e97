"""The RQ worker class of the orchestrator: a forking worker that is safe with Django's database.

The parent closes its database connections before each fork so the work horse opens its own (a
shared socket would corrupt both), and records a heartbeat row the reconciler reads.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time

import redis
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone
from rq import Worker

from .models import WorkerProcess

log = logging.getLogger(__name__)
# Redis going away for a while (a restart, a network cut) must not end a worker: it keeps its horse
# running, retries, and takes work again once Redis is back (RQ itself only retries the dequeue).
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def preload() -> None:
    """Import what a job needs once, in the parent: every forked work horse then starts warm."""
    import importlib

    from channels.layers import get_channel_layer

    for module in ("jobs", "services.approvals", "services.chains", "services.conditions", "services.graphs",
                   "services.notifications", "services.reconcile", "services.execution"):
        importlib.import_module(f"tasks_app.{module}")
    get_channel_layer()


class OrchestratorWorker(Worker):
    def work(self, *args, **kwargs):
        preload()
        return super().work(*args, **kwargs)

    def fork_work_horse(self, job, queue):
        connections.close_all()
        # The horse's garbage collections then skip everything the parent holds: without it, one
        # collection in the horse walks (and copies, page by page) the whole inherited heap.
        gc.freeze()
        try:
            super().fork_work_horse(job, queue)  # the horse never returns from it: os._exit()
        finally:
            gc.unfreeze()

    def heartbeat(self, timeout=None, pipeline=None):
        try:
            super().heartbeat(timeout=timeout, pipeline=pipeline)
        except REDIS_DOWN as exc:
            log.warning("worker %s: Redis unreachable for the heartbeat: %s", self.name, exc)
        self.beat()

    def maintain_heartbeats(self, job, execution):
        try:
            super().maintain_heartbeats(job, execution)
        except REDIS_DOWN as exc:
            log.warning("worker %s: Redis unreachable while job %s runs: %s", self.name, job.id, exc)
            self.beat()

    def execute_job(self, job, queue):
        """As RQ's, but a Redis outage while the horse runs is waited out instead of ending the worker."""
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN as exc:
            log.warning("worker %s: Redis unreachable at the end of job %s: %s", self.name, job.id, exc)
            while self._horse_pid and not self._horse_ended():
                self.beat()
                time.sleep(1)
            self._horse_pid = 0

    def check_for_suspension(self, burst):
        while True:
            try:
                return super().check_for_suspension(burst)
            except REDIS_DOWN as exc:
                log.warning("worker %s: Redis unreachable, retrying: %s", self.name, exc)
                self.beat()
                time.sleep(1)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """RQ retries a lost connection while it waits, but not when it marks itself idle first."""
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except REDIS_DOWN as exc:  # raised before anything was popped: nothing to give back
                log.warning("worker %s: Redis unreachable before waiting for work, retrying: %s", self.name, exc)
                self.beat()
                time.sleep(1)

    def run_maintenance_tasks(self):
        try:
            super().run_maintenance_tasks()
        except REDIS_DOWN as exc:
            log.warning("worker %s: maintenance skipped, Redis unreachable: %s", self.name, exc)

    def _horse_ended(self) -> bool:
        try:
            return os.waitpid(self._horse_pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            return True

    def beat(self, every: float = 5.0) -> None:
        """At most one row write every few seconds: RQ calls heartbeat() around every job."""
        now = time.monotonic()
        if now - getattr(self, "_last_beat", -every) < every:
            return
        self._last_beat = now
        close_old_connections()
        try:
            WorkerProcess.objects.update_or_create(
                name=self.name,
                defaults={"hostname": socket.gethostname()[:200], "pid": os.getpid(), "last_heartbeat": timezone.now()},
            )
        except DatabaseError as exc:  # the database is away: beat again at the next heartbeat
            log.warning("worker %s: heartbeat row not written: %s", self.name, exc)
        connections.close_all()

    def register_birth(self, *args, **kwargs):
        super().register_birth(*args, **kwargs)
        self.beat(every=0)

    def register_death(self, *args, **kwargs):
        """A worker stopped while Redis is away still ends cleanly; its Redis key expires by itself."""
        try:
            super().register_death(*args, **kwargs)
        except REDIS_DOWN as exc:
            log.warning("worker %s: death not recorded in Redis: %s", self.name, exc)
        WorkerProcess.objects.filter(name=self.name).delete()
        connections.close_all()

    def unsubscribe(self):
        try:
            super().unsubscribe()
        except REDIS_DOWN as exc:
            log.warning("worker %s: unsubscribe failed, Redis unreachable: %s", self.name, exc)
