"""Bulk add: N members added to an open, unstarted swarm in one call versus one call per member.

``swarms.add_tasks(swarm, specs, run=False)`` on a swarm submitted with ``closed: false`` and
``run=False``; no workers are involved. The one-by-one leg makes ``--one-by-one`` calls (default
1,000) and extrapolates to N, clearly labelled; pass ``--one-by-one N`` to measure all of them.
Targets: bulk ≤ 1 s for 10,000, and ≥ 20× faster than one by one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

TARGET_SECONDS = 1.0
TARGET_SPEEDUP = 20.0


def open_swarm():
    from tasks_app.services import execution

    spec = {"kind": "swarm", "name": "bench bulk add", "closed": False, "max_concurrency": 50, "tasks": []}
    return execution.submit(spec, owner=common.owner(), run=False)


def specs(n: int) -> list[dict]:
    return [{"task": "examples.echo", "kwargs": {"value": i}} for i in range(n)]


def bulk(n: int) -> tuple[float, int]:
    from tasks_app.services import swarms

    swarm, items = open_swarm(), specs(n)
    with common.count_queries() as queries:
        started = time.perf_counter()
        swarms.add_tasks(swarm, items, run=False)
        seconds = time.perf_counter() - started
    return seconds, queries[0]


def one_by_one(n: int) -> tuple[float, int]:
    from tasks_app.services import swarms

    swarm, items = open_swarm(), specs(n)
    with common.count_queries() as queries:
        started = time.perf_counter()
        for item in items:
            swarms.add_tasks(swarm, [item], run=False)
        seconds = time.perf_counter() - started
    return seconds, queries[0]


def check(n_expected: int) -> None:
    from tasks_app.models import Kind, Signature

    for swarm in Signature.objects.filter(kind=Kind.SWARM):
        if swarm.members.count() not in n_expected:
            raise RuntimeError(f"swarm #{swarm.pk} has {swarm.members.count()} members")


def main() -> None:
    p = common.parser(__doc__, n=10_000, workers=None)
    p.add_argument("--one-by-one", type=int, default=1_000, help="calls measured one by one (default 1,000)")
    args = p.parse_args()
    with common.session("bulk_add"):
        bulk_s, bulk_q = bulk(args.n)
        single_n = min(args.one_by_one, args.n)
        single_s, single_q = one_by_one(single_n)
        check({args.n, single_n})
        extrapolated = single_s * args.n / single_n
        label = "one by one" if single_n == args.n else f"one by one ({single_n:,} measured, × {args.n / single_n:g})"
        rows = [
            (f"bulk, one call of {args.n:,}", bulk_s, bulk_q, 1000 * bulk_s / args.n),
            (label, extrapolated, round(single_q * args.n / single_n), 1000 * single_s / single_n),
        ]
        common.table(["leg", "seconds", "queries", "ms/member"], rows, title=f"Adding {args.n:,} swarm members")
        print(f"bulk seconds: {common.ratio_label(bulk_s, TARGET_SECONDS, at_least=False)}")
        print(f"speed-up: {common.ratio_label(extrapolated / bulk_s, TARGET_SPEEDUP)}")


if __name__ == "__main__":
    main()
