"""Outages: Redis or the database goes away for --outage seconds while tasks are queued and running.

    .venv/bin/python bench/outages.py redis [--outage 30] [--tasks 60] [--workers 2]
    DATABASE_URL=postgres://...chaos... .venv/bin/python bench/outages.py database [--outage 30]

`redis` stops the run's redis-server and starts it again on the same port (empty: nothing is
persisted). `database` (PostgreSQL only) refuses new connections to the database
(`ALTER DATABASE ... ALLOW_CONNECTIONS false`) and terminates the ones open, including the
workers', for the whole outage, then allows them again. Nobody restarts anything by hand: the
supervisor loop would start a dead worker again as `orchestrate` does, but the run also checks
that no worker process died. Afterwards every task must complete exactly once (bench/chaos_checks.py)
within --stuck-after seconds; the table shows the checks and how long recovery took.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos import stop_on_sigterm, work  # noqa: E402
from bench.chaos_checks import Row, check, print_table  # noqa: E402
from bench.chaos_system import VAR, System  # noqa: E402


def workload(n: int, rng: random.Random) -> list[dict]:
    """A swarm (max 4, a callback per member) of long-ish tasks, and a chain with an on_success."""
    slow = [{**work(rng, "slow"), "kwargs": {"ms": rng.randint(300, 1500), "label": "slow"}} for _ in range(n)]
    return [
        {
            "kind": "swarm",
            "name": "outage swarm",
            "max_concurrency": 4,
            "tasks": slow,
            "task_on_success": [work(rng, "member-callback")],
            "on_success": [work(rng, "swarm-callback")],
        },
        {
            "kind": "chain",
            "name": "outage chain",
            "steps": [work(rng, "step") for _ in range(max(2, n // 4))],
            "on_success": [work(rng, "chain-callback")],
        },
    ]


class DatabaseBlock:
    """Refuse connections to the run's PostgreSQL database and end the open ones, from the server side."""

    def __init__(self, settings_dict: dict):
        self.name = settings_dict["NAME"]
        self.params = {
            "dbname": "postgres",
            "user": settings_dict.get("USER") or None,
            "password": settings_dict.get("PASSWORD") or None,
            "host": settings_dict.get("HOST") or None,
            "port": settings_dict.get("PORT") or None,
        }

    def _run(self, sql: str) -> list:
        import psycopg

        with psycopg.connect(**{k: v for k, v in self.params.items() if v}, autocommit=True) as admin:
            cursor = admin.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def block(self) -> int:
        self._run(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        return self.terminate()

    def terminate(self) -> int:
        return len(
            self._run(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
            )
        )

    def allow(self) -> None:
        self._run(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


def completed_runs() -> int:
    from django.db import connections

    from tasks_app.models import Run, RunStatus

    try:
        return Run.objects.filter(status=RunStatus.COMPLETED).count()
    except Exception:
        connections.close_all()
        return -1


def outage(system: System, kind: str, seconds: float) -> None:
    """Take Redis or the database away for `seconds`, supervising meanwhile."""
    from django.db import connection, connections

    if kind == "redis":
        system.redis.down()
    else:
        blocker = DatabaseBlock(connection.settings_dict)
        connections.close_all()
        terminated = blocker.block()
        system.note(f"database {blocker.name}: connections refused, {terminated} open ones terminated")
    system.note(f"{kind} down for {seconds:g} s")
    ends = time.monotonic() + seconds
    try:
        while time.monotonic() < ends:
            system.tick()
            if kind == "database":
                blocker.terminate()
            time.sleep(0.5)
    finally:
        if kind == "redis":
            system.redis.up()
        else:
            blocker.allow()
    system.note(f"{kind} back")


def run(args) -> bool:
    out = Path(args.dir or VAR / f"outage-{args.kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}").resolve()
    system = System(out, workers=args.workers, web=False, reconcile_every=args.reconcile_every)
    rng = random.Random(args.seed)
    try:
        system.configure()
        system.setup_django()
        from django.contrib.auth import get_user_model
        from django.db import connection

        from tasks_app.models import TERMINAL, Run, RunStatus, Signature
        from tasks_app.services import execution

        if args.kind == "database" and connection.vendor != "postgresql":
            raise SystemExit("the database outage needs PostgreSQL (DATABASE_URL)")
        print(
            f"# bench/outages.py {args.kind}  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ·  database: "
            f"{connection.vendor} {connection.settings_dict['NAME']}  ·  outage {args.outage:g} s  ·  logs: {out}",
            flush=True,
        )
        user, _ = get_user_model().objects.get_or_create(username="outage")
        system.start()
        roots = [execution.submit(spec, owner=user).pk for spec in workload(args.tasks, rng)]
        system.wait(
            lambda: (
                Run.objects.filter(status=RunStatus.COMPLETED).count() >= 3
                and Run.objects.filter(status=RunStatus.RUNNING).exists()
            ),
            120,
            "work under way",
        )
        pids = {p.name: p.process.pid for p in system.worker_procs}
        before = completed_runs()
        running = Run.objects.filter(status=RunStatus.RUNNING).count()
        queued = Run.objects.filter(status=RunStatus.QUEUED).count()
        outage(system, args.kind, args.outage)
        back = time.monotonic()
        at_end = system.wait(lambda: max(completed_runs(), 0), args.stuck_after, "the database to answer")
        system.wait(
            lambda: (system.tick() or True) and completed_runs() > at_end,
            args.stuck_after,
            "the first completion after the outage",
        )
        recovery = time.monotonic() - back

        def all_done() -> bool:
            system.tick()
            return not Signature.objects.exclude(status__in=TERMINAL).exists()

        system.wait(all_done, args.stuck_after, "every task to end", interval=0.5)
        finished = time.monotonic() - back
        rows, stats = check(system.record_file)
        died = [p for p in system.worker_procs if not (p.alive and p.process.pid == pids[p.name])]
        for proc in died:  # how it ended: the tail of its first log
            lines = (system.out / f"{proc.name}-1.log").read_text(errors="replace").splitlines()
            print(f"\n--- {proc.name} died; the end of its log:", *lines[-40:], sep="\n")
        survived = len(pids) - len(died)
        extra = [
            Row("worker processes alive through the outage (none restarted)", len(pids), survived),
            Row("workflows completed", len(roots), Signature.objects.filter(pk__in=roots, status="completed").count()),
        ]
        stats = {
            "outage seconds": f"{args.outage:g}",
            "runs running when it began": running,
            "runs queued when it began": queued,
            "runs completed during it": at_end - before,
            "first completion after it (s)": f"{recovery:.1f}",
            "all done after it (s)": f"{finished:.1f}",
            **stats,
        }
        return print_table(f"{args.kind} outage of {args.outage:g} s, {args.workers} workers", rows, stats, extra)
    finally:
        system.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("kind", choices=["redis", "database"])
    p.add_argument("--outage", type=float, default=30, help="seconds without Redis or the database")
    p.add_argument("--tasks", type=int, default=60, help="members of the swarm (the chain has a quarter as many)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reconcile-every", type=int, default=5)
    p.add_argument("--stuck-after", type=float, default=120, help="fail when the work has not ended this long after")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default="")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    return 0 if run(args) else 1


if __name__ == "__main__":
    sys.exit(main())
