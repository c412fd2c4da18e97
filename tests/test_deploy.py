"""The scale-out layout of docs/deploy.md, tested on one machine: processes stand for hosts.

Two daphne servers and two `manage.py worker` processes (both with `--with-scheduler`, as the
systemd units run them) and one `manage.py rqcron tasks_app.cron`, all with the production
settings (`DEBUG=0`, a shared `SECRET_KEY`, `ALLOWED_HOSTS`) against the test database and Redis,
behind a round-robin proxy that stands for nginx (`tests/balancer.py`). A user signs in through
the balancer, watches their tasks over a WebSocket on one server and submits a swarm through the
API on the other: the live messages cross servers through the Redis channel layer, no sticky
session is needed, and the work spreads over both workers.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import redis
from django.conf import settings
from rq.cron import get_cron_job_ids
from rq.job import Job
from websockets.sync.client import connect

from tasks_app.models import Run, Signature
from tests.balancer import Balancer
from tests.conftest import PASSWORD, make_user
from tests.workers import Workers, kill_tree, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

# Every host gets the same production settings; the balancer terminates "TLS" (X-Forwarded-Proto).
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "deploy-test-only-not-secret",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "ORCHESTRATOR_LOG_LEVEL": "WARNING",
}
DAPHNE = [sys.executable, "-m", "daphne", "--proxy-headers", "-b", "127.0.0.1"]
MEMBERS = 9
SWARM = {
    "kind": "swarm",
    "name": "scale-out",
    "max_concurrency": 4,
    "tasks": [{"task": "examples.sleep", "kwargs": {"seconds": 0.4, "step": 0.1}} for _ in range(MEMBERS)]
    # A retry one second later: RQ's scheduler has to enqueue it.
    + [{"task": "examples.fail", "kwargs": {"times": 1}, "retries": 1, "retry_backoff": 1}],
}


@dataclass
class Site:
    """The running layout: the web servers' ports, the balancer in front, the workers' pool."""

    web_ports: list[int]
    balancer: Balancer
    workers: Workers
    worker_names: list[str]
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.logs.glob("*.log"))
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server on port {port} exited\n{log.read_text(errors='replace')}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listened on port {port} within {timeout:g} s\n{log.read_text(errors='replace')}")


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, env=env, cwd=settings.BASE_DIR, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.fixture
def site(transactional_db, redis_conn, tmp_path) -> Iterator[Site]:
    env = {**subprocess_env(), **PRODUCTION}
    logs = tmp_path / "hosts"
    logs.mkdir()
    ports = [free_port(), free_port()]
    workers = Workers(logs, env=env)
    names = [f"deploy-worker-{i}" for i in (1, 2)]
    site = Site(ports, Balancer(ports), workers, names, logs)
    try:
        # Started side by side: on a loaded machine each process needs seconds to import Django.
        site.processes = [
            spawn([*DAPHNE, "-p", str(port), "orchestrator_site.asgi:application"], logs / f"web-{i}.log", env)
            for i, port in enumerate(ports, 1)
        ]
        workers.running += [workers.spawn("--name", name, "--with-scheduler") for name in names]
        site.processes.append(spawn([sys.executable, "manage.py", "rqcron", "tasks_app.cron"], logs / "cron.log", env))
        for i, (port, process) in enumerate(zip(ports, site.processes, strict=False), 1):
            wait_for_port(port, process, logs / f"web-{i}.log", timeout=90)
        workers.drain(lambda: set(names) <= workers.registered(), timeout=90)
        site.balancer.start()
        yield site
    finally:
        site.balancer.stop()
        workers.stop()
        for process in site.processes:
            kill_tree(process)


# A client of the balancer (http.client: no redirects followed, cookies kept by hand) ----------


@dataclass
class Browser:
    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"  # what the browser sees: the balancer's TLS address

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, port: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = HTTPConnection("127.0.0.1", port or self.port, timeout=30)
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            connection.request(
                method, path, body=body, headers={**({"Cookie": cookie} if cookie else {}), **(headers or {})}
            )
            response = connection.getresponse()
            for value in response.headers.get_all("Set-Cookie") or []:
                self.cookies.update({k: m.value for k, m in SimpleCookie(value).items()})
            return response.status, dict(response.headers), response.read()
        finally:
            connection.close()

    def ajax_headers(self) -> dict[str, str]:
        """What the web UI's fetch() sends with the session: the CSRF token and the page's origin."""
        return {"Content-Type": "application/json", "X-CSRFToken": self.cookies["csrftoken"], "Origin": self.origin}

    def sign_in(self, username: str, password: str) -> None:
        status, _, page = self.request("GET", "/accounts/login/")
        assert status == 200, page[:500]
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
        status, headers, page = self.request(
            "POST",
            "/accounts/login/",
            form.encode(),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": self.origin,
                "Referer": f"{self.origin}/accounts/login/",
            },
        )
        assert (status, headers.get("Location")) == (302, "/"), page[:500]
        assert "sessionid" in self.cookies


def watch_until_complete(site: Site, conn, task_id_of, timeout: float = 90) -> list[dict]:
    """Messages until the swarm's `task_complete` (its id known only once the API has answered)."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while not any(m.get("type") == "task_complete" and m.get("task_id") == task_id_of() for m in messages):
        left = deadline - time.monotonic()
        assert left > 0, f"no task_complete within {timeout:g} s; last messages: {messages[-5:]}\n{site.output()}"
        try:
            messages.append(json.loads(conn.recv(timeout=min(left, 5))))
        except TimeoutError:
            continue
    return messages


def test_a_workflow_submitted_on_one_server_is_watched_live_on_the_other_and_spreads_over_both_workers(site):
    owner = make_user("owner")
    browser = Browser(site.balancer.port)
    check_health_and_static(site, browser)
    browser.sign_in("owner", PASSWORD)
    created: dict[str, int] = {}
    with connect(
        f"ws://127.0.0.1:{site.balancer.port}/ws/tasks/",
        origin=browser.origin,
        proxy=None,
        open_timeout=30,
        additional_headers={"Cookie": f"sessionid={browser.cookies['sessionid']}"},
    ) as conn:
        snapshot = json.loads(conn.recv(timeout=30))
        assert snapshot["type"] == "snapshot" and snapshot["tasks"] == []
        status, _, body = browser.request("POST", "/api/tasks/", json.dumps(SWARM).encode(), browser.ajax_headers())
        assert status == 201, body[:500]
        created["id"] = json.loads(body)["id"]
        messages = watch_until_complete(site, conn, lambda: created.get("id"))

    swarm_id = created["id"]
    route = {(r.method, r.path, r.upgrade): r.backend for r in site.balancer.routes}
    # No sticky sessions: the sign-in form, its POST, the socket and the submit met different servers.
    assert route["GET", "/accounts/login/", False] != route["POST", "/accounts/login/", False]
    assert route["GET", "/ws/tasks/", True] != route["POST", "/api/tasks/", False], site.balancer.routes
    # The server that took the POST sent "created" through Redis; the workers sent the rest.
    mine = [m for m in messages if m.get("task_id") == swarm_id]
    assert {"created", "completed"} <= {m.get("event") for m in mine if m["type"] == "status"}
    assert next(m for m in mine if m["type"] == "task_complete")["result"] == [0.4] * MEMBERS + ["ok"]
    member_ids = set(Signature.objects.filter(parent_id=swarm_id).values_list("pk", flat=True))
    assert {m["task_id"] for m in messages if m["type"] == "progress"} & member_ids

    runs = Run.objects.filter(signature__parent_id=swarm_id)
    assert set(runs.values_list("worker_name", flat=True)) == set(site.worker_names)
    assert runs.filter(signature__task_name="examples.fail").count() == 2  # the delayed retry ran
    assert Signature.objects.get(pk=swarm_id).owner == owner
    status, _, body = browser.request("GET", f"/api/tasks/{swarm_id}/")
    assert status == 200 and json.loads(body)["status"] == "completed"
    check_schedulers(site)


def check_health_and_static(site: Site, browser: Browser) -> None:
    for port in site.web_ports:
        # Straight to a server, as a balancer's health check does: plain HTTP, no session.
        status, _, body = browser.request("GET", "/healthz", port=port)
        assert (status, json.loads(body)) == (200, {"status": "ok", "database": "ok", "redis": "ok"})
        # The pages are HTTPS only: redirected unless the proxy's header says the client used it.
        assert browser.request("GET", "/accounts/login/", port=port)[0] == 301
        assert browser.request("GET", "/accounts/login/", port=port, headers={"X-Forwarded-Proto": "https"})[0] == 200
    status, headers, body = browser.request("GET", "/static/tasks_app/app.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and body


def check_schedulers(site: Site) -> None:
    """Both workers run --with-scheduler: each queue's lock has one holder (the delayed retry above
    needed one); the single rqcron enqueued the reconcile pass once and a worker ran it."""
    connection = redis.Redis.from_url(settings.REDIS_URL)
    holders = [connection.get(f"rq:scheduler-lock:{queue}") for queue in settings.ORCHESTRATOR_QUEUES]
    assert None not in holders, holders

    def reconciled() -> bool:
        ids = get_cron_job_ids("tasks_app.jobs.reconcile", connection)
        return bool(ids) and Job.fetch(ids[0], connection=connection).get_status() == "finished"

    site.workers.drain(reconciled, timeout=60)
    assert len(get_cron_job_ids("tasks_app.jobs.reconcile", connection)) == 1
