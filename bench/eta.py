"""ETA accuracy: K runs of a four-step task with random step durations, one after the other.

``bench.four_steps`` (bench/tasks_bench.py) runs steps whose durations are drawn, seeded, from
lognormal distributions around per-step means. The runs go one at a time on one worker, so the
history of completed steps grows. After ``--warmup`` runs, the script polls
``progress.payload(sig)`` every 50 ms and takes the ETA when progress first reaches 25 %, 50 % and
75 %; the actual remaining time is the task's finished_at minus that moment. It prints the median
absolute percentage error (and the median signed error) at each mark.
"""

from __future__ import annotations

import importlib
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

MEANS = (1.0, 2.0, 0.6, 1.4)  # seconds per step; the API's ETA has whole-second resolution
MARKS = (25, 50, 75)
POLL = 0.05


def durations(rng: random.Random, sigma: float) -> list[float]:
    """Lognormal around each mean (the median is the mean; spread ``sigma`` in log space)."""
    return [round(mean * rng.lognormvariate(0, sigma), 3) for mean in MEANS]


def watch(sig_id: int, timeout: float = 120) -> dict[int, tuple[float, int | None, float | None]]:
    """Poll one run: at each mark, (wall time seen, eta_seconds, the estimate before rounding)."""
    from django.utils import timezone

    from tasks_app.models import TERMINAL, Signature
    from tasks_app.services import progress

    seen: dict[int, tuple[float, int | None, float | None]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sig = Signature.objects.get(pk=sig_id)
        if sig.status in TERMINAL:
            return seen
        data = progress.payload(sig)
        for mark in MARKS:
            if mark not in seen and data["progress"] >= mark:
                raw = progress._task_eta(sig, data["steps"], data["progress"])
                seen[mark] = (timezone.now().timestamp(), data["eta_seconds"], raw)
        time.sleep(POLL)
    raise RuntimeError(f"task #{sig_id} did not finish within {timeout:g} s")


def one_run(steps: list[float]) -> dict[int, tuple[float, int | None, float | None]]:
    """(actual remaining seconds, eta_seconds, unrounded estimate) at each mark of one run."""
    from tasks_app.models import Status
    from tasks_app.services import execution

    sig = execution.submit({"task": "bench.four_steps", "kwargs": {"durations": steps}}, owner=common.owner())
    seen = watch(sig.pk)
    sig.refresh_from_db()
    if sig.status != Status.COMPLETED:
        raise RuntimeError(f"task #{sig.pk} ended {sig.status}: {sig.error}")
    end = sig.finished_at.timestamp()
    return {mark: (end - at, eta, raw) for mark, (at, eta, raw) in seen.items()}


def errors(samples: list[tuple[float, float | None]]) -> tuple[int, float, float, float, float] | None:
    """(missing, median actual, median estimate, MdAPE %, median signed error %) of (actual, estimate) pairs."""
    pairs = [(actual, eta) for actual, eta in samples if eta is not None and actual > 0]
    if not pairs:
        return None
    signed = [100 * (eta - actual) / actual for actual, eta in pairs]
    return (
        len(samples) - len(pairs),
        statistics.median(a for a, _ in pairs),
        statistics.median(e for _, e in pairs),
        statistics.median(abs(e) for e in signed),
        statistics.median(signed),
    )


def summarise(samples: dict[int, list[tuple[float, int | None, float | None]]]) -> list[tuple]:
    rows = []
    for mark in MARKS:
        for label, index in (("eta_seconds (API)", 1), ("unrounded estimate", 2)):
            figures = errors([(s[0], s[index]) for s in samples[mark]])
            rows.append((f"{mark} %", label, len(samples[mark]), *(figures or ("all", "", "", "", ""))))
    return rows


def main() -> None:
    p = common.parser(__doc__, n=12, workers=None)
    p.add_argument("--warmup", type=int, default=3, help="first runs only build history (default 3)")
    p.add_argument("--sigma", type=float, default=0.35, help="lognormal spread of step durations (default 0.35)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    rng = random.Random(args.seed)
    samples: dict[int, list[tuple[float, int | None, float | None]]] = {mark: [] for mark in MARKS}
    with common.session("eta") as bench:
        importlib.import_module("bench.tasks_bench")  # registers the task here too, for submit's validation
        bench.start_workers(1, imports=["bench.tasks_bench"])
        for i in range(args.n):
            seen = one_run(durations(rng, args.sigma))
            if i >= args.warmup:
                for mark, sample in seen.items():
                    samples[mark].append(sample)
        common.table(
            ["mark", "estimate", "samples", "no ETA", "actual remaining s", "estimate s", "MdAPE %", "median signed %"],
            summarise(samples),
            title=f"ETA of bench.four_steps, {args.n - args.warmup} measured runs after {args.warmup} "
            f"warm-up runs (step means {MEANS} s, lognormal sigma {args.sigma})",
        )
        print(
            "actual remaining and estimate are medians; eta_seconds is whole seconds, the unrounded estimate "
            "is progress._task_eta at the same poll."
        )


if __name__ == "__main__":
    main()
