"""The RQ worker class of the orchestrator: a forking worker that is safe with Django's database.

The parent closes its database connections before each fork so the work horse opens its own (a
shared socket would corrupt both), and records a heartbeat row the reconciler reads.

A work horse that ran a task keeps going with the task jobs at the head of its queues
(:class:`FollowUps`), so a swarm or a chain does not pay a fork, a new database connection and
RQ's bookkeeping for every member.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import time
import traceback

import redis
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone
from rq import Worker
from rq.command import parse_payload
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

from . import private_apis, slots
from .models import WorkerProcess
from .slots import Slots

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
    """``concurrency`` above 1: async and ``threads=True`` tasks run in slots of this process
    (:mod:`tasks_app.slots`), up to that many at once; other jobs fork a horse as before."""

    concurrency = 1
    slots: Slots | None = None

    def work(self, *args, **kwargs):
        preload()
        os.environ["RQ_WORKER_ID"] = self.name  # what a claim records as the run's worker
        if self.concurrency > 1:
            self.slots = Slots(self, self.concurrency)
            # The main thread and the database threads wait on sockets: after each answer, a thread
            # waits for the GIL up to this interval (5 ms by default) while the others compute.
            sys.setswitchinterval(0.001)
        return super().work(*args, **kwargs)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """With slots: task jobs at the heads of the queues are taken as many at once as slots are
        free and started in them; otherwise RQ's dequeue takes the next job (for a horse, or the
        first one to arrive), which ``execute_job`` runs in a slot or a horse.
        A burst worker with tasks in flight waits for them (they queue the next members) before it
        finds the queues empty."""
        if self.slots is None:
            return self._dequeue(timeout, max_idle_time)
        while True:
            try:
                if self.slots.take(self.slots.wait_free()):
                    continue
            except DatabaseError as exc:  # the worker waits the outage out, as it does for Redis
                log.warning("worker %s: database unreachable, jobs left in their queues: %s", self.name, exc)
                self.beat()
                time.sleep(1)
                continue
            result = self._dequeue(timeout, max_idle_time)
            if result is not None or not self.slots.busy():
                return result
            self.slots.wait_for_change()

    def execute_job(self, job, queue):
        if self.slots is not None and job.id.startswith(FollowUps.PREFIX):
            try:
                kind = slots.slot_kinds([job]).get(job.id)
            except DatabaseError as exc:  # the horse's claim meets the same error and leaves the run for auto-resume
                log.warning("worker %s: task of job %s not read: %s", self.name, job.id, exc)
                kind = None
            if kind is not None:
                self.slots.start([(job, queue, kind == "thread")])
                return
        self._execute_in_horse(job, queue)

    def set_state(self, state, pipeline=None):
        """With slots, RQ sees the worker ``busy`` while tasks are in flight (it marks itself idle
        before every dequeue), and only a change is written (RQ writes it around every job). The
        state RQ's own loop reads stays what it set: a stop request while it waits for a job ends it."""
        if self.slots is None:
            return super().set_state(state, pipeline=pipeline)
        shown = WorkerStatus.BUSY if state == WorkerStatus.IDLE and self.slots.busy() else state
        if pipeline is not None or shown != getattr(self, "_shown_state", None):
            super().set_state(shown, pipeline=pipeline)
            self._shown_state = shown
        self._state = state

    def teardown(self):
        if self.slots is not None:
            self.slots.shutdown(grace=settings.ORCHESTRATOR["SHUTDOWN_GRACE"])
        super().teardown()

    def fork_work_horse(self, job, queue):
        connections.close_all()
        # The horse's garbage collections then skip everything the parent holds: without it, one
        # collection in the horse walks (and copies, page by page) the whole inherited heap.
        gc.freeze()
        try:
            if self.slots is None:
                super().fork_work_horse(job, queue)  # the horse never returns from it: os._exit()
            else:
                with self.slots.gate.exclusive():
                    super().fork_work_horse(job, queue)
        finally:
            gc.unfreeze()

    def perform_job(self, job, queue, execution):
        """In the horse: the job, then (for a task job) the task jobs that wait behind it."""
        done = super().perform_job(job, queue, execution)
        if done and job.id.startswith(FollowUps.PREFIX) and settings.ORCHESTRATOR["HORSE_SECONDS"] > 0:
            FollowUps(self, first_job_id=job.id).run()
        return done

    def _execute_in_horse(self, job, queue):
        """As RQ's, but a Redis outage while the horse runs is waited out instead of ending the worker."""
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN as exc:
            log.warning("worker %s: Redis unreachable at the end of job %s: %s", self.name, job.id, exc)
            while self._horse_pid and not self._horse_ended():
                self.beat()
                time.sleep(1)
            self._horse_pid = 0
        try:
            FollowUps(self).fail_cut_off()
        except REDIS_DOWN as exc:
            log.warning("worker %s: Redis unreachable after job %s: %s", self.name, job.id, exc)

    def handle_payload(self, message):
        """A stop command for the follow-up job the horse is running kills the horse, as for its first job."""
        payload = parse_payload(message)
        if payload.get("command") == "stop-job" and self.slots is not None and self.slots.stop(payload.get("job_id")):
            log.info("worker %s: stopping task job %s", self.name, payload["job_id"])
            return
        if payload.get("command") == "stop-job" and payload.get("job_id") == FollowUps(self).current():
            log.info("worker %s: stopping follow-up job %s", self.name, payload["job_id"])
            self.kill_horse()
            return
        super().handle_payload(message)

    def heartbeat(self, timeout=None, pipeline=None):
        if self.slots is not None and pipeline is None and timeout is None:
            # RQ beats around every dequeue and job: a round trip each, which a busy loop of slots
            # makes slow (the main thread waits for the GIL after each). Once a second is enough.
            beat_at = time.monotonic()
            if beat_at - getattr(self, "_last_rq_beat", -1.0) < 1.0:
                return
            self._last_rq_beat = beat_at
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

    def check_for_suspension(self, burst):
        while True:
            try:
                return super().check_for_suspension(burst)
            except REDIS_DOWN as exc:
                log.warning("worker %s: Redis unreachable, retrying: %s", self.name, exc)
                self.beat()
                time.sleep(1)

    def _dequeue(self, timeout, max_idle_time=None):
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

    def serialize(self) -> dict:
        """RQ's worker hash, plus the slots of this process: the workers page (services/workers.py) shows them."""
        return {**super().serialize(), "concurrency": self.concurrency}

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


# Take the job at the head of the first non-empty queue if it is a task job; mark it started by this
# worker and remember it as the horse's current follow-up. KEYS: the marker, then the queues in the
# order the worker reads them. ARGV: worker name, started_at, marker TTL, the horse's own job (recorded in
# the job as `horse_of`, so operators can tell a follow-up from a job that had a horse of its own).
POP_FOLLOW_UP = """
for i = 2, #KEYS do
  local id = redis.call('LINDEX', KEYS[i], 0)
  if id then
    if string.sub(id, 1, 5) ~= 'orch-' then return false end
    redis.call('LPOP', KEYS[i])
    redis.call('HSET', 'rq:job:' .. id, 'status', 'started', 'worker_name', ARGV[1], 'started_at', ARGV[2],
               'horse_of', ARGV[4])
    redis.call('SET', KEYS[1], id, 'EX', ARGV[3])
    return {id, KEYS[i]}
  end
end
return false
"""


class FollowUps:
    """Task jobs a work horse runs after its own, without going back to its worker.

    The horse takes the head of its queues, in the worker's order, while it is a task job (the
    first other job ends the batch, for the worker to run), starting new ones for
    ``ORCHESTRATOR["HORSE_SECONDS"]`` after its own job. Each job is marked ``started`` by
    this worker and named in a marker key while it runs, so a stop command for it kills the horse
    (:meth:`OrchestratorWorker.handle_payload`), and a horse that dies in the middle leaves its
    job ``failed`` (:meth:`fail_cut_off`), which the reconciler reads as it reads any ended job.
    Each is performed with RQ's bookkeeping of a job, as if the worker had forked for it.
    """

    PREFIX = "orch-"  # transport.job_id(): the jobs of runs

    def __init__(self, worker: Worker, first_job_id: str = ""):
        self.worker = worker
        self.first_job_id = first_job_id
        self.connection = worker.connection
        self.marker = f"orchestrator:follow-up:{worker.name}"

    def current(self) -> str | None:
        value = self.connection.get(self.marker)
        return value.decode() if value else None

    def run(self) -> None:
        deadline = time.monotonic() + settings.ORCHESTRATOR["HORSE_SECONDS"]
        pop = self.connection.register_script(POP_FOLLOW_UP)
        queues = {q.key: q for q in self.worker.queues}
        keys = [self.marker, *queues]
        while time.monotonic() < deadline:
            popped = pop(keys=keys, args=[self.worker.name, utcformat(now()), 86400, self.first_job_id])
            if not popped:
                return
            job_id, queue_key = (value.decode() for value in popped)
            log.debug("worker %s: follow-up %s", self.worker.name, job_id)
            _, signature_id, number = job_id.rsplit("-", 2)
            if self.worker.concurrency > 1 and slots.slot_kinds([Job(job_id, connection=self.connection)]):
                self.give_back(job_id, queue_key)  # the worker runs it in a slot, beside others
                return
            if not self.perform(job_id, queues[queue_key], int(signature_id), int(number)):
                return

    def perform(self, job_id: str, queue, signature_id: int, number: int) -> bool:
        """Run one follow-up with RQ's own bookkeeping of a job (an execution in the started registry
        while it runs, then the finished or failed registry and the worker's counters), so operators
        see it as they see the jobs the worker forked for."""
        from .jobs import execute

        worker = self.worker
        job = worker.job_class.fetch(job_id, connection=self.connection, serializer=worker.serializer)
        execution = worker.prepare_execution(job)
        worker.prepare_job_execution(job)
        job.started_at = now()
        try:
            execute(signature_id, number)
        except Exception:  # as RQ does for a job: logged, marked failed; the reconciler resumes its run
            log.exception("worker %s: follow-up job %s failed", worker.name, job_id)
            job.ended_at = now()
            worker.handle_job_failure(job, queue, queue.started_job_registry, traceback.format_exc(), execution)
            self.connection.delete(self.marker)
            return False
        job.ended_at = now()
        private_apis.mark_finished(job)
        worker.handle_job_success(job, queue, queue.started_job_registry, execution)
        self.connection.delete(self.marker)
        return True

    def give_back(self, job_id: str, queue_key: str) -> None:
        with self.connection.pipeline() as pipe:
            pipe.hset(Job.key_for(job_id), "status", JobStatus.QUEUED.value)
            private_apis.push_to_head(pipe, queue_key, job_id)
            pipe.delete(self.marker)
            pipe.execute()

    def fail_cut_off(self) -> None:
        """In the worker, after its horse: a follow-up the horse did not end (it died or was stopped)
        goes to RQ's failed registry; its execution expires from the started registry."""
        job_id = self.current()
        if not job_id:
            return
        log.warning("worker %s: work horse ended during follow-up job %s", self.worker.name, job_id)
        self.connection.delete(self.marker)
        try:
            job = self.worker.job_class.fetch(job_id, connection=self.connection, serializer=self.worker.serializer)
        except NoSuchJobError:
            return
        job.ended_at = now()
        queue = next((q for q in self.worker.queues if q.name == job.origin), self.worker.queues[0])
        self.worker.handle_job_failure(job, queue, queue.started_job_registry, "work horse ended during the job")
