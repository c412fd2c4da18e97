"""Swarm: one closed swarm of N no-op members (max_concurrency 50) versus N plain RQ jobs, same workers.

The orchestrator and the first plain-RQ leg use ``manage.py worker`` (tasks_app.worker.OrchestratorWorker,
forking) with the same number of workers, registered before the clock starts; the second plain-RQ
leg runs the same jobs on as many RQ ``SimpleWorker``s (no fork); the Celery leg is one prefork
worker with concurrency = the worker count, a chord of N no-op tasks (Redis broker and result
backend; skipped when Celery is not installed). Orchestrator: from the submit call to the swarm's
finished_at (set in the transaction that ends its last member). Plain RQ: from ``enqueue_many`` to
the last job's ended_at. Celery: from sending the chord to its callback's date_done. The brief's
size is ``--n 2000``; the default is smaller so that a run stays near a minute on two cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

TARGET = 0.8


def submit_swarm(n: int, max_concurrency: int) -> list[int]:
    from tasks_app.services import execution

    swarm = execution.submit(common.swarm_spec(n, max_concurrency=max_concurrency), owner=common.owner())
    return [swarm.pk]


def member_spread(swarm_id: int) -> tuple[float, float]:
    """(seconds from the first member's start to the last one's end, mean members running at once)."""
    from django.db.models import Max, Min

    from tasks_app.models import Run

    runs = Run.objects.filter(signature__parent_id=swarm_id)
    span = runs.aggregate(first=Min("started_at"), last=Max("finished_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    busy = sum((r.finished_at - r.started_at).total_seconds() for r in runs.only("started_at", "finished_at"))
    return seconds, busy / seconds if seconds else 0.0


def member_end_cost(n: int, max_concurrency: int, sample: int) -> tuple[float, float, float]:
    """Run the first ``sample`` members here (no worker): (ms per member end, p95, queries per member end).

    A member's end locks the swarm row and re-reads its members' statuses, so its cost grows with n
    and is serialised across workers.
    """
    from tasks_app.models import Run, RunStatus
    from tasks_app.services import containers, execution

    common.reset_orchestrator()
    submit_swarm(n, max_concurrency)
    targets = [("member end", containers, "member_finished")]
    with common.count_queries() as queries, common.probes(targets, queries) as calls:
        for run in Run.objects.filter(status=RunStatus.QUEUED).order_by("pk")[:sample]:
            execution.execute(run.signature_id, run.number)
    ms = [1000 * seconds for seconds, _ in calls["member end"]]
    return common.percentile(ms, 50), common.percentile(ms, 95), sum(q for _, q in calls["member end"]) / len(ms)


def baselines(bench: common.Bench, n: int, workers: int) -> list[tuple[str, float]]:
    """(label, seconds) of each baseline leg: plain RQ forking, plain RQ SimpleWorker, Celery prefork."""
    legs = [
        ("plain RQ (enqueue_many), forking", common.run_plain(bench, n, workers)),
        (
            "plain RQ (enqueue_many), SimpleWorker",
            common.run_plain(bench, n, workers, worker_class=common.SIMPLE_WORKER),
        ),
    ]
    if common.celery_installed():
        from bench import celery_app

        seconds = celery_app.run_chord(bench, n, celery_app.noop.s(), pool="prefork", concurrency=workers)
        legs.append((f"Celery chord, prefork --concurrency {workers}", seconds))
    return legs


def main() -> None:
    p = common.parser(__doc__, n=500)
    p.add_argument("--max-concurrency", type=int, default=50)
    args = p.parse_args()
    with common.session("swarm") as bench:
        legs = baselines(bench, args.n, args.workers)
        ids: list[int] = []

        def submit() -> list[int]:
            ids[:] = submit_swarm(args.n, args.max_concurrency)
            return ids

        orchestrated = common.run_orchestrator(bench, submit, args.workers)
        span, overlap = member_spread(ids[0])
        rows = [(label, args.n, seconds, args.n / seconds, "", "") for label, seconds in legs]
        label = f"orchestrator swarm, max_concurrency={args.max_concurrency}"
        rows.append((label, args.n, orchestrated, args.n / orchestrated, span, f"{overlap:.2f}"))
        common.table(
            ["leg", "jobs", "seconds", "jobs/s", "members' span s", "mean running"],
            rows,
            title=f"Swarm of {args.n} no-op members on {args.workers} workers",
        )
        for label, seconds in legs:
            ratio = seconds / orchestrated
            verdict = common.ratio_label(ratio, TARGET) if label == legs[0][0] else f"{ratio:.2f}"
            print(f"ratio orchestrator / {label} (its seconds over the orchestrator's): {verdict}")
        common.clear_queues(bench)
        sizes = sorted({min(200, args.n), args.n})
        costs = [(f"{size:,} members", *member_end_cost(size, args.max_concurrency, 100)) for size in sizes]
        common.clear_queues(bench)
        common.table(
            ["swarm", "p50 ms", "p95 ms", "queries"],
            costs,
            title="A member's end in the swarm (containers.member_finished, in-process, first 100 members)",
        )


if __name__ == "__main__":
    main()
