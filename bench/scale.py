"""Scale-out: throughput of N no-op tasks on 1, 2 and 4 worker processes, and where the limit is.

Runs on PostgreSQL and a Redis server, as a scaled-out deployment does (docs/deploy.md). Without
DATABASE_URL it creates and uses its own database ``bench_scale`` on 127.0.0.1:5432 (user
postgres); without REDIS_URL it uses database 13 of the Redis server on 127.0.0.1:6379 (flushed).

Two workloads per worker count, each on fresh workers registered before the clock starts: one
closed swarm of N members with ``max_concurrency=N`` (one submit; every member's end locks the
swarm's row), and N separate submits (no shared row). Time runs from the start of the submit to
the last ``finished_at``.

Where the limit is: during each leg the CPU seconds of the worker processes (their work horses
included: the parent reaps them), of PostgreSQL (the postmaster's reaped backends plus the live
ones), of redis-server (its INFO), of this process (submit and polling) and of the whole machine
are taken at the start and the end; PostgreSQL's ``pg_stat_database`` gives the transactions and
the connections (sessions) per task, Redis's INFO the commands per task. An in-process run counts
the SQL queries of one task. From the CPU per task the script prints the ceiling that the
machine's cores allow.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/bench_scale"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
KINDS = ("swarm", "submits")


# Set-up ---------------------------------------------------------------------------------------


def ensure_database(url: str) -> None:
    """Create the benchmark's PostgreSQL database when it does not exist (the server's own `postgres` db is used)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"# created database {name}")


def configure() -> None:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE)
    os.environ.setdefault("REDIS_URL", DEFAULT_REDIS)
    if os.environ["DATABASE_URL"].startswith(("postgres://", "postgresql://")):
        ensure_database(os.environ["DATABASE_URL"])


# Submissions ----------------------------------------------------------------------------------


def submit(kind: str, n: int) -> list[int]:
    from tasks_app.services import execution

    user = common.owner()
    if kind == "swarm":
        return [execution.submit(common.swarm_spec(n, max_concurrency=n), owner=user).pk]
    return [execution.submit({"task": "examples.noop"}, owner=user).pk for _ in range(n)]


# CPU and counters -----------------------------------------------------------------------------


@dataclass
class Counters:
    """Cumulative figures at one instant; the difference of two is what a leg cost."""

    at: float
    machine_busy: float
    workers: float
    postgres: float
    redis: float
    bench: float
    commits: int
    sessions: int
    redis_commands: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(a - b for a, b in zip(self.__dict__.values(), other.__dict__.values(), strict=True)))


def process_cpu(process, *, reaped: bool) -> float:
    """CPU seconds of a process; with ``reaped``, plus those of the children it has waited for."""
    import psutil

    try:
        t = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system + ((t.children_user + t.children_system) if reaped else 0.0)


def postmaster_child_pid() -> int:
    """The pid of this connection's backend."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def postmaster():
    """The PostgreSQL server's main process, found as the parent of this connection's backend."""
    import psutil

    return psutil.Process(postmaster_child_pid()).parent()


def postgres_cpu(master) -> float:
    """The postmaster and its reaped backends, plus every live child (backends, writers)."""
    live = sum(process_cpu(child, reaped=False) for child in master.children())
    return process_cpu(master, reaped=True) + live


class BackendSampler:
    """CPU of this database's PostgreSQL backends (one per job: each work horse connects anew).

    A backend lives for one job, too short for a start/end difference, so a thread reads every
    live backend's CPU time every ``interval`` seconds, picked out by its process title (``postgres:
    ... <user> <database> ...``), and keeps the last reading of each; this script's own backend is
    left out. A lower bound: the last few milliseconds of each backend, and backends that live
    less than ``interval``, are missed; ``seen`` is compared with the sessions PostgreSQL counted.
    """

    def __init__(self, master, database: str, own_pid: int, interval: float = 0.02):
        self.master, self.database, self.own_pid, self.interval = master, database, own_pid, interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.titles: dict[int, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackendSampler:
        self._sample(baseline=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu(self) -> float:
        return sum(self.last[pid] - self.first.get(pid, 0.0) for pid in self.last)

    @property
    def seen(self) -> int:
        return sum(1 for pid in self.last if pid not in self.first)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self, baseline: bool = False) -> None:
        import psutil

        for child in self.master.children():
            try:
                if child.pid not in self.titles:
                    words = " ".join(child.cmdline()).split()
                    self.titles[child.pid] = self.database in words and child.pid != self.own_pid
                if self.titles[child.pid]:
                    (self.first if baseline else self.last)[child.pid] = run_time(child.pid)
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                continue


def run_time(pid: int) -> float:
    """CPU seconds of a process from the scheduler's nanosecond count (/proc/PID/schedstat): the
    user and system times of /proc/PID/stat come in 10 ms ticks, too coarse for a backend that
    lives for one job."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def database_stats() -> tuple[int, int]:
    """Commits and sessions (connections) of this database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()


def snapshot(bench: common.Bench, master, workers: list) -> Counters:
    import psutil

    cpu = psutil.cpu_times()
    busy = cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq + getattr(cpu, "steal", 0.0)
    info = bench.redis().info()
    commits, sessions = database_stats()
    return Counters(
        at=time.monotonic(),
        machine_busy=busy,
        workers=sum(process_cpu(w, reaped=True) for w in workers),
        postgres=postgres_cpu(master),
        redis=info["used_cpu_user"] + info["used_cpu_sys"],
        bench=process_cpu(psutil.Process(), reaped=False),
        commits=commits,
        sessions=sessions,
        redis_commands=info["total_commands_processed"],
    )


# Legs -----------------------------------------------------------------------------------------


@dataclass
class Leg:
    kind: str
    workers: int
    n: int
    seconds: float
    cost: Counters
    bench_queries: int
    backends_cpu: float  # this database's backends, sampled (a lower bound)
    backends_seen: int

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def per_task_ms(self, part: str) -> float:
        return 1000 * getattr(self.cost, part) / self.n


def run_leg(bench: common.Bench, master, kind: str, workers: int, n: int) -> Leg:
    import psutil
    from django.db import connection

    common.clear_queues(bench)
    common.reset_orchestrator()
    processes = [psutil.Process(p.pid) for p in bench.start_workers(workers)]
    own = postmaster_child_pid()
    with common.count_queries() as queries, BackendSampler(master, connection.settings_dict["NAME"], own) as pg:
        before = snapshot(bench, master, processes)
        started = common.utcnow()
        ids = submit(kind, n)
        last = common.wait_finished(bench, ids, timeout=900, interval=0.1)
        time.sleep(0.6)  # exited backends report their counters to pg_stat_database within about a second
        cost = snapshot(bench, master, processes) - before
    bench.stop_workers()
    common.check_completed(ids)
    seconds = (last - started).total_seconds()
    print(f"# {kind}, {workers} worker(s): {n} tasks in {seconds:.1f} s", file=sys.stderr, flush=True)
    # This process's own queries (submit, polling, the two snapshots) are transactions too.
    return Leg(kind, workers, n, seconds, cost, queries[0], pg.cpu, pg.seen)


def queries_per_task(kind: str, n: int) -> float:
    """Submit and execute in this process (no worker, no Redis job run): SQL queries per task."""
    from tasks_app.models import Run, RunStatus
    from tasks_app.services import execution

    common.reset_orchestrator()
    with common.count_queries() as queries:
        submit(kind, n)
        while runs := list(
            Run.objects.filter(status=RunStatus.QUEUED).order_by("pk").values_list("signature_id", "number")
        ):
            for signature_id, number in runs:
                execution.execute(signature_id, number)
    return queries[0] / n


# Report ---------------------------------------------------------------------------------------


def ours(leg: Leg, part: str) -> float:
    """CPU seconds of a part for this benchmark: the workers are ours alone; PostgreSQL is the
    sampled backends of this database (other people's databases share the server); Redis is the
    whole server (an upper bound, small either way)."""
    return leg.backends_cpu if part == "postgres" else getattr(leg.cost, part)


def print_throughput(legs: list[Leg]) -> None:
    fewest = min(x.workers for x in legs)
    rows = []
    for leg in legs:
        base = next(x for x in legs if x.kind == leg.kind and x.workers == fewest)
        rows.append((leg.kind, leg.workers, leg.n, leg.seconds, leg.rate, f"{leg.rate / base.rate:.2f}×"))
    headers = ["workload", "workers", "tasks", "seconds", "tasks/s", f"vs {fewest} worker"]
    common.table(headers, rows, title="Throughput by number of worker processes")


def print_cpu(legs: list[Leg], cores: int) -> None:
    rows = []
    for leg in legs:
        c = leg.cost
        parts = [c.machine_busy, c.workers, c.postgres, ours(leg, "postgres"), c.redis, c.bench]
        parts.append(max(c.machine_busy - c.workers - c.postgres - c.redis - c.bench, 0))
        rows.append((leg.kind, leg.workers, *(f"{100 * v / (c.at * cores):.0f}%" for v in parts)))
    headers = ["workload", "workers", "machine busy", "workers", "postgres (all dbs)", "  of it ours (sampled)"]
    headers += ["redis", "this script", "other processes"]
    common.table(headers, rows, title=f"CPU during each leg, as a share of {cores} cores × the leg's wall time")


def print_per_task(legs: list[Leg], cores: int, in_process: dict[str, float]) -> None:
    rows = []
    for leg in legs:
        cpu = [1000 * ours(leg, part) / leg.n for part in ("workers", "postgres", "redis")]
        commits = (leg.cost.commits - leg.bench_queries) / leg.n
        connections = f"{leg.cost.sessions / leg.n:.2f} ({leg.backends_seen / leg.n:.2f})"
        rows.append(
            (
                leg.kind,
                leg.workers,
                *cpu,
                sum(cpu),
                1000 * cores / sum(cpu),
                commits,
                connections,
                leg.cost.redis_commands / leg.n,
                in_process.get(leg.kind, 0.0),
            )
        )
    headers = ["workload", "workers", "worker CPU ms", "postgres ms", "redis ms", "sum ms", "ceiling tasks/s"]
    headers += ["DB commits", "DB connections (sampled)", "redis cmds", "SQL queries"]
    title = f"Per task (ceiling: {cores} cores / the CPU one task costs in workers, PostgreSQL and Redis)"
    common.table(headers, rows, title=title)
    print("postgres ms: this database's backends, sampled every 20 ms: a lower bound (DB connections: counted by")
    print("PostgreSQL, and in brackets sampled); redis: the whole server, other users' too; DB commits: without")
    print("this script's own; SQL queries: in this process, submit + execute of one task.")


def verdict(legs: list[Leg], cores: int) -> None:
    for leg in legs:
        if leg.workers != max(x.workers for x in legs):
            continue
        busy = 100 * leg.cost.machine_busy / (leg.cost.at * cores)
        parts = {p: ours(leg, p) for p in ("workers", "postgres", "redis")}
        total = sum(parts.values())
        split = ", ".join(f"{p} {100 * v / total:.0f}%" for p, v in sorted(parts.items(), key=lambda kv: -kv[1]))
        print(f"{leg.kind}, {leg.workers} workers: machine {busy:.0f}% busy; the system's own CPU: {split}.")
    print(
        f"{cores} cores: at most {cores} worker processes run at once, and they share the cores with PostgreSQL and "
        "Redis; past that the figures measure the cores, not the orchestrator."
    )


def main() -> None:
    p = common.parser(__doc__, n=200, workers=None)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts (default 1 2 4)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="workloads (default both)")
    p.add_argument("--in-process", type=int, default=50, help="tasks of the in-process query count (0: skip)")
    args = p.parse_args()
    configure()
    cores = os.cpu_count() or 1
    with common.session("scale") as bench:
        from django.db import connection

        if connection.vendor != "postgresql":
            raise SystemExit("bench/scale.py measures PostgreSQL: set DATABASE_URL to a postgres:// URL (or unset it)")
        master = postmaster()
        legs = [run_leg(bench, master, kind, w, args.n) for w in args.workers for kind in args.kinds]
        in_process = {kind: queries_per_task(kind, args.in_process) if args.in_process else 0.0 for kind in args.kinds}
        common.clear_queues(bench)
        print_throughput(legs)
        print_cpu(legs, cores)
        print_per_task(legs, cores, in_process)
        print()
        verdict(legs, cores)


if __name__ == "__main__":
    main()
