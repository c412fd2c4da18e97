"""Chain hand-off latency: a chain of N no-op steps on one worker.

The latency of a hand-off is the time from step i's end (its Run.finished_at) to step i+1's start
(its Run.started_at, written by the claim). Target: p50 ≤ 10 ms on PostgreSQL. The forking worker
(``manage.py worker``) is the product's configuration: its work horse goes on with the task jobs
queued behind its own (``ORCHESTRATOR_HORSE_SECONDS``), so step i+1 usually runs in step i's
horse; the SimpleWorker leg runs every job in the worker process itself. Each hand-off is split
using the RQ job's timestamps: end of step i → job i+1 enqueued (the rest of step i's transaction,
its commit, the after-commit hooks before the enqueue), → job i+1 started (the horse finishes its
hooks and pops the job; or the worker reaps the horse, dequeues and forks), → claimed.

Baselines in the same run: a chain of N plain RQ jobs (``bench.plain.noop``, each enqueued with
``depends_on`` the one before) on the same forking workers and on as many RQ ``SimpleWorker``s,
whose hand-off is job i's ended_at → job i+1's started_at; and a Celery chain of N no-op tasks on
one prefork worker with concurrency = the worker count (Redis broker and result backend; skipped
when Celery is not installed), whose hand-off is step i's return → step i+1's first line, as each
step records them. The ratios compare the orchestrator's forking leg with each baseline.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

TARGET_P50_MS = 10.0


def submit_chain(n: int, ids: list[int]) -> list[int]:
    from tasks_app.services import execution

    chain = execution.submit(common.chain_spec(n), owner=common.owner())
    ids[:] = [chain.pk]
    return ids


def step_runs(chain_id: int) -> list:
    from tasks_app.models import Run

    return list(Run.objects.filter(signature__parent_id=chain_id).order_by("signature__position", "number"))


def handoffs(runs: list, redis) -> dict[str, list[float]]:
    """Milliseconds of each hand-off, whole and split by the RQ job's enqueued_at and started_at."""
    from rq.job import Job

    jobs = {j.id: j for j in Job.fetch_many([r.job_id for r in runs], connection=redis) if j is not None}
    parts: dict[str, list[float]] = {"total": [], "to enqueue": [], "to start": [], "to claim": []}
    for done, nxt in zip(runs, runs[1:], strict=False):
        parts["total"].append(_ms(done.finished_at, nxt.started_at))
        job = jobs.get(nxt.job_id)
        if job is None or job.enqueued_at is None or job.started_at is None:
            continue
        parts["to enqueue"].append(_ms(done.finished_at, job.enqueued_at))
        parts["to start"].append(_ms(job.enqueued_at, job.started_at))
        parts["to claim"].append(_ms(job.started_at, nxt.started_at))
    return parts


def _ms(start, end) -> float:
    return (end - start).total_seconds() * 1000


def leg(bench: common.Bench, n: int, workers: int, worker_class: str | None) -> tuple[float, dict[str, list[float]]]:
    ids: list[int] = []
    seconds = common.run_orchestrator(bench, lambda: submit_chain(n, ids), workers, worker_class=worker_class)
    return seconds, handoffs(step_runs(ids[0]), bench.redis())


def plain_chain(bench: common.Bench, n: int, workers: int, worker_class: str | None) -> tuple[float, list[float]]:
    """n plain RQ jobs, each depending on the one before, on fresh workers: (seconds, hand-offs in ms)."""
    from rq.job import Job

    from bench.plain import noop

    common.clear_queues(bench)
    bench.start_workers(workers, queues=[common.PLAIN_QUEUE], worker_class=worker_class)
    queue = common.plain_queue(bench)
    started, previous, ids = common.utcnow(), None, []
    for number in range(n):
        previous = queue.enqueue(noop, job_id=f"chain-{number}", depends_on=previous, job_timeout=-1, result_ttl=600)
        ids.append(previous.id)
    last = bench.wait_for(lambda: common.plain_finished_at(queue, ids), timeout=600, interval=0.05, what="RQ chain")
    bench.stop_workers()
    jobs = Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer)
    return (last - started).total_seconds(), [
        _ms(a.ended_at, b.started_at) for a, b in zip(jobs, jobs[1:], strict=False)
    ]


def baselines(bench: common.Bench, n: int, workers: int) -> list[tuple[str, float, list[float]]]:
    """(label, seconds, hand-offs in ms) of each baseline: plain RQ forking and SimpleWorker, Celery prefork."""
    legs = [
        ("plain RQ depends_on, fork", *plain_chain(bench, n, workers, None)),
        ("plain RQ depends_on, SimpleWorker", *plain_chain(bench, n, workers, common.SIMPLE_WORKER)),
    ]
    if common.celery_installed():
        from bench import celery_app

        legs.append(
            (f"Celery chain, prefork --concurrency {workers}", *celery_app.run_chain(bench, n, concurrency=workers))
        )
    return legs


def orchestrator_rows(label: str, seconds: float, parts: dict[str, list[float]], n: int) -> list[tuple]:
    rows = [
        (
            label if part == "total" else "",
            part,
            len(values),
            statistics.median(values),
            common.percentile(values, 95),
            max(values),
        )
        for part, values in parts.items()
        if values
    ]
    return [*rows, ("", "chain total s", n, seconds, "", "")]


def main() -> None:
    args = common.parser(__doc__, n=200, workers=1).parse_args()
    rows, verdicts, p50s = [], [], {}
    with common.session("chain") as bench:
        for label, worker_class in (("fork (manage.py worker)", None), ("SimpleWorker", common.SIMPLE_WORKER)):
            seconds, parts = leg(bench, args.n, args.workers, worker_class)
            rows += orchestrator_rows(label, seconds, parts, args.n)
            p50s[label] = (statistics.median(parts["total"]), seconds)
            verdict = common.ratio_label(p50s[label][0], TARGET_P50_MS, at_least=False)
            verdicts.append(f"p50 hand-off, orchestrator {label}: {verdict} ms")
        for label, seconds, values in baselines(bench, args.n, args.workers):
            rows.append(
                (label, "total", len(values), statistics.median(values), common.percentile(values, 95), max(values))
            )
            rows.append(("", "chain total s", args.n, seconds, "", ""))
            p50, total = p50s["fork (manage.py worker)"]
            verdicts.append(
                f"orchestrator (fork) / {label}: p50 hand-off {p50 / statistics.median(values):.2f}×, "
                f"chain total {total / seconds:.2f}× (above 1: the orchestrator is slower)"
            )
        common.table(
            ["worker", "hand-off part", "count", "p50 ms", "p95 ms", "max ms"],
            rows,
            title=f"Chain of {args.n} no-op steps on {args.workers} worker(s)",
        )
        for line in verdicts:
            print(line)


if __name__ == "__main__":
    main()
