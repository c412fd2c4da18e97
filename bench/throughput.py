"""Throughput: N no-op tasks through the orchestrator versus N no-op jobs through plain RQ.

Both legs run on the same forking worker class (tasks_app.worker.OrchestratorWorker, started as
``manage.py worker``; plain RQ reads the ``default`` queue), the same number of workers, one leg
after the other on fresh workers that are registered before the clock starts. Time runs from the
first enqueue (orchestrator: the start of submission) to the last completion (orchestrator: the
last Signature.finished_at; plain RQ: the last job's ended_at).

Orchestrator legs: a closed swarm with max_concurrency=N (one submit), and N separate submits.
Where the time goes: the same legs on RQ's SimpleWorker (no fork per job), and an in-process run
of the engine's own steps (claim, task, complete) with the queries each one makes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

TARGET = 0.8


def submit_swarm(n: int) -> list[int]:
    from tasks_app.services import execution

    swarm = execution.submit(common.swarm_spec(n, max_concurrency=n), owner=common.owner())
    return [swarm.pk]


def submit_each(n: int) -> list[int]:
    from tasks_app.services import execution

    user = common.owner()
    return [execution.submit({"task": "examples.noop"}, owner=user).pk for _ in range(n)]


def legs(bench: common.Bench, n: int, workers: int, breakdown: bool) -> dict[str, float]:
    seconds = {
        "plain RQ (fork)": common.run_plain(bench, n, workers),
        "orchestrator, swarm (fork)": common.run_orchestrator(bench, lambda: submit_swarm(n), workers),
        "orchestrator, N submits (fork)": common.run_orchestrator(bench, lambda: submit_each(n), workers),
    }
    if breakdown:
        simple = common.SIMPLE_WORKER
        seconds["plain RQ (rq.Worker fork)"] = common.run_plain(bench, n, workers, worker_class=common.RQ_WORKER)
        seconds["plain RQ (SimpleWorker)"] = common.run_plain(bench, n, workers, worker_class=simple)
        seconds["orchestrator, N submits (SimpleWorker)"] = common.run_orchestrator(
            bench, lambda: submit_each(n), workers, worker_class=simple
        )
    return seconds


def print_legs(seconds: dict[str, float], n: int, workers: int) -> None:
    plain = n / seconds["plain RQ (fork)"]
    rows = [(name, n, s, n / s, 1000 * workers * s / n, f"{n / s / plain:.2f}") for name, s in seconds.items()]
    common.table(
        ["leg", "jobs", "seconds", "jobs/s", "ms/job/worker", "vs plain fork"],
        rows,
        title=f"Throughput, {n} no-op jobs on {workers} workers",
    )
    for name in ("orchestrator, swarm (fork)", "orchestrator, N submits (fork)"):
        print(f"ratio {name} / plain RQ: {common.ratio_label(n / seconds[name] / plain, TARGET)}")


def print_fork_split(seconds: dict[str, float], n: int, workers: int) -> None:
    if "plain RQ (SimpleWorker)" not in seconds:
        return

    def per_job(name: str) -> float:
        return 1000 * workers * seconds[name] / n

    plain_fork = per_job("plain RQ (fork)") - per_job("plain RQ (SimpleWorker)")
    beats = per_job("plain RQ (fork)") - per_job("plain RQ (rq.Worker fork)")
    orch_fork = per_job("orchestrator, N submits (fork)") - per_job("orchestrator, N submits (SimpleWorker)")
    engine = per_job("orchestrator, N submits (SimpleWorker)") - per_job("plain RQ (SimpleWorker)")
    rows = [
        ("fork + horse, plain job (OrchestratorWorker - SimpleWorker)", plain_fork),
        ("  of which OrchestratorWorker heartbeat rows (vs rq.Worker)", beats),
        ("fork + horse, orchestrator job", orch_fork),
        ("  beyond a plain job's (horse imports, connections)", orch_fork - plain_fork),
        ("engine work per task without fork (SimpleWorker legs)", engine),
    ]
    common.table(["where a job's worker time goes", "ms"], rows, title="Split (ms per job per worker)")


def in_process(n: int) -> None:
    """Submit n tasks and execute them here, one by one: time and queries of each engine step."""
    from tasks_app.services import events, execution, live, notifications

    common.reset_orchestrator()
    with common.count_queries() as submitted:
        started = time.perf_counter()
        ids = submit_each(n)
        submit_s = time.perf_counter() - started
    targets = [
        ("claim", execution, "claim"),
        ("complete", execution, "complete"),
        ("events.record", events, "record"),
        ("notifications.on_event", notifications, "on_event"),
        ("live._send (after commit)", live, "_send"),
    ]
    with common.count_queries() as executed, common.probes(targets, executed) as calls:
        started = time.perf_counter()
        for pk in ids:
            execution.execute(pk, 1)
        execute_s = time.perf_counter() - started
    rows = [
        ("submit (one task)", 1000 * submit_s / n, submitted[0] / n, 1),
        ("execute (claim + task + complete)", 1000 * execute_s / n, executed[0] / n, 1),
    ]
    rows += [
        (f"  {label}", 1000 * sum(s for s, _ in c) / n, sum(q for _, q in c) / n, len(c) / n)
        for label, c in calls.items()
    ]
    common.table(
        ["in-process step, per task", "ms", "queries", "calls"],
        rows,
        title=f"In-process cost (no Redis worker, no fork), {n} tasks",
    )


def main() -> None:
    p = common.parser(__doc__, n=200)
    p.add_argument("--no-breakdown", action="store_true", help="skip the SimpleWorker and in-process legs")
    args = p.parse_args()
    with common.session("throughput") as bench:
        seconds = legs(bench, args.n, args.workers, not args.no_breakdown)
        print_legs(seconds, args.n, args.workers)
        print_fork_split(seconds, args.n, args.workers)
        if not args.no_breakdown:
            in_process(min(args.n, 200))
            common.clear_queues(bench)


if __name__ == "__main__":
    main()
