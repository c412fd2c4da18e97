"""Who works on what: every worker process, the tasks it runs now, and the depth of each queue.

The API (``/api/workers/``, ``/api/queues/``) and the page ``/workers/`` both read this module.
A worker is known from two places. Its heartbeat row (``WorkerProcess``) is written by the worker
and stays when the process dies without a clean exit; RQ's worker hash in Redis holds its state,
counters, concurrency and executions in flight, and expires about a minute after the last beat.
A worker the reconciler takes for dead (``reconcile.live_workers``) is ``lost``: for it, the runs it
held say what auto-resume did (resumed as a new run, gave up, or not yet).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.utils import timezone
from rq import Worker, worker_registration
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE
from rq.utils import utcparse

from ..models import Run, RunStatus, Status, WorkerProcess
from . import reconcile, transport

LOST = "lost"
LOST_SHOWN = timedelta(hours=24)  # a lost worker's row stays; the page shows it for this long
LOST_RUNS_SHOWN = 50  # runs of one lost worker whose fate is listed
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
PRIORITY_BY_QUEUE = {name: priority.value for priority, name in transport.QUEUE_BY_PRIORITY.items()}


@dataclass
class WorkerInfo:
    name: str
    host: str = ""
    pid: int | None = None
    state: str = "unregistered"  # RQ's state (idle, busy, suspended, ...), or lost
    started_at: datetime | None = None
    heartbeat: datetime | None = None
    heartbeat_age: float | None = None  # seconds
    concurrency: int | None = None
    slots_in_use: int = 0
    queues: list[str] = field(default_factory=list)
    finished_jobs: int | None = None
    failed_jobs: int | None = None
    current_tasks: list[dict] = field(default_factory=list)
    auto_resume: list[dict] = field(default_factory=list)

    @property
    def lost(self) -> bool:
        return self.state == LOST


def workers() -> list[WorkerInfo]:
    """Every worker process: live ones first (by host and name), then the lost, most recent first.

    Redis away: the heartbeat rows alone, without RQ's state and counters."""
    now = timezone.now()
    rows = {row.name: row for row in WorkerProcess.objects.filter(last_heartbeat__gte=now - LOST_SHOWN)}
    try:
        hashes = rq_workers()
    except REDIS_DOWN:
        hashes = {}
    live = reconcile.live_workers()
    found = [_info(name, rows.get(name), hashes.get(name), name in live or name not in rows, now)
             for name in sorted(rows.keys() | hashes.keys())]
    _add_current_tasks([w for w in found if not w.lost])
    _add_auto_resume([w for w in found if w.lost])
    alive = sorted((w for w in found if not w.lost), key=lambda w: (w.host, w.name))
    lost = sorted((w for w in found if w.lost), key=lambda w: w.heartbeat or now, reverse=True)
    return alive + lost


def rq_workers() -> dict[str, dict]:
    """RQ's hash of each registered worker, with its executions in flight, in one round trip."""
    conn = transport.connection(transport.queue_names()[0])
    keys = sorted(worker_registration.get_keys(connection=conn))
    names = [key.removeprefix(Worker.redis_worker_namespace_prefix) for key in keys]
    with conn.pipeline(transaction=False) as pipe:
        for key, name in zip(keys, names, strict=True):
            pipe.hgetall(key)
            pipe.scard(WORKER_EXECUTIONS_KEY_TEMPLATE.format(name))
        replies = pipe.execute()
    hashes = {}
    for name, data, executions in zip(names, replies[::2], replies[1::2], strict=True):
        if data:  # expired between the two reads: gone
            hashes[name] = {**{k.decode(): v.decode() for k, v in data.items()}, "executions": executions}
    return hashes


def _info(name: str, row: WorkerProcess | None, data: dict | None, alive: bool, now: datetime) -> WorkerInfo:
    data = data or {}
    beats = [b for b in (row and row.last_heartbeat, _time(data.get("last_heartbeat"))) if b]
    heartbeat = max(beats) if beats else None
    info = WorkerInfo(
        name=name,
        host=row.hostname if row else data.get("hostname", ""),
        pid=row.pid if row else _int(data.get("pid")),
        state=data.get("state", "unregistered") if alive else LOST,
        started_at=_time(data.get("birth")) or (row and row.started_at),
        heartbeat=heartbeat,
        heartbeat_age=round((now - heartbeat).total_seconds(), 1) if heartbeat else None,
        concurrency=_int(data.get("concurrency")),
        queues=[q for q in data.get("queues", "").split(",") if q],
        finished_jobs=_int(data.get("successful_job_count", "0" if data else None)),
        failed_jobs=_int(data.get("failed_job_count", "0" if data else None)),
    )
    if alive:  # a lost worker's executions in flight ended with it, whatever RQ still holds
        info.slots_in_use = int(data.get("executions", 0))
    return info


def _time(value: str | None) -> datetime | None:
    return utcparse(value) if value else None


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _task(run: Run) -> dict:
    sig = run.signature
    return {"id": sig.pk, "title": sig.title, "task": sig.task_name, "run": run.number, "started_at": run.started_at}


def _add_current_tasks(live: list[WorkerInfo]) -> None:
    """The runs each live worker holds, from the database (the truth about what runs where)."""
    by_name = {w.name: w for w in live}
    running = Run.objects.filter(status=RunStatus.RUNNING, worker_name__in=by_name).select_related("signature")
    for run in running.order_by("started_at", "pk"):
        by_name[run.worker_name].current_tasks.append(_task(run))
    for worker in live:
        worker.slots_in_use = max(worker.slots_in_use, len(worker.current_tasks))


def _add_auto_resume(lost: list[WorkerInfo]) -> None:
    """For each lost worker, what became of the runs it held: read from the run rows, since the
    reconciler ends a lost run as ``lost`` and queues the next run of the same signature."""
    if not lost:
        return
    held = Run.objects.filter(
        status__in=(RunStatus.RUNNING, RunStatus.LOST, RunStatus.HANDED_BACK), worker_name__in=[w.name for w in lost]
    ).select_related("signature").order_by("-pk")
    held = list(held[: LOST_RUNS_SHOWN * len(lost)])
    later = _later_runs(held)
    by_name = {w.name: w for w in lost}
    for run in held:
        items = by_name[run.worker_name].auto_resume
        if len(items) < LOST_RUNS_SHOWN:
            items.append({**_task(run), "at": run.finished_at, **_fate(run, later.get(run.pk))})


def _later_runs(held: list[Run]) -> dict[int, Run]:
    """The run that followed each held run of its signature (the one auto-resume queued), by held run id."""
    runs_of: dict[int, list[Run]] = defaultdict(list)
    for run in Run.objects.filter(signature_id__in={r.signature_id for r in held}).order_by("number"):
        runs_of[run.signature_id].append(run)
    following = {}
    for run in held:
        after = next((r for r in runs_of[run.signature_id] if r.number > run.number), None)
        if after is not None:
            following[run.pk] = after
    return following


def _fate(run: Run, next_run: Run | None) -> dict:
    """In words and fields: what auto-resume did about one run of a lost worker."""
    if run.status == RunStatus.RUNNING:
        return {"outcome": "waiting", "detail": _waiting(run), "next_run": None}
    if next_run is not None:
        where = f" on {next_run.worker_name}" if next_run.worker_name else ""
        verb = "handed back" if run.status == RunStatus.HANDED_BACK else "resumed"
        return {
            "outcome": verb.replace(" ", "_"),
            "detail": f"{verb} as run {next_run.number}: {next_run.get_status_display().lower()}{where}",
            "next_run": {"number": next_run.number, "status": next_run.status, "worker": next_run.worker_name},
        }
    if run.signature.status == Status.FAILED:
        return {"outcome": "gave_up", "detail": "not re-queued: the task failed (lost too many times)",
                "next_run": None}
    return {"outcome": "ended", "detail": f"ended as {run.status}; the task is {run.signature.status}",
            "next_run": None}


def _waiting(run: Run) -> str:
    if not settings.ORCHESTRATOR["AUTO_RESUME"]:
        return "still marked running: auto-resume is off (manage.py resume_unfinished)"
    if not reconcile.included(run.signature.task_name):
        return "still marked running: excluded from auto-resume by the settings"
    return "still marked running: the next auto-resume pass re-queues it"


@dataclass
class QueueInfo:
    name: str
    priority: str | None
    depth: int
    oldest_age: float | None  # seconds the job at the head has waited
    started: int
    scheduled: int
    failed: int


def queues() -> list[QueueInfo]:
    """Each of the orchestrator's queues, in the order workers read them. Raises RedisError when Redis is away."""
    now = timezone.now()
    found = []
    for name in transport.queue_names():
        queue = transport.get_queue(name)
        with queue.connection.pipeline(transaction=False) as pipe:
            pipe.llen(queue.key)
            pipe.lindex(queue.key, 0)
            depth, head = pipe.execute()
        oldest = _enqueued_at(queue.connection, head.decode()) if head else None
        found.append(QueueInfo(
            name=name,
            priority=PRIORITY_BY_QUEUE.get(name),
            depth=depth,
            oldest_age=round(max((now - oldest).total_seconds(), 0.0), 1) if oldest else None,
            started=queue.started_job_registry.count,
            scheduled=queue.scheduled_job_registry.count,
            failed=queue.failed_job_registry.count,
        ))
    return found


def _enqueued_at(conn: redis.Redis, job_id: str) -> datetime | None:
    value = conn.hget(f"rq:job:{job_id}", "enqueued_at")
    return utcparse(value.decode()) if value else None

