"""Graph: a layered graph of no-op tasks versus a chain and a swarm of as many no-op tasks.

The graph has ``--layers`` layers of ``--width`` nodes (default 20 × 10 = 200 nodes); every node
depends on ``--fan`` nodes of the layer before it (default: all of them, so each layer is a join
of the previous one). The chain has the same number of steps, the swarm the same number of
members with max_concurrency equal to its size. Each leg runs on fresh workers (default 2);
the time runs from the submit call to the container's finished_at.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def graph_spec(layers: int, width: int, fan: int) -> dict:
    nodes = {f"n{layer}_{i}": {"task": "examples.noop"} for layer in range(layers) for i in range(width)}
    edges = [
        {"from": f"n{layer - 1}_{(i + k) % width}", "to": f"n{layer}_{i}"}
        for layer in range(1, layers)
        for i in range(width)
        for k in range(min(fan, width))
    ]
    return {"kind": "graph", "name": f"bench graph {layers}x{width}", "nodes": nodes, "edges": edges}


def submitter(spec: dict):
    def submit() -> list[int]:
        from tasks_app.services import execution

        return [execution.submit(spec, owner=common.owner()).pk]

    return submit


def advance_in_process(spec: dict) -> tuple[float, float, int]:
    """Run the workflow here, job by job (no worker): (ms per container advance, p95, queries per advance)."""
    from tasks_app.models import Run, RunStatus
    from tasks_app.services import containers, execution

    common.reset_orchestrator()
    execution.submit(spec, owner=common.owner())
    with common.count_queries() as queries, common.probes([("advance", containers, "advance")], queries) as calls:
        while run := Run.objects.filter(status=RunStatus.QUEUED).order_by("queued_at", "pk").first():
            execution.execute(run.signature_id, run.number)
    ms = [1000 * seconds for seconds, _ in calls["advance"]]
    return statistics.median(ms), common.percentile(ms, 95), round(sum(q for _, q in calls["advance"]) / len(ms))


def main() -> None:
    p = common.parser(__doc__, n=200)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--fan", type=int, default=10, help="inputs per node from the layer before (default 10 = all)")
    args = p.parse_args()
    width = max(1, args.n // args.layers)
    n = width * args.layers
    specs = {
        f"graph {args.layers}×{width}, fan-in {min(args.fan, width)}": graph_spec(args.layers, width, args.fan),
        f"chain of {n}": common.chain_spec(n),
        f"swarm of {n}, max_concurrency {n}": common.swarm_spec(n, max_concurrency=n),
    }
    rows = []
    with common.session("graph") as bench:
        for label, spec in specs.items():
            seconds = common.run_orchestrator(bench, submitter(spec), args.workers)
            rows.append((label, n, seconds, n / seconds))
        base = rows[1][2]
        common.table(
            ["workflow", "tasks", "seconds", "tasks/s"],
            rows,
            title=f"{n} no-op tasks as a graph, a chain and a swarm on {args.workers} workers",
        )
        for label, _, seconds, _ in rows:
            print(f"{label}: {seconds / base:.2f}× the chain's time")
        common.clear_queues(bench)
        costs = [(label, *advance_in_process(spec)) for label, spec in specs.items()]
        common.clear_queues(bench)
        common.table(
            ["workflow", "advance p50 ms", "advance p95 ms", "queries/advance"],
            costs,
            title="Container advance after each member end, run in-process (under the container's row lock)",
        )


if __name__ == "__main__":
    main()
