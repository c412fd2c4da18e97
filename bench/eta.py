"""ETA accuracy against the floor: our ``eta_seconds`` next to the best estimate the data allows.

Three workloads run for real (one worker per slot, the runs one after the other, so the history of
completed steps grows): ``fixed``, ``bench.four_steps`` with independent lognormal step durations;
``slowing``, ``bench.slowing_steps``, eight steps that each take ``growth`` times the one before,
``growth`` drawn per run (so history tells the average run, and only the run itself tells how fast
this one slows down); ``swarm``, a swarm of ``examples.sleep`` members of lognormal length on
``--slots`` slots. After ``--warmup`` runs the script polls ``progress.payload`` every 50 ms and
takes ``eta_seconds`` when the percent first reaches 25, 50 and 75; the actual remaining time is
the end minus that moment. The error is the median absolute percentage error (MdAPE).

The floor is the MdAPE of an oracle that knows the true distributions (not a history of samples)
and sees what our estimator sees at the mark (the steps done and their durations, the running
steps' elapsed time and progress): by simulation of the same workload, it draws the remaining
time many times given that state and answers the value that minimises the expected absolute
percentage error (the median of the draws weighted by 1/remaining). Target: ours ≤ 1.2 × floor.
"""

from __future__ import annotations

import heapq
import importlib
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

MARKS = (25, 50, 75)
POLL = 0.05
SLICES = 10  # progress reports per step or member (bench/tasks_bench.py, examples.sleep's step)
FIXED_MEANS = (1.0, 2.0, 0.6, 1.4)  # seconds per step (the lognormal's median)
FIXED_SIGMA = 0.35
SLOW_STEPS, SLOW_BASE, SLOW_GROWTH, SLOW_SIGMA = 8, 0.25, (1.0, 1.3), 0.1
SWARM_MEMBERS, SWARM_MEDIAN, SWARM_SIGMA = 10, 1.5, 0.35
ORACLE_DRAWS = 400


# The workloads: their true distributions ---------------------------------------------------------


@dataclass
class Workload:
    name: str
    slots: int = 1

    def draw(self, rng: random.Random) -> dict:
        """One run's hidden truth: its durations (and whatever else the model draws)."""
        raise NotImplementedError

    def remaining_draws(self, rng: random.Random, state: dict, n: int) -> list[float]:
        """n draws of the remaining time given what is seen at a mark."""
        raise NotImplementedError


def truncated_lognormal(rng: random.Random, median: float, sigma: float, low: float, high: float) -> float:
    """A lognormal draw restricted to [low, high] (inverse CDF)."""
    normal = statistics.NormalDist(math.log(median), sigma)
    lo = normal.cdf(math.log(low)) if low > 0 else 0.0
    hi = normal.cdf(math.log(high)) if math.isfinite(high) else 1.0
    if hi - lo < 1e-9:
        return min(max(median, low), high)
    return math.exp(normal.inv_cdf(min(1 - 1e-12, max(1e-12, lo + rng.random() * (hi - lo)))))


def current_step_left(rng: random.Random, median: float, sigma: float, elapsed: float, slices: int) -> float:
    """What is left of a running step whose ``slices`` tenths are done after ``elapsed`` seconds."""
    low = elapsed * SLICES / (slices + 1)
    high = elapsed * SLICES / slices if slices else math.inf
    return max(0.0, truncated_lognormal(rng, median, sigma, max(low, elapsed), high) - elapsed)


class Fixed(Workload):
    def draw(self, rng: random.Random) -> dict:
        return {"steps": [m * rng.lognormvariate(0, FIXED_SIGMA) for m in FIXED_MEANS]}

    def remaining_draws(self, rng: random.Random, state: dict, n: int) -> list[float]:
        k, elapsed, slices = state["current"], state["elapsed"], state["slices"]
        return [current_step_left(rng, FIXED_MEANS[k], FIXED_SIGMA, elapsed, slices)
                + sum(m * rng.lognormvariate(0, FIXED_SIGMA) for m in FIXED_MEANS[k + 1:]) for _ in range(n)]


class Slowing(Workload):
    GRID = [SLOW_GROWTH[0] + i * (SLOW_GROWTH[1] - SLOW_GROWTH[0]) / 60 for i in range(61)]

    def draw(self, rng: random.Random) -> dict:
        growth = rng.uniform(*SLOW_GROWTH)
        return {"steps": [SLOW_BASE * growth**k * rng.lognormvariate(0, SLOW_SIGMA) for k in range(SLOW_STEPS)]}

    def posterior(self, done: list[float]) -> list[float]:
        """Weights of the growth grid given the durations of the steps done (uniform prior)."""
        logs = [sum(-((math.log(d) - math.log(SLOW_BASE * g**k)) ** 2) / (2 * SLOW_SIGMA**2)
                    for k, d in enumerate(done)) for g in self.GRID]
        top = max(logs)
        return [math.exp(v - top) for v in logs]

    def remaining_draws(self, rng: random.Random, state: dict, n: int) -> list[float]:
        k, elapsed, slices = state["current"], state["elapsed"], state["slices"]
        weights = self.posterior(state["done"])
        draws = []
        for growth in rng.choices(self.GRID, weights, k=n):
            left = current_step_left(rng, SLOW_BASE * growth**k, SLOW_SIGMA, elapsed, slices) if k < SLOW_STEPS else 0
            draws.append(left + sum(SLOW_BASE * growth**j * rng.lognormvariate(0, SLOW_SIGMA)
                                    for j in range(k + 1, SLOW_STEPS)))
        return draws


class Swarm(Workload):
    def draw(self, rng: random.Random) -> dict:
        return {"members": [SWARM_MEDIAN * rng.lognormvariate(0, SWARM_SIGMA) for _ in range(SWARM_MEMBERS)]}

    def remaining_draws(self, rng: random.Random, state: dict, n: int) -> list[float]:
        draws = []
        for _ in range(n):
            running = [current_step_left(rng, SWARM_MEDIAN, SWARM_SIGMA, e, s) for e, s in state["running"]]
            waiting = [SWARM_MEDIAN * rng.lognormvariate(0, SWARM_SIGMA) for _ in range(state["waiting"])]
            draws.append(makespan(running, waiting, self.slots))
        return draws


def makespan(running: list[float], waiting: list[float], slots: int) -> float:
    free = sorted(running) + [0.0] * max(0, slots - len(running))
    heapq.heapify(free)
    for seconds in waiting:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free) if free else 0.0


# The oracle, by simulation ----------------------------------------------------------------------


def best_estimate(draws: list[float]) -> float:
    """The value minimising the mean of |estimate − R| / R over the draws: their 1/R-weighted median."""
    pairs = sorted((r, 1 / r) for r in draws if r > 0)
    if not pairs:
        return 0.0
    half, acc = sum(w for _, w in pairs) / 2, 0.0
    for r, w in pairs:
        acc += w
        if acc >= half:
            return r
    return pairs[-1][0]


def timeline(workload: Workload, truth: dict) -> list[tuple[float, float, dict]]:
    """(time, percent, state) at each progress report of a simulated run, as the estimator sees it."""
    if isinstance(workload, Swarm):
        return swarm_timeline(workload, truth["members"])
    steps, events, start = truth["steps"], [], 0.0
    for k, d in enumerate(steps):
        for j in range(1, SLICES + 1):
            percent = 100 * (k + j / SLICES) / len(steps)
            state = {"current": k + 1, "elapsed": 0.0, "slices": 0, "done": steps[:k + 1]} if j == SLICES else \
                {"current": k, "elapsed": d * j / SLICES, "slices": j, "done": steps[:k]}
            events.append((start + d * j / SLICES, percent, state))
        start += d
    return events


def swarm_timeline(workload: Swarm, members: list[float]) -> list[tuple[float, float, dict]]:
    free = [0.0] * workload.slots
    starts = []
    for d in members:
        s = heapq.heappop(free)
        starts.append(s)
        heapq.heappush(free, s + d)
    spans = list(zip(starts, members, strict=True))
    reports = sorted(s + d * j / SLICES for s, d in spans for j in range(1, SLICES + 1))
    events = []
    for n, t in enumerate(reports, start=1):
        running = [(t - s, int((t - s) / d * SLICES + 1e-9)) for s, d in spans if s <= t < s + d - 1e-9]
        waiting = sum(1 for s in starts if s > t + 1e-9)
        events.append((t, 100 * n / (len(members) * SLICES), {"running": running, "waiting": waiting}))
    return events


def floor(workload: Workload, runs: int, seed: int) -> dict[int, float]:
    """The oracle's MdAPE at each mark over ``runs`` simulated runs."""
    rng = random.Random(seed)
    errors: dict[int, list[float]] = {mark: [] for mark in MARKS}
    for _ in range(runs):
        events = timeline(workload, workload.draw(rng))
        end = events[-1][0]
        for mark in MARKS:
            at, _, state = next(e for e in events if e[1] >= mark - 1e-9)
            actual = end - at
            if actual > 0:
                estimate = best_estimate(workload.remaining_draws(rng, state, ORACLE_DRAWS))
                errors[mark].append(abs(estimate - actual) / actual)
    return {mark: 100 * statistics.median(values) for mark, values in errors.items()}


# Real runs --------------------------------------------------------------------------------------


def submit(workload: Workload, truth: dict):
    from tasks_app.services import execution

    if isinstance(workload, Swarm):
        tasks = [{"task": "examples.sleep", "kwargs": {"seconds": round(d, 3), "step": round(d / SLICES, 4)}}
                 for d in truth["members"]]
        spec = {"kind": "swarm", "max_concurrency": workload.slots, "tasks": tasks}
    else:
        task = "bench.four_steps" if isinstance(workload, Fixed) else "bench.slowing_steps"
        spec = {"task": task, "kwargs": {"durations": [round(d, 3) for d in truth["steps"]]}}
    return execution.submit(spec, owner=common.owner())


def watch(sig_id: int, timeout: float = 180) -> tuple[dict[int, tuple[float, float | None]], float]:
    """Poll one run: at each mark, (time seen, eta_seconds); and the time it ended."""
    from tasks_app.models import TERMINAL, Signature, Status
    from tasks_app.services import progress

    seen: dict[int, tuple[float, float | None]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sig = Signature.objects.get(pk=sig_id)
        if sig.status in TERMINAL:
            if sig.status != Status.COMPLETED:
                raise RuntimeError(f"task #{sig.pk} ended {sig.status}: {sig.error}")
            return seen, sig.finished_at.timestamp()
        data = progress.payload(sig)
        for mark in MARKS:
            if mark not in seen and data["progress"] >= mark:
                seen[mark] = (time.time(), data["eta_seconds"])
        time.sleep(POLL)
    raise RuntimeError(f"task #{sig_id} did not finish within {timeout:g} s")


def measure(workload: Workload, n: int, warmup: int, rng: random.Random) -> dict[int, list[tuple[float, float | None]]]:
    samples: dict[int, list[tuple[float, float | None]]] = {mark: [] for mark in MARKS}
    for i in range(n + warmup):
        seen, end = watch(submit(workload, workload.draw(rng)).pk)
        if i >= warmup:
            for mark, (at, eta) in seen.items():
                samples[mark].append((end - at, eta))
    return samples


def mdape(samples: list[tuple[float, float | None]]) -> tuple[float | None, float | None, int]:
    """(MdAPE %, median signed error %, samples without an ETA)."""
    errors = [(eta - actual) / actual for actual, eta in samples if eta is not None and actual > 0]
    if not errors:
        return None, None, len(samples)
    return 100 * statistics.median(abs(e) for e in errors), 100 * statistics.median(errors), len(samples) - len(errors)


def main() -> None:
    p = common.parser(__doc__, n=12, workers=None)
    p.add_argument("--warmup", type=int, default=4, help="first runs only build history (default 4)")
    p.add_argument("--slots", type=int, default=3, help="the swarm's max_concurrency and worker count (default 3)")
    p.add_argument("--floor-runs", type=int, default=400, help="simulated runs for the floor (default 400)")
    p.add_argument("--only", choices=["fixed", "slowing", "swarm"], action="append")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    workloads = [w for w in (Fixed("fixed"), Slowing("slowing"), Swarm("swarm", slots=args.slots))
                 if not args.only or w.name in args.only]
    rows = []
    with common.session("eta") as bench:
        importlib.import_module("bench.tasks_bench")  # registers the tasks here too, for submit's validation
        bench.start_workers(args.slots, imports=["bench.tasks_bench"])
        for workload in workloads:
            samples = measure(workload, args.n, args.warmup, random.Random(args.seed))
            best = floor(workload, args.floor_runs, args.seed + 1)
            for mark in MARKS:
                ours, signed, missing = mdape(samples[mark])
                ratio = f"{ours / best[mark]:.2f}" if ours is not None and best[mark] > 0 else "-"
                rows.append((workload.name, f"{mark} %", len(samples[mark]), missing,
                             "-" if ours is None else f"{ours:.1f}", "-" if signed is None else f"{signed:+.1f}",
                             f"{best[mark]:.1f}", ratio))
        common.table(["workload", "mark", "runs", "no ETA", "our MdAPE %", "our median signed %", "floor MdAPE %",
                      "ours / floor"], rows,
                     title=f"ETA error against the floor: {args.n} measured runs after {args.warmup} warm-up runs "
                     f"each; floor from {args.floor_runs} simulated runs")


if __name__ == "__main__":
    main()
