"""WebSocket latency: many signed-in clients watch one task that reports progress 20 times a second.

Real processes end to end: a daphne serving ``orchestrator_site.asgi``, an orchestrator worker (the
forking ``manage.py worker``) and Redis (REDIS_URL, else the embedded one) carrying RQ and the
Channels layer. The clients (``websockets``, one asyncio loop in this process) sign in with a
session cookie, open ``/ws/tasks/<id>/`` and wait for the snapshot; then the task starts. It calls
``ctx.progress`` ``--rate`` times a second for ``--seconds`` and returns the wall-clock time of each
call, so the delay measured is from the moment ``ctx.progress()`` was called to the moment a client
read the message (same machine, same clock). A message is lost when a client never received it.

    .venv/bin/python bench/ws_latency.py [--clients 100] [--rate 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

TICKER = "bench.ws_latency.ticker"
TARGET_P99_MS = 50.0
START_DELAY = 2.0  # seconds between starting the task and its first progress call: the worker claims it


def ticker(ctx, start_at: float = 0.0, count: int = 200, interval: float = 0.05) -> list[float]:
    """Report progress ``count`` times, every ``interval`` seconds from ``start_at``; return each call's time.

    The calls go through a step handle: it runs the same ``ctx`` reporting path (throttled database
    write, ETA, ``live.progress``) as ``ctx.progress()``, which broadcasts nothing for a task
    without steps (its change check compares the new percent with itself).
    """
    sent = []
    with ctx.step("Tick") as step:
        for seq in range(1, count + 1):
            delay = start_at + seq * interval - time.time()
            if delay > 0:
                time.sleep(delay)
            sent.append(time.time())
            step.progress(100.0 * seq / count)  # distinct at the message's 0.1 % resolution while count <= 1000
    return sent


def register() -> None:
    from tasks_app.registry import task

    task(TICKER, category="bench")(ticker)


def _register_in_workers() -> None:
    """Workers import this module after ``django.setup()`` (bench.common's launcher): register there."""
    from django.apps import apps

    if apps.ready:
        register()


_register_in_workers()


# The server side ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daphne(bench: common.Bench) -> int:
    """A daphne process on a free port, stopped with the bench's other processes."""
    from tasks_app.embedded_redis import die_with_parent

    port = free_port()
    log = bench.log_dir / "ws_latency-daphne.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "orchestrator_site.asgi:application"],
            env=bench.env(),
            cwd=common.BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    bench.processes.append(process)
    bench.wait_for(lambda: _listening(port), timeout=30, what="daphne to listen")
    return port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def session_cookie(user) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def start_task(task_id: int, start_at: float) -> None:
    from django.db import transaction

    from tasks_app.models import Signature
    from tasks_app.services import execution

    with transaction.atomic():
        sig = Signature.objects.select_for_update().get(pk=task_id)
        Signature.objects.filter(pk=task_id).update(kwargs={**sig.kwargs, "start_at": start_at})
        execution.start(sig)


# The clients ----------------------------------------------------------------------------------


@dataclass
class Client:
    received: list[tuple[float, float]] = field(default_factory=list)  # (percent, receive time)
    ended: bool = False


async def watch(url: str, cookie: str, client: Client, connected: asyncio.Queue) -> None:
    from websockets.asyncio.client import connect

    async with connect(
        url,
        origin="http" + url[2:].split("/ws/")[0],  # the page's own scheme, host and port
        additional_headers={"Cookie": cookie},
        proxy=None,
        open_timeout=30,
        max_queue=None,
        compression=None,
    ) as ws:
        snapshot = json.loads(await ws.recv())
        await connected.put(snapshot["type"])
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            if message["type"] == "progress":
                client.received.append((message["percent"], now))
            elif message["type"] in ("task_complete", "task_failed"):
                client.ended = True
                return


async def measure(url: str, cookie: str, task_id: int, clients: int, duration: float) -> list[Client]:
    watchers = [Client() for _ in range(clients)]
    connected: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(watch(url, cookie, c, connected)) for c in watchers]
    kinds = [await asyncio.wait_for(connected.get(), timeout=60) for _ in range(clients)]
    if set(kinds) != {"snapshot"}:
        raise RuntimeError(f"expected a snapshot first on every socket, got {set(kinds)}")
    print(f"{clients} clients connected and got their snapshot; starting the task")
    await asyncio.to_thread(start_task, task_id, time.time() + START_DELAY)
    done, pending = await asyncio.wait(tasks, timeout=START_DELAY + duration + 30)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()
    return watchers


# Figures --------------------------------------------------------------------------------------


def delays_and_losses(watchers: list[Client], sent: list[float]) -> tuple[list[float], int, int]:
    """Milliseconds from each ctx.progress() call to each receipt; messages lost; duplicates."""
    count = len(sent)
    delays, lost, duplicates = [], 0, 0
    for client in watchers:
        seen = set()
        for percent, at in client.received:
            seq = round(percent * count / 100)
            if seq < 1:
                continue  # the step's start, before the first call
            if seq in seen:
                duplicates += 1  # the step's end repeats 100 %
                continue
            seen.add(seq)
            delays.append(1000 * (at - sent[seq - 1]))
        lost += count - len(seen)
    return delays, lost, duplicates


def report(watchers: list[Client], sent: list[float], rate: float) -> None:
    delays, lost, duplicates = delays_and_losses(watchers, sent)
    expected = len(sent) * len(watchers)
    p99 = common.percentile(delays, 99) if delays else float("nan")
    rows = [
        ("clients", len(watchers)),
        ("progress calls (rate)", f"{len(sent)} ({rate:g}/s)"),
        ("messages expected", expected),
        ("messages received", len(delays)),
        ("messages lost", lost),
        ("repeated (100 % again at the step's end)", duplicates),
        ("clients that saw the end", sum(1 for w in watchers if w.ended)),
        ("delay p50 (ms)", common.percentile(delays, 50) if delays else float("nan")),
        ("delay p90 (ms)", common.percentile(delays, 90) if delays else float("nan")),
        ("delay p99 (ms)", p99),
        ("delay max (ms)", max(delays) if delays else float("nan")),
    ]
    common.table(["ctx.progress() → WebSocket client", "value"], rows, title="WebSocket latency")
    print(
        f"p99 {p99:.1f} ms ({'meets' if p99 <= TARGET_P99_MS else 'misses'} target ≤ {TARGET_P99_MS:g} ms); "
        f"lost {lost} ({'meets' if lost == 0 else 'misses'} target 0)"
    )


def cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds used so far by each named process and everything it started."""
    import psutil

    used = {}
    for name, pid in processes.items():
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        total = 0.0
        for member in family:
            try:
                times = member.cpu_times()
                total += (
                    times.user + times.system + (times.children_user + times.children_system if member is root else 0)
                )
            except psutil.NoSuchProcess:
                continue
        used[name] = total
    return used


def print_cpu(before: dict[str, float], after: dict[str, float], seconds: float) -> None:
    rows = [
        (name, after[name] - before.get(name, 0.0), f"{100 * (after[name] - before.get(name, 0.0)) / seconds:.0f}%")
        for name in after
    ]
    common.table(
        ["process", "CPU seconds", "of one core"],
        rows,
        title=f"CPU used during the {seconds:.1f} s measured ({os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f})",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--clients", type=int, default=100, help="WebSocket clients (default 100)")
    p.add_argument("--rate", type=float, default=20, help="progress calls per second (default 20)")
    p.add_argument("--seconds", type=float, default=10, help="how long the task reports (default 10)")
    args = p.parse_args()
    count = max(1, min(1000, round(args.rate * args.seconds)))
    with common.session("ws_latency") as bench:
        register()
        from tasks_app.models import Signature
        from tasks_app.services import execution

        bench.start_workers(args.workers, imports=["bench.ws_latency"])
        port = start_daphne(bench)
        user = common.owner()
        spec = {"task": TICKER, "kwargs": {"count": count, "interval": 1 / args.rate}}
        sig = execution.submit(spec, owner=user, run=False)
        url = f"ws://127.0.0.1:{port}/ws/tasks/{sig.pk}/"
        processes = {
            "daphne": bench.processes[-1].pid,
            "worker (with its horse)": bench.processes[0].pid,
            "clients (this process)": os.getpid(),
        }
        before, started = cpu_seconds(processes), time.monotonic()
        watchers = asyncio.run(measure(url, session_cookie(user), sig.pk, args.clients, count / args.rate))
        after, elapsed = cpu_seconds(processes), time.monotonic() - started
        common.wait_finished(bench, [sig.pk], timeout=60)
        sig = Signature.objects.get(pk=sig.pk)
        if sig.status != "completed":
            raise SystemExit(f"the bench task ended {sig.status}: {sig.error}")
        report(watchers, sig.result, args.rate)
        print_cpu(before, after, elapsed)


if __name__ == "__main__":
    main()
