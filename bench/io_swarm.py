"""I/O-bound swarm: N members that each await a sleep, against a Celery chord of the same sleeps.

Orchestrator: one closed swarm of N ``examples.async_sleep(seconds)`` members at
``max_concurrency``, on the workers ``make run`` starts (``manage.py orchestrate --no-web`` with
its defaults: its worker processes, their slots per process from ``ORCHESTRATOR_CONCURRENCY``, the
scheduler and the periodic jobs), from the submit call to the swarm's finished_at. Celery 5: one
worker process with its thread pool (``--pool threads --concurrency`` = max_concurrency), Redis
broker and result backend on the same Redis, a chord of N ``time.sleep(seconds)`` tasks, from
sending the chord to its callback's date_done (skipped when Celery is not installed).

For each leg: the wall time, the ideal time (N × seconds / max_concurrency), the ratio of the
orchestrator's wall time to Celery's (above 1: the orchestrator is slower), and the peak of the workers'
resident memory, summed over the worker processes and their children and sampled every 0.2 s
during the run. By default two cases run: 1,000 × 1 s at 200 and 10,000 × 0.1 s at 500; ``--n``,
``--seconds`` and ``--max-concurrency`` choose a single case instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

CASES = ((1000, 1.0, 200), (10_000, 0.1, 500))


@dataclass
class Leg:
    label: str
    seconds: float
    peak_rss: int
    cpu: float  # seconds of CPU the workers used (user + system, their children too)


class PeakRss:
    """Samples the resident memory of some process trees in a thread and keeps the peak, and the
    CPU time the processes used meanwhile."""

    def __init__(self, roots: Callable[[], list], interval: float = 0.2):
        self.roots = roots
        self.interval = interval
        self.peak = 0
        self.cpu_by_pid: dict[int, tuple[float, float]] = {}  # first and last sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        tree_rss(self.roots(), self.cpu_by_pid)

    @property
    def cpu(self) -> float:
        """CPU seconds used meanwhile: from each process's first sample (or its start) to its last."""
        return sum(last - first for first, last in self.cpu_by_pid.values())

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.roots(), self.cpu_by_pid))
            if self._stop.wait(self.interval):
                return


def tree_rss(roots: list, cpu_by_pid: dict[int, tuple[float, float]]) -> int:
    """Bytes resident in the processes and all their descendants (processes that end meanwhile
    count 0); notes each one's CPU seconds in ``cpu_by_pid`` (from 0 for a process started since)."""
    import psutil

    total = 0
    for root in roots:
        with contextlib.suppress(psutil.Error):
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    with process.oneshot():
                        total += process.memory_info().rss
                        times = process.cpu_times()
                        used = times.user + times.system
                        first = cpu_by_pid[process.pid][0] if process.pid in cpu_by_pid else (
                            used if process in roots else 0.0)
                        cpu_by_pid[process.pid] = (first, used)
    return total


def leg_timeout(n: int, seconds: float, max_concurrency: int) -> float:
    """Seconds a leg may take: each member also costs CPU (about 50 ms on two loaded cores), not only its sleep."""
    return max(600.0, 20 * n * seconds / max_concurrency, 0.25 * n)


# Orchestrator ---------------------------------------------------------------------------------


def worker_processes(orchestrate) -> list:
    """The ``manage.py worker`` children of the ``orchestrate`` process (not its periodic-jobs process)."""
    import psutil

    try:
        children = psutil.Process(orchestrate.pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            if "worker" in child.cmdline():
                found.append(child)
    return found


def start_orchestrate(bench: common.Bench) -> list:
    """``manage.py orchestrate --no-web`` with its defaults; returns its worker processes once all are registered."""
    orchestrate = bench.spawn(["orchestrate", "--no-web"])

    def ready() -> list:
        workers = worker_processes(orchestrate)
        return workers if workers and len(bench.registered_workers()) >= len(workers) else []

    return bench.wait_for(ready, timeout=120, what="orchestrate's workers to register")


def orchestrator_leg(bench: common.Bench, n: int, seconds: float, max_concurrency: int) -> Leg:
    from django.conf import settings

    from tasks_app.services import execution

    common.clear_queues(bench)
    common.reset_orchestrator()
    workers = start_orchestrate(bench)
    spec = common.swarm_spec(n, max_concurrency=max_concurrency, task="examples.async_sleep")
    for member in spec["tasks"]:
        member["kwargs"] = {"seconds": seconds}
    with PeakRss(lambda: workers) as memory:
        started = common.utcnow()
        swarm = execution.submit(spec, owner=common.owner())
        last = common.wait_finished(bench, [swarm.pk], timeout=leg_timeout(n, seconds, max_concurrency))
    bench.stop_workers()
    common.check_completed([swarm.pk])
    slots = f"{len(workers)} workers × {settings.ORCHESTRATOR.get('CONCURRENCY', 1)} slots"
    return Leg(f"orchestrator swarm, orchestrate --no-web ({slots})", (last - started).total_seconds(), memory.peak,
               memory.cpu)


# Celery ---------------------------------------------------------------------------------------


def celery_leg(bench: common.Bench, n: int, seconds: float, max_concurrency: int) -> Leg:
    import psutil

    from bench import celery_app

    def roots() -> list:
        return [psutil.Process(p.pid) for p in bench.processes if p.poll() is None]

    with PeakRss(roots) as memory:
        wall = celery_app.run_chord(
            bench,
            n,
            celery_app.sleep.s(seconds),
            pool="threads",
            concurrency=max_concurrency,
            timeout=leg_timeout(n, seconds, max_concurrency),
        )
    return Leg(f"Celery chord, --pool threads --concurrency {max_concurrency}", wall, memory.peak, memory.cpu)


# Report ---------------------------------------------------------------------------------------


def run_case(bench: common.Bench, n: int, seconds: float, max_concurrency: int, celery: bool) -> None:
    ideal, load = n * seconds / max_concurrency, os.getloadavg()[0]
    legs = [orchestrator_leg(bench, n, seconds, max_concurrency)]
    if celery:
        legs.append(celery_leg(bench, n, seconds, max_concurrency))
    rows = [(leg.label, leg.seconds, ideal, leg.seconds / ideal, f"{leg.peak_rss / 2**20:,.0f}",
             f"{1000 * leg.cpu / n:.1f}") for leg in legs]
    common.table(
        ["leg", "wall s", "ideal s", "wall / ideal", "workers' peak RSS MiB", "workers' CPU ms / member"],
        rows,
        title=f"Swarm of {n:,} sleeps of {seconds:g} s at max_concurrency={max_concurrency} "
        f"(load average {load:.2f} at its start)",
    )
    if celery:
        ratio = legs[0].seconds / legs[1].seconds
        print(f"ratio orchestrator / Celery (wall time; above 1: the orchestrator is slower): {ratio:.2f}")


def cases(args: argparse.Namespace) -> list[tuple[int, float, int]]:
    if args.n is None and args.seconds is None and args.max_concurrency is None:
        return list(CASES)
    n, seconds, max_concurrency = CASES[0]
    return [(args.n or n, args.seconds or seconds, args.max_concurrency or max_concurrency)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="members (default: both cases, 1,000 and 10,000)")
    p.add_argument("--seconds", type=float, default=None, help="each member's sleep (default 1 and 0.1)")
    p.add_argument("--max-concurrency", type=int, default=None, help="members at once (default 200 and 500)")
    args = p.parse_args()
    with common.session("io_swarm") as bench:
        celery = common.celery_installed()
        for n, seconds, max_concurrency in cases(args):
            run_case(bench, n, seconds, max_concurrency, celery)


if __name__ == "__main__":
    main()
