"""The invariants checked at the end of a chaos or outage run, read from the database and from the
executions the task recorded itself (bench/chaos_tasks.py).

"Exactly once", precisely:
- every task signature has exactly one `completed` Run; its other Runs (if any) are `lost`: runs
  of a killed worker, each followed by a new Run of the same attempt that continued from the
  checkpoint (no Run is `failed`, no attempt number above 1: a kill is never a retry);
- the task's own records agree: one `end` line for the completed Run, never two executions of one
  Run (a duplicate job is refused at claim), and executions of any other Run only for Runs that
  ended `lost`;
- every signature records the `completed` event once: no completion counted twice;
- every callback exists once per trigger (one `task_on_success` per member and template, one
  `on_success` per container and template), was queued once, and completed once;
- every graph ran its taken nodes once, its join only after both inputs ended, and left its failure
  path `skipped` without a run;
- every gate (an approval nobody decides) was decided once, by its timeout, with its default, and
  returned it; its first run ended `waiting_approval`, the run after the decision `completed`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

GATE = "chaos.gate"
FAILURE_PATH = "on_failure"  # the graph node behind a failure edge: a chaos task never fails
# How a run may end: completed, lost (its worker killed), or waiting for an approval (a gate's first run).
ENDED = ("completed", "lost", "waiting_approval")


@dataclass
class Row:
    check: str
    expected: object
    actual: object

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


def read_records(path: Path) -> list[tuple[str, int, int, int, float]]:
    """(kind, signature id, run number, attempt, time) of every recorded start and end."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            kind, sig, run, attempt, _pid, at = line.split()
            rows.append((kind, int(sig), int(run), int(attempt), float(at)))
    return rows


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t comes before a start at t)."""
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    current = peak = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak


def check(record_file: Path) -> tuple[list[Row], dict]:
    from tasks_app.models import Event, LogEntry, Run, RunStatus, Signature, Status

    sigs = {
        s["pk"]: s
        for s in Signature.objects.values(
            "pk",
            "kind",
            "status",
            "parent_id",
            "callback_of_id",
            "callback_on",
            "trigger_id",
            "config",
            "started_at",
            "finished_at",
            "task_name",
            "node_key",
            "result",
            "kwargs",
        )
    }
    runs = list(Run.objects.values("pk", "signature_id", "number", "attempt", "status", "started_at", "finished_at"))
    events = Counter(Event.objects.values_list("signature_ref", "type"))
    logged_runs = set(LogEntry.objects.filter(message__startswith="chaos work").values_list("run_id", flat=True))
    records = read_records(record_file)
    skipped = {pk for pk, s in sigs.items() if s["status"] == Status.SKIPPED and s["node_key"] == FAILURE_PATH}
    tasks = [s for s in sigs.values() if s["kind"] == "task" and s["pk"] not in skipped]
    rows: list[Row] = []
    stats: dict = {}

    by_status = Counter(s["status"] for s in sigs.values())
    stats["signatures"] = len(sigs)
    stats["tasks"] = len(tasks)
    stats["members"] = sum(1 for s in tasks if s["callback_of_id"] is None)
    stats["callbacks"] = sum(1 for s in sigs.values() if s["callback_of_id"] is not None)
    rows.append(
        Row(
            "signatures not completed (graph failure paths apart)",
            0,
            len(sigs) - len(skipped) - by_status[Status.COMPLETED],
        )
    )

    runs_of = defaultdict(list)
    for run in runs:
        runs_of[run["signature_id"]].append(run)
    completed_runs = {s["pk"]: [r for r in runs_of[s["pk"]] if r["status"] == RunStatus.COMPLETED] for s in tasks}
    rows.append(
        Row(
            "tasks without exactly one completed run", 0, sum(1 for runs_ in completed_runs.values() if len(runs_) != 1)
        )
    )
    other = Counter(r["status"] for r in runs if r["status"] not in ENDED)
    rows.append(Row("runs neither completed nor lost", 0, sum(other.values())))
    rows.append(Row("runs of an attempt other than 1", 0, sum(1 for r in runs if r["attempt"] != 1)))
    stats["runs"] = len(runs)
    stats["lost runs (resumed)"] = sum(1 for r in runs if r["status"] == RunStatus.LOST)

    rows += _execution_rows(records, runs, completed_runs, stats)
    rows += _callback_rows(sigs, stats)
    rows += _event_rows({pk: s for pk, s in sigs.items() if pk not in skipped}, events)
    rows += _graph_rows(sigs, skipped, runs_of, stats)
    rows += _gate_rows(sigs, runs_of, events, stats)
    rows.append(
        Row(
            "completed runs without their log line",
            0,
            sum(1 for runs_ in completed_runs.values() for r in runs_ if r["pk"] not in logged_runs),
        )
    )
    rows += _concurrency_rows(sigs, runs_of, stats)
    return rows, stats


def _execution_rows(records, runs, completed_runs, stats) -> list[Row]:

    status_of = {(r["signature_id"], r["number"]): r["status"] for r in runs}
    starts = Counter((sig, run) for kind, sig, run, _, _ in records if kind == "start")
    ends = Counter((sig, run) for kind, sig, run, _, _ in records if kind == "end")
    stats["executions started"] = sum(starts.values())
    stats["executions ended"] = sum(ends.values())
    stats["tasks executed more than once"] = sum(
        1 for n in Counter(sig for sig, _ in starts.elements()).values() if n > 1
    )
    ended_ok = sum(
        1 for sig, runs_ in completed_runs.items() if len(runs_) == 1 and ends.get((sig, runs_[0]["number"])) == 1
    )
    return [
        Row("runs executed twice", 0, sum(1 for n in starts.values() if n > 1)),
        Row("completed runs whose execution ended once", len(completed_runs), ended_ok),
        Row(
            "executions of a run neither completed nor lost",
            0,
            sum(1 for key in starts if status_of.get(key) not in ENDED),
        ),
    ]


def _callback_rows(sigs: dict, stats: dict) -> list[Row]:
    """One callback per (container, trigger member, kind, template position)."""
    per_trigger = Counter()
    members = Counter(s["parent_id"] for s in sigs.values())
    expected = sum(
        len(s["config"].get("task_on_success") or []) * members[s["pk"]] for s in sigs.values() if s["kind"] == "swarm"
    )
    for sig in sigs.values():
        if sig["callback_on"] == "task_success":
            per_trigger[(sig["callback_of_id"], sig["trigger_id"])] += 1
    fired = sum(per_trigger.values())
    stats["per-member callbacks"] = fired
    stats["on_success callbacks"] = sum(1 for s in sigs.values() if s["callback_on"] == "success")
    return [Row("per-member callbacks (one per member and template)", expected, fired)]


def _event_rows(sigs: dict, events: Counter) -> list[Row]:
    twice = sum(1 for pk in sigs if events[(pk, "completed")] != 1)
    queued_twice = sum(1 for pk, s in sigs.items() if s["kind"] == "task" and events[(pk, "queued")] != 1)
    missing = 0
    for pk, s in sigs.items():
        needed = ("queued", "running", "completed") if s["kind"] == "task" else ("started", "completed")
        missing += sum(1 for kind in needed if not events[(pk, kind)])
    return [
        Row("signatures without exactly one 'completed' event", 0, twice),
        Row("tasks queued from pending more than once (callback or member fired twice)", 0, queued_twice),
        Row("status events missing (queued/running/completed, started/completed)", 0, missing),
    ]


def _graph_rows(sigs: dict, skipped: set[int], runs_of: dict, stats: dict) -> list[Row]:
    """Each graph: a, b, c, d completed once; d started after b and c ended; the failure path skipped, never run."""
    graphs = [s for s in sigs.values() if s["kind"] == "graph"]
    nodes = defaultdict(dict)
    for sig in sigs.values():
        if sig["node_key"]:
            nodes[sig["parent_id"]][sig["node_key"]] = sig
    early_joins = 0
    for graph in graphs:
        members = nodes[graph["pk"]]
        ended = [
            run["finished_at"]
            for key in ("b", "c")
            for run in runs_of[members[key]["pk"]]
            if run["status"] == "completed"
        ]
        join_starts = [run["started_at"] for run in runs_of[members["d"]["pk"]] if run["started_at"]]
        early_joins += bool(join_starts) and (len(ended) < 2 or min(join_starts) < max(ended))
    never_ran = sum(1 for pk in skipped if not runs_of[pk])
    stats["graphs"] = len(graphs)
    return [
        Row("graph failure paths skipped without a run", len(graphs), never_ran),
        Row("graph joins started before both inputs ended", 0, early_joins),
    ]


def _gate_rows(sigs: dict, runs_of: dict, events: Counter, stats: dict) -> list[Row]:
    """Each gate: one approval, decided once by its timeout with its default, and the task returned it."""
    from tasks_app.models import Approval

    gates = {pk: s for pk, s in sigs.items() if s["task_name"] == GATE}
    approvals = defaultdict(list)
    for approval in Approval.objects.filter(signature_id__in=gates).values(
        "signature_id", "status", "default", "decided_by"
    ):
        approvals[approval["signature_id"]].append(approval)
    wrong = 0
    for pk, gate in gates.items():
        decided = approvals[pk]
        expected = "approved" if gate["kwargs"].get("default", "reject") == "approve" else "rejected"
        wrong += not (
            len(decided) == 1
            and decided[0]["status"] == expected
            and decided[0]["decided_by"] == "timeout"
            and gate["result"] == (expected == "approved")
            and events[(pk, "approval_decided")] == 1
        )
    waiting = sum(1 for pk in gates if sum(r["status"] == "waiting_approval" for r in runs_of[pk]) != 1)
    stats["gates (approvals decided by their timeout)"] = len(gates)
    return [
        Row("gates not decided once by their timeout with their default", 0, wrong),
        Row("gates without exactly one run that waited for the approval", 0, waiting),
    ]


def _concurrency_rows(sigs: dict, runs_of: dict, stats: dict) -> list[Row]:
    """Per swarm: members' [start, end] (runs for tasks, the member itself for containers)."""
    over = 0
    peak_ratio = 0.0
    members_of = defaultdict(list)
    for sig in sigs.values():
        members_of[sig["parent_id"]].append(sig)
    for swarm in (s for s in sigs.values() if s["kind"] == "swarm"):
        limit = swarm["config"].get("max_concurrency")
        intervals = []
        for member in members_of[swarm["pk"]]:
            if member["kind"] == "task":
                intervals += [
                    (r["started_at"].timestamp(), r["finished_at"].timestamp())
                    for r in runs_of[member["pk"]]
                    if r["started_at"] and r["finished_at"]
                ]
            elif member["started_at"] and member["finished_at"]:
                intervals.append((member["started_at"].timestamp(), member["finished_at"].timestamp()))
        peak = max_overlap(intervals)
        if limit:
            over += peak > limit
            peak_ratio = max(peak_ratio, peak / limit)
    stats["max_concurrency reached (peak / limit, worst swarm)"] = f"{peak_ratio:.2f}"
    return [Row("swarms that exceeded max_concurrency", 0, over)]


def print_table(title: str, rows: list[Row], stats: dict, extra: list[Row] = ()) -> bool:
    rows = [*rows, *extra]
    width = max(len(r.check) for r in rows)
    print(f"\n{title}\n")
    print(f"{'check'.ljust(width)}  {'expected':>9}  {'actual':>9}  result")
    print(f"{'-' * width}  {'-' * 9}  {'-' * 9}  ------")
    for r in rows:
        print(f"{r.check.ljust(width)}  {str(r.expected):>9}  {str(r.actual):>9}  {'ok' if r.ok else 'FAIL'}")
    print()
    swidth = max(len(k) for k in stats)
    for key, value in stats.items():
        print(f"{key.ljust(swidth)}  {value:>9}")
    ok = all(r.ok for r in rows)
    print(f"\nRESULT: {'PASS' if ok else 'FAIL'}")
    return ok
