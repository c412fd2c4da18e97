"""Slots: the tasks one worker process has in flight side by side (``manage.py worker --concurrency N``).

An ``async def`` task runs as a coroutine on the process's event loop, in a thread of its own; a
``threads=True`` task runs in a thread pool. Their database work (claim, progress, the end of the
run) runs in a small pool of database threads, so the loop never waits on the database. Every other
job keeps RQ's forked work horse, one at a time, in the worker's main thread.

Each task is still one RQ job, with RQ's own bookkeeping: the job is ``started`` with an execution
in the started registry while it runs, then ``finished``, ``failed`` or ``stopped``, and counted in
the worker's totals. Control is per task: a stop command for the job cancels its coroutine (a
thread task stops at its next ``ctx`` call), a timeout fails that task alone, and a process that
dies leaves its runs to the auto-resume pass, which resumes each once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import DatabaseError, connection
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import now
from rq.worker import WorkerStatus

from . import private_apis
from .context import TaskContext, off_loop
from .group_commit import GroupCommit
from .registry import get_task
from .services import containers, live

log = logging.getLogger(__name__)
DB_THREADS = 4  # database threads per process: more only queue behind the database's own locks
WATCH_INTERVAL = 0.25  # seconds between two looks at a thread task's timeout


@dataclass
class Flight:
    """One task job in flight in this process."""

    job: Job
    queue: Queue
    execution: object  # rq.executions.Execution
    threaded: bool
    ctx: TaskContext | None = None  # once the run is claimed
    task: asyncio.Task | None = None
    stop_requested: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def ids(self) -> tuple[int, int]:
        _, signature_id, number = self.job.id.rsplit("-", 2)
        return int(signature_id), int(number)


def slot_kind(task_name: str | None) -> str | None:
    """``"async"`` or ``"thread"`` for a task that runs in a slot, else None (a horse)."""
    taskdef = get_task(task_name) if task_name else None
    if taskdef is None or not taskdef.runs_in_slot:
        return None
    return "async" if taskdef.is_async else "thread"


def slot_kinds(jobs: list[Job]) -> dict[str, str]:
    """The slot kind of each task job whose task runs in a slot, by job id (one query)."""
    from .models import Signature

    by_signature = {int(job.id.rsplit("-", 2)[1]): job.id for job in jobs}
    names = Signature.objects.filter(pk__in=by_signature).values_list("pk", "task_name")
    return {by_signature[pk]: kind for pk, name in names if (kind := slot_kind(name))}


# The task jobs at the heads of the queues, in the worker's order, at most ARGV[1] of them: a head
# that is not a task job ends the take (the worker's own dequeue runs it next, in its turn). It
# relies on RQ's queue layout (private_apis).
# KEYS: the queues. Returns queue key, job id, queue key, job id, ...
POP_TASK_JOBS = """
local out, most = {}, tonumber(ARGV[1]) * 2
for i = 1, #KEYS do
  while #out < most do
    local id = redis.call('LINDEX', KEYS[i], 0)
    if not id then break end
    if string.sub(id, 1, 5) ~= 'orch-' then return out end
    redis.call('LPOP', KEYS[i])
    out[#out + 1] = KEYS[i]
    out[#out + 1] = id
  end
  if #out >= most then return out end
end
return out
"""


class ForkGate:
    """Keeps a fork for a work horse out of the moments other threads use the database.

    A thread inside a database call holds locks of the driver (SQLite's mutexes) that a forked
    child would inherit locked, and its first query would wait for ever. The database threads pass
    the gate (shared); a fork waits until none is inside, and keeps new calls out until the horse is
    forked (a few milliseconds). ``threads=True`` tasks do not pass it (a fork would wait for them
    to end), so on SQLite they and plain sync tasks are best not mixed (docs/canvas.md)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.inside = 0
        self.forking = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self.changed:
            while self.forking:
                self.changed.wait()
            self.inside += 1
        try:
            yield
        finally:
            with self.changed:
                self.inside -= 1
                self.changed.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self.changed:
            self.forking = True
            while self.inside:
                self.changed.wait()
        try:
            yield
        finally:
            with self.changed:
                self.forking = False
                self.changed.notify_all()


class GatedExecutor(ThreadPoolExecutor):
    """A thread pool whose work passes a ``ForkGate``."""

    def __init__(self, gate: ForkGate, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = gate

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(self._gated, fn, *args, **kwargs)

    def _gated(self, fn, *args, **kwargs):
        with self.gate.shared():
            return fn(*args, **kwargs)


class Slots:
    def __init__(self, worker, size: int):
        self.worker = worker
        self.size = size
        self.flights: dict[str, Flight] = {}
        self.changed = threading.Condition()
        self.stop_lock = threading.Lock()  # RQ marks a stopped job through one worker attribute
        self.loop = asyncio.new_event_loop()
        self.gate = ForkGate()
        self.loop.set_default_executor(GatedExecutor(self.gate, DB_THREADS, thread_name_prefix="orchestrator-db"))
        # Not gated: a fork would wait for a thread task to end, and hold every database call meanwhile.
        self.threads = ThreadPoolExecutor(size, thread_name_prefix="orchestrator-task")
        # RQ's end of each job, in order, off the database threads (they go on with the next task).
        self.bookkeeping = ThreadPoolExecutor(1, thread_name_prefix="orchestrator-rq")
        # The claims and the ends of async tasks: many in one transaction each (group_commit), a
        # batch at a time on SQLite (one writer at a time anyway), side by side on PostgreSQL.
        parallel = 1 if connection.vendor == "sqlite" else DB_THREADS // 2
        self.claims = GroupCommit(parallel=parallel)
        self.ends = GroupCommit(around=containers.swarms_advanced_once, parallel=parallel)
        live.deliver_in_background()
        self.thread = threading.Thread(target=self.loop.run_forever, name="orchestrator-loop", daemon=True)
        self.thread.start()
        self.beating = asyncio.run_coroutine_threadsafe(self._heartbeats(), self.loop)

    # In the worker's main thread ----------------------------------------------------------------

    def wait_free(self) -> int:
        """Wait for a free slot, keeping the worker's heartbeats while all are taken; how many are free."""
        with self.changed:
            while len(self.flights) >= self.size:
                if not self.changed.wait(1):
                    self.worker.heartbeat()
            return self.size - len(self.flights)

    def busy(self) -> int:
        return len(self.flights)

    def wait_for_change(self, timeout: float = 1.0) -> None:
        with self.changed:
            self.changed.wait(timeout)

    def take(self, free: int) -> int:
        """Pop up to ``free`` task jobs from the heads of the queues in one trip and start those that
        run in slots; the others (jobs for a horse) go back to the heads of their queues at once, for
        any worker's dequeue to take one at a time. How many started."""
        popped = self.pop(keys=[q.key for q in self.worker.queues], args=[free])
        if not popped:
            return 0
        queues = {q.key: q for q in self.worker.queues}
        keys, ids = [k.decode() for k in popped[::2]], [i.decode() for i in popped[1::2]]
        fetched = self.worker.job_class.fetch_many(ids, connection=self.worker.connection,
                                                   serializer=self.worker.serializer)
        jobs = [(job, queues[key]) for job, key in zip(fetched, keys, strict=True) if job is not None]
        try:
            kinds = slot_kinds([job for job, _ in jobs])
        except DatabaseError:  # the database is away: the jobs wait in their queues meanwhile
            self.give_back(jobs)
            raise
        self.give_back([(job, queue) for job, queue in jobs if not kinds.get(job.id)])
        self.start([(job, queue, kinds[job.id] == "thread") for job, queue in jobs if kinds.get(job.id)])
        return sum(1 for job, _ in jobs if kinds.get(job.id))

    def give_back(self, jobs: list[tuple[Job, Queue]]) -> None:
        if not jobs:
            return
        with self.worker.connection.pipeline() as pipeline:
            for job, queue in reversed(jobs):  # pushed last first: they keep their order
                private_apis.push_to_head(pipeline, queue.key, job.id)
            pipeline.execute()

    @functools.cached_property
    def pop(self):
        return self.worker.connection.register_script(POP_TASK_JOBS)

    def start(self, jobs: list[tuple[Job, Queue, bool]]) -> None:
        """Take jobs into free slots with RQ's bookkeeping of started jobs, in one Redis trip.

        It writes what ``Worker.prepare_execution`` and ``prepare_job_execution`` write for one job
        (an execution in the started registry, the job ``started`` by this worker, heartbeats),
        through the same public calls of RQ 3's ``Execution`` and ``Job``."""
        if not jobs:
            return
        worker = self.worker
        flights = []
        with worker.connection.pipeline() as pipeline:
            for job, queue, threaded in jobs:
                ttl = worker.get_heartbeat_ttl(job)
                execution = Execution.create(job, ttl, pipeline=pipeline, worker_name=worker.name)
                worker.executions[execution.id] = execution
                job.heartbeat(now(), ttl, pipeline=pipeline)
                job.prepare_for_execution(worker.name, pipeline=pipeline)
                pipeline.persist(job.key)
                flights.append(Flight(job, queue, execution, threaded))
            worker.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            worker.heartbeat(worker.job_monitoring_interval + 60, pipeline=pipeline)
            pipeline.execute()
        with self.changed:
            for flight in flights:
                self.flights[flight.job.id] = flight
        for flight in flights:
            asyncio.run_coroutine_threadsafe(self._fly(flight), self.loop)

    def stop(self, job_id: str) -> bool:
        """A stop command (interrupt, cancel) for a job in flight here; False when it is not."""
        flight = self.flights.get(job_id)
        if flight is None:
            return False
        flight.stop_requested = True
        if flight.ctx is not None:
            flight.ctx.stop_reason = "interrupt"
        if flight.task is not None and not flight.threaded:
            self.loop.call_soon_threadsafe(flight.task.cancel)
        return True

    def shutdown(self, grace: float) -> None:
        """Let the tasks in flight end for ``grace`` seconds, then stop the rest and hand their runs
        back to the queues (a new run of the same attempt, from its checkpoint)."""
        deadline = time.monotonic() + grace
        while self.flights and time.monotonic() < deadline:
            self.wait_for_change(0.2)
        left = list(self.flights.values())
        for flight in left:
            self.stop(flight.job.id)
        deadline = time.monotonic() + 1
        while self.flights and time.monotonic() < deadline:
            self.wait_for_change(0.1)
        for flight in left:
            if flight.ctx is not None:
                hand_back(flight.ctx)
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout=5)
        except TimeoutError:  # a thread task stuck in a call: the process exits without it
            log.warning("worker %s: tasks still in flight at exit: %s", self.worker.name, list(self.flights))

    async def _close(self) -> None:
        self.beating.cancel()
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()),
                             return_exceptions=True)
        self.loop.call_soon(self.loop.stop)

    # On the loop --------------------------------------------------------------------------------

    async def _fly(self, flight: Flight) -> None:
        flight.task = asyncio.current_task()
        outcome, detail = JobStatus.FINISHED, ""
        try:
            if flight.threaded:
                await self._in_thread(flight)
            else:
                await self._on_loop(flight)
            if flight.stop_requested:  # a thread task that stopped at a ctx call
                outcome, detail = JobStatus.STOPPED, "stopped by a stop-job command"
        except asyncio.CancelledError:
            outcome, detail = JobStatus.STOPPED, "stopped by a stop-job command"
        except Exception:  # an error of the orchestrator itself, not of the task: the run stays for auto-resume
            log.exception("worker %s: job %s failed", self.worker.name, flight.job.id)
            outcome, detail = JobStatus.FAILED, traceback.format_exc()
        with self.changed:
            self.flights.pop(flight.job.id, None)
            self.changed.notify_all()
        self.bookkeeping.submit(self._end_job, flight, outcome, detail)

    async def _on_loop(self, flight: Flight) -> None:
        from .services import execution

        prepared = await self.claims.call(execution.prepare, *flight.ids)
        if prepared is None:
            return
        flight.ctx = prepared.ctx
        if flight.stop_requested:
            return
        # A graph node's end evaluates its edges' conditions (user input) before any lock: alone.
        await execution.run_coroutine(prepared, db=off_loop if prepared.sig.node_key else self.ends.call)

    async def _in_thread(self, flight: Flight) -> None:
        """The thread runs the task; the loop watches its timeout, which fails the run on time even
        when the task is stuck in a call (the thread itself stops at its next ``ctx`` call)."""
        from .services import execution

        done = self.loop.run_in_executor(self.threads, self._run_thread, flight)
        timed_out = False
        while not done.done():
            await asyncio.wait({done}, timeout=WATCH_INTERVAL)
            ctx = flight.ctx
            if ctx is None or timed_out or not ctx.signature.timeout:
                continue
            if time.monotonic() - flight.started > ctx.signature.timeout:
                timed_out = True
                ctx.stop_reason = "timeout"
                error = execution.error_payload(ctx.signature, execution.JobTimeoutException())
                await off_loop(execution.fail, ctx.signature, ctx.run, error)
        await done

    def _run_thread(self, flight: Flight) -> None:
        from .services import execution

        prepared = execution.prepare(*flight.ids)
        if prepared is None:
            return
        flight.ctx = prepared.ctx
        flight.started = time.monotonic()
        if flight.stop_requested:
            return
        execution.run_sync(prepared, limit=False)

    async def _heartbeats(self) -> None:
        """RQ's heartbeats of the jobs in flight (its started registry expires them otherwise) and
        the worker's row, while the main thread may be waiting on a queue or a work horse."""
        interval = self.worker.job_monitoring_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await off_loop(self._beat)
            except Exception:  # Redis or the database away: the next beat tries again
                log.warning("worker %s: heartbeat of the tasks in flight failed", self.worker.name, exc_info=True)

    def _beat(self) -> None:
        self.worker.beat()
        ttl = self.worker.job_monitoring_interval + 60
        with self.worker.connection.pipeline() as pipeline:
            for flight in list(self.flights.values()):
                flight.execution.heartbeat(flight.job.started_job_registry, ttl, pipeline=pipeline)
                flight.job.heartbeat(now(), ttl, pipeline=pipeline, xx=True)
            pipeline.execute()

    def _end_job(self, flight: Flight, outcome: JobStatus, detail: str) -> None:
        """RQ's end of the job: its status, result or failure, registries and the worker's counters."""
        job, queue, worker = flight.job, flight.queue, self.worker
        job.ended_at = now()
        try:
            if outcome == JobStatus.FINISHED:
                private_apis.mark_finished(job)
                worker.handle_job_success(job, queue, queue.started_job_registry, flight.execution)
                return
            with self.stop_lock:
                if outcome == JobStatus.STOPPED:
                    private_apis.mark_stopped(worker, job)
                worker.handle_job_failure(job, queue, queue.started_job_registry, detail, flight.execution)
        except Exception:  # Redis away: RQ's own maintenance ends the execution later
            log.warning("worker %s: end of job %s not recorded in RQ", worker.name, job.id, exc_info=True)


def hand_back(ctx: TaskContext) -> None:
    """A run stopped by a shutdown goes back to its queue at once, instead of waiting for the
    auto-resume pass to find its worker gone."""
    from .services import reconcile

    try:
        reconcile.hand_back(ctx.run)
    except Exception:
        log.warning("run %s of task %s not handed back; auto-resume will", ctx.run.number, ctx.signature.pk,
                    exc_info=True)
