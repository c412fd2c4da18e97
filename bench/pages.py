"""Pages: SQL queries and server time of the dashboard, the task list and the task detail at N signatures.

The rows are machine-made with ``bulk_create``, all for one owner: about N signatures, top-level
tasks with mixed statuses, task names, categories and tags, created over the last 30 days; every
50th top-level row a chain or a swarm with 5 members; every 10th task a Run; a few in the trash.
Two detail targets are added last: a running chain of 4 members (each with a Run) and a running
task with 5 steps, 2 runs and 40 log lines. Then Django's test ``Client``, signed in as the owner
(``force_login``, over https: DEBUG=0 redirects http), asks for ``/``, the dashboard's chart data
``/dashboard/metrics.json`` (fetched by the page's script), ``/tasks/``, ``/tasks/{chain}/`` and
``/tasks/{task}/``:
the queries of each page are captured with ``CaptureQueriesContext`` (3 requests), and the time of
``client.get`` (middleware, view, template; no network) is taken over R further requests without
capture, after 2 warm-up requests, as wall time and as this process's CPU time (which a loaded
machine inflates much less; on SQLite it includes the SQL, on PostgreSQL not the server's work).

On PostgreSQL the database is vacuumed and analysed after the load (as autovacuum would be soon
after it), so that the planner has statistics and index-only scans skip the table.

Each size runs in its own process and database: a small one (``--small``, default 1,000) and N.
On SQLite the files are ``var/bench/pages-small.sqlite3`` and ``var/bench/pages.sqlite3``; with
DATABASE_URL both legs use that database one after the other (emptied first, as ``common`` does).
Targets: the query count of each page does not depend on the data size; p95 ≤ 200 ms.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

TARGET_P95_MS = 200.0
BATCH = 5_000
CONTAINER_EVERY = 50  # every 50th top-level row is a container (chain, then swarm, alternately)
MEMBERS = 5
CAPTURED = 3
WARMUP = 2
RESULT = "RESULT "
# process_time() counts this process only: on a shared machine it moves much less than the wall time.
CPU_NOTE = {True: "SQLite runs in it: SQL included", False: "the database server's work not included"}
TASK_NAMES = ("examples.noop", "examples.sleep", "examples.echo", "examples.add", "examples.log", "examples.fail")
CATEGORIES = ("", "billing", "reports", "imports", "")


# Data -----------------------------------------------------------------------------------------


def make_rows(n: int) -> dict[str, int]:
    """About n signatures for the bench owner; returns the detail targets' ids."""
    user = common.owner()
    tops = max(1, round(n / (1 + MEMBERS / CONTAINER_EVERY)))
    for start in range(0, tops, BATCH):
        _make_batch(user, range(start, min(tops, start + BATCH)), tops)
    return _make_targets(user)


def _statuses():
    from tasks_app.models import Status

    return (
        [Status.COMPLETED] * 8
        + [Status.FAILED] * 2
        + [Status.RUNNING, Status.PENDING, Status.QUEUED, Status.PAUSED, Status.INTERRUPTED, Status.WAITING_APPROVAL]
    )


def _make_batch(user, indexes: range, tops: int) -> None:
    from django.utils import timezone

    from tasks_app.models import Kind, Run, Signature, Status

    now, statuses = timezone.now(), _statuses()
    span = 30 * 86_400 / max(1, tops)
    rows = []
    for i in indexes:
        status = statuses[i % len(statuses)]
        container = i % CONTAINER_EVERY == 0
        kind = (Kind.CHAIN if i % (2 * CONTAINER_EVERY) == 0 else Kind.SWARM) if container else Kind.TASK
        created = now - timedelta(seconds=(tops - i) * span + 60)
        started = None if status in (Status.PENDING, Status.QUEUED) else created + timedelta(seconds=1)
        finished = started + timedelta(seconds=1 + i % 30) if status in (Status.COMPLETED, Status.FAILED) else None
        rows.append(
            Signature(
                owner=user,
                kind=kind,
                name=f"bench {kind} {i}" if container else "",
                task_name="" if container else TASK_NAMES[i % len(TASK_NAMES)],
                status=status,
                category=CATEGORIES[i % len(CATEGORIES)],
                tags=["bench", f"t{i % 7}"] if i % 3 == 0 else [],
                progress=1.0 if status == Status.COMPLETED else 0.5 if started else 0.0,
                created_at=created,
                started_at=started,
                finished_at=finished,
                error={"type": "RuntimeError", "message": f"boom {i}"} if status == Status.FAILED else None,
                attempts=0 if started is None else 1,
                marked_at=now if i % 997 == 3 else None,
                delete_after=now + timedelta(days=7) if i % 997 == 3 else None,
            )
        )
    made = Signature.objects.bulk_create(rows)
    containers = [s for s in made if s.kind != Kind.TASK]
    Signature.objects.bulk_create(
        [
            Signature(
                owner=user,
                task_name=TASK_NAMES[p],
                parent=s,
                root=s,
                position=p,
                status=s.status if s.status in (Status.COMPLETED, Status.PENDING) else Status.COMPLETED,
                created_at=s.created_at,
                started_at=s.started_at,
                finished_at=s.finished_at,
            )
            for s in containers
            for p in range(MEMBERS)
        ]
    )
    Run.objects.bulk_create(
        [
            Run(
                signature=s,
                number=1,
                status="completed" if s.status == Status.COMPLETED else "failed",
                queued_at=s.created_at,
                started_at=s.started_at,
                finished_at=s.finished_at,
            )
            for i, s in zip(indexes, made, strict=True)
            if i % 10 == 0 and s.kind == Kind.TASK and s.status in (Status.COMPLETED, Status.FAILED)
        ]
    )


def _make_targets(user) -> dict[str, int]:
    from django.utils import timezone

    from tasks_app.models import Kind, LogEntry, Run, Signature, Status, Step

    now = timezone.now()
    chain = Signature.objects.create(
        owner=user, kind=Kind.CHAIN, name="bench detail chain", status=Status.RUNNING, started_at=now, progress=0.4
    )
    member_states = (Status.COMPLETED, Status.RUNNING, Status.PENDING, Status.PENDING)
    members = Signature.objects.bulk_create(
        [
            Signature(
                owner=user,
                task_name="examples.sleep",
                kwargs={"seconds": 5},
                parent=chain,
                root=chain,
                position=p,
                status=state,
                started_at=now if state != Status.PENDING else None,
                finished_at=now if state == Status.COMPLETED else None,
                progress=1.0 if state == Status.COMPLETED else 0.5 if state == Status.RUNNING else 0.0,
            )
            for p, state in enumerate(member_states)
        ]
    )
    Run.objects.bulk_create(
        [
            Run(
                signature=m,
                number=1,
                status="completed" if m.status == Status.COMPLETED else "running",
                started_at=now,
                finished_at=m.finished_at,
            )
            for m in members
            if m.status != Status.PENDING
        ]
    )
    task = Signature.objects.create(
        owner=user, task_name="examples.build_crm", status=Status.RUNNING, started_at=now, progress=0.5, attempts=2
    )
    runs = Run.objects.bulk_create(
        [
            Run(
                signature=task,
                number=1,
                status="failed",
                started_at=now,
                finished_at=now,
                error={"type": "RuntimeError", "message": "first try"},
            ),
            Run(signature=task, number=2, status="running", started_at=now),
        ]
    )
    Step.objects.bulk_create(
        [
            Step(
                signature=task,
                order=k,
                name=f"step {k}",
                status="completed" if k < 3 else "running" if k == 3 else "pending",
                progress=1.0 if k < 3 else 0.5 if k == 3 else 0.0,
                started_at=now if k <= 3 else None,
                finished_at=now + timedelta(seconds=k) if k < 3 else None,
                substeps=[{"name": f"item {j}", "done": k < 3 or j < 2} for j in range(4)],
            )
            for k in range(1, 6)
        ]
    )
    LogEntry.objects.bulk_create([LogEntry(signature=task, run=runs[k % 2], message=f"line {k}") for k in range(40)])
    return {"chain": chain.pk, "task": task.pk}


def settle() -> None:
    """On PostgreSQL, what autovacuum does within a minute of a bulk load, before the clock starts.

    Without statistics the planner guesses row counts; without the visibility map an index-only
    scan reads the table anyway. A server in use has both; measured right after the load, the plans
    would depend on whether autovacuum had run yet. SQLite is left as the app leaves it: nothing
    runs ANALYZE there.
    """
    from django.db import connection

    if connection.vendor == "postgresql":
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        print(f"# VACUUM ANALYZE in {time.perf_counter() - started:.1f} s", flush=True)


# Measuring ------------------------------------------------------------------------------------


def measure(url: str, client, requests: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(WARMUP):
        _get(client, url)
    counts, sql, slowest, sql_ms = [], [], {}, 0.0  # read inside the loop: each request resets the query log
    for _ in range(CAPTURED):
        with CaptureQueriesContext(connection) as captured:
            _get(client, url)
        counts.append(len(captured.captured_queries))
        sql = [q["sql"] for q in captured.captured_queries]
        slowest = max(captured.captured_queries, key=lambda q: float(q["time"]), default={"time": 0, "sql": ""})
        sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
    times, cpu = [], []
    for _ in range(requests):
        started, started_cpu = time.perf_counter(), time.process_time()
        _get(client, url)
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return {
        "queries": max(counts),
        "queries_min": min(counts),
        "p50": common.percentile(times, 50),
        "p95": common.percentile(times, 95),
        "cpu_p50": common.percentile(cpu, 50),
        "cpu_p95": common.percentile(cpu, 95),
        "sql": sql,
        "slowest": (float(slowest["time"]) * 1000, slowest["sql"]),
        "sql_ms": sql_ms,
    }


def _get(client, url: str):
    response = client.get(url, secure=True)  # DEBUG=0: SECURE_SSL_REDIRECT sends plain HTTP to https
    if response.status_code != 200:
        raise RuntimeError(f"GET {url}: {response.status_code}")
    response.content  # noqa: B018 - rendered already; streaming responses would render here
    return response


def leg(n: int, requests: int) -> None:
    """One size in this process: make the rows, measure the pages, print the figures as one JSON line."""
    if not os.environ.get("DATABASE_URL") and os.environ.get("BENCH_PAGES_SMALL"):
        path = common.VAR / "pages-small.sqlite3"
        common.VAR.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    with common.session("pages"):
        from django.test import Client

        from tasks_app.models import Signature

        started = time.perf_counter()
        targets = make_rows(n)
        made = time.perf_counter() - started
        total = Signature.objects.count()
        print(f"# {total:,} signatures made in {made:.1f} s", flush=True)
        settle()
        client = Client()
        client.force_login(common.owner())
        pages = {
            "/ (dashboard)": "/",
            "/dashboard/metrics.json (its charts)": "/dashboard/metrics.json",
            "/tasks/ (list, page 1)": "/tasks/",
            "/tasks/{id}/ (chain of 4)": f"/tasks/{targets['chain']}/",
            "/tasks/{id}/ (task, 5 steps)": f"/tasks/{targets['task']}/",
        }
        figures = {label: measure(url, client, requests) for label, url in pages.items()}
        print(RESULT + json.dumps({"n": total, "database": common.Bench("pages").database_label(), "pages": figures}))


# Both sizes -----------------------------------------------------------------------------------


def run_leg(n: int, requests: int, small: bool) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if small:
        env["BENCH_PAGES_SMALL"] = "1"
    command = [sys.executable, __file__, "--leg", "--n", str(n), "--requests", str(requests)]
    process = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    result = None
    for line in process.stdout.splitlines():
        if line.startswith(RESULT):
            result = json.loads(line[len(RESULT) :])
        else:
            print(line)
    if process.returncode or result is None:
        raise SystemExit(f"the leg of {n:,} signatures failed (exit {process.returncode})")
    return result


def shape(sql: str) -> str:
    """A query without its literals, to compare two runs' queries."""
    sql = re.sub(r"'[^']*'", "?", sql)
    sql = re.sub(r"\b\d+(\.\d+)?\b", "?", sql)
    return re.sub(r"\(\?(, \?)*\)", "(…)", sql)


def main() -> None:
    p = common.parser(__doc__, n=100_000, workers=None)
    p.add_argument("--small", type=int, default=1_000, help="the small size (default 1000)")
    p.add_argument("--requests", type=int, default=30, help="timed requests per page (default 30)")
    p.add_argument("--leg", action="store_true", help="internal: measure one size in this process")
    args = p.parse_args()
    if args.leg:
        leg(args.n, args.requests)
        return
    small = run_leg(args.small, args.requests, small=True)
    large = run_leg(args.n, args.requests, small=False)
    rows, grown = [], []
    for (label, a), b in zip(small["pages"].items(), large["pages"].values(), strict=True):
        same = a["queries"] == b["queries"] and a["queries_min"] == b["queries_min"]
        rows.append(
            (
                label,
                a["queries"],
                b["queries"],
                "yes" if same else "NO",
                a["p50"],
                a["p95"],
                b["p50"],
                b["p95"],
                "meets" if b["p95"] <= TARGET_P95_MS else "MISSES",
            )
        )
        if not same:
            grown.append((label, a["sql"], b["sql"]))
    n1, n2 = f"{small['n']:,}", f"{large['n']:,}"
    common.table(
        [
            "page",
            f"queries @{n1}",
            f"queries @{n2}",
            "constant",
            f"p50 ms @{n1}",
            f"p95 ms @{n1}",
            f"p50 ms @{n2}",
            f"p95 ms @{n2}",
            f"p95 ≤ {TARGET_P95_MS:g} ms",
        ],
        rows,
        title=f"{large['database']}: queries per request and server time of {args.requests} requests",
    )
    common.table(
        ["page", f"CPU p50 ms @{n1}", f"CPU p95 ms @{n1}", f"CPU p50 ms @{n2}", f"CPU p95 ms @{n2}"],
        [
            (label, a["cpu_p50"], a["cpu_p95"], b["cpu_p50"], b["cpu_p95"])
            for (label, a), b in zip(small["pages"].items(), large["pages"].values(), strict=True)
        ],
        title=f"CPU time of the bench process, same requests ({CPU_NOTE[large['database'].startswith('SQLite')]})",
    )
    print(f"\nSQL time and slowest query of each page at {n2} (last captured request):")
    for label, figures in large["pages"].items():
        ms, sql = figures["slowest"]
        sql = re.sub(r"^SELECT .*? FROM ", "SELECT … FROM ", shape(sql))
        print(f"  {label}: SQL {figures['sql_ms']:.0f} ms, slowest {ms:.0f} ms: {sql[:400]}")
    for label, a, b in grown:
        more = Counter(map(shape, b)) - Counter(map(shape, a))
        print(f"\n{label}: queries that grow with the data ({len(a)} → {len(b)}):")
        for sql, count in more.most_common(5):
            print(f"  +{count}  {sql[:300]}")


if __name__ == "__main__":
    main()
