"""Lifecycle figures: interrupt → work horse dead, worker death → its task running again, and a
task logging many lines (time, lines stored).

Interrupt: a task blocked in `time.sleep(3600)` is interrupted; the time is measured until the
horse process is gone. Worker death: a worker running a checkpointing task is SIGKILLed with its
horse, a new worker starts (its reconcile pass runs at start); the time is measured from the kill
to the task's new run being claimed. Logs: `examples.log(lines=N)` on one worker.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def horse_pids(worker) -> set[int]:
    try:
        return {child.pid for child in psutil.Process(worker.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def interrupt_once(bench) -> float:
    from tasks_app.models import Signature, Status
    from tasks_app.services import execution, lifecycle

    (worker,) = bench.start_workers(1)
    sig = execution.submit({"task": "examples.sleep", "kwargs": {"seconds": 3600, "step": 3600}}, owner=common.owner())
    bench.wait_for(lambda: Signature.objects.get(pk=sig.pk).status == Status.RUNNING, timeout=30, what="running")
    horses = bench.wait_for(lambda: horse_pids(worker), timeout=10, what="the horse")
    started = time.monotonic()
    lifecycle.interrupt(Signature.objects.get(pk=sig.pk), actor="bench")
    bench.wait_for(lambda: not (horses & horse_pids(worker)), timeout=30, interval=0.005, what="the horse to die")
    elapsed = time.monotonic() - started
    bench.stop_workers()
    return elapsed


def worker_death_once(bench) -> float:
    from tasks_app.models import Run, RunStatus, Signature
    from tasks_app.services import execution

    (victim,) = bench.start_workers(1)
    sig = execution.submit({"task": "examples.sleep", "kwargs": {"seconds": 30, "step": 0.2}}, owner=common.owner())
    bench.wait_for(lambda: Run.objects.filter(signature=sig, status=RunStatus.RUNNING).exists(), timeout=30,
                   what="running")
    time.sleep(0.5)
    killed = time.monotonic()
    common.kill_tree(victim)
    bench.processes.remove(victim)
    os.environ["ORCHESTRATOR_AUTO_RESUME"] = "1"  # the replacement's reconcile pass at start
    bench.spawn(["worker", "--name", f"bench-replacement-{sig.pk}"])
    bench.wait_for(lambda: Run.objects.filter(signature=sig, number__gt=1, status=RunStatus.RUNNING).exists(),
                   timeout=60, interval=0.01, what="the task to run again")
    elapsed = time.monotonic() - killed
    Signature.objects.filter(pk=sig.pk).update(status="interrupted")
    bench.stop_workers()
    return elapsed


def logs_once(bench, lines: int) -> tuple[float, int]:
    from tasks_app.models import Signature, Status
    from tasks_app.services import execution

    bench.start_workers(1)
    started = time.monotonic()
    sig = execution.submit({"task": "examples.log", "kwargs": {"lines": lines}}, owner=common.owner())
    bench.wait_for(lambda: Signature.objects.get(pk=sig.pk).status == Status.COMPLETED, timeout=600,
                   interval=0.1, what="the logging task")
    elapsed = time.monotonic() - started
    bench.stop_workers()
    return elapsed, sig.logs.count()


def main() -> None:
    args = common.parser(__doc__, n=3, workers=None).parse_args()
    with common.session("lifecycle") as bench:
        interrupts = [interrupt_once(bench) for _ in range(args.n)]
        deaths = [worker_death_once(bench) for _ in range(args.n)]
        seconds, stored = logs_once(bench, 100_000)
    common.table(
        ["measure", "runs", "median s", "max s"],
        [("interrupt → horse dead", len(interrupts), statistics.median(interrupts), max(interrupts)),
         ("worker killed → task running again", len(deaths), statistics.median(deaths), max(deaths))],
        title="Lifecycle",
    )
    common.table(["task", "lines stored", "seconds", "lines/s"],
                 [("examples.log(lines=100000)", stored, seconds, round(stored / seconds))], title="Logs")


if __name__ == "__main__":
    main()
