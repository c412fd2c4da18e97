"""The workers and queues view (CONTRACT.md §8): `/api/workers/`, `/api/queues/` and the page `/workers/`,
for staff only. The first tests write heartbeat rows and run rows as workers and the reconciler
would; the end-to-end ones ask about real `manage.py worker` processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tasks_app.models import Run, RunStatus, Signature, Status, WorkerProcess
from tasks_app.services import execution, reconcile, transport
from tests.api_helpers import fresh, set_status


def staff_page(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped): what a killed worker leaves."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def heartbeat_row(name: str, *, pid: int, age: float = 0, host: str = "") -> WorkerProcess:
    at = timezone.now() - timedelta(seconds=age)
    return WorkerProcess.objects.create(name=name, hostname=host or socket.gethostname(), pid=pid, started_at=at,
                                        last_heartbeat=at)


def running_on(owner, worker: str, seconds: float = 60) -> Signature:
    """A task whose run a worker has claimed, as the claim writes it."""
    sig = execution.submit({"task": "examples.sleep", "kwargs": {"seconds": seconds}}, owner=owner)
    set_status(sig, Status.RUNNING, started_at=timezone.now())
    Run.objects.filter(signature=sig).update(status=RunStatus.RUNNING, worker_name=worker, started_at=timezone.now())
    return sig


def by_name(answer: list[dict]) -> dict[str, dict]:
    return {worker["name"]: worker for worker in answer}


# Who may look --------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/workers/", "/api/queues/"])
def test_the_api_answers_staff_only(path, api_client, owner_client, staff_client, redis_conn):
    assert api_client.get(path).status_code == 403
    assert owner_client.get(path).status_code == 403
    response = staff_client.get(path)
    assert response.status_code == 200
    assert isinstance(response.json(), list)


@pytest.mark.django_db
def test_the_page_is_for_staff_and_only_staff_see_it_in_the_nav(owner, staff, redis_conn):
    anonymous = Client().get("/workers/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/?next=/workers/")
    assert staff_page(owner).get("/workers/").status_code == 403
    assert 'href="/workers/"' not in staff_page(owner).get("/").content.decode()

    page = staff_page(staff).get("/workers/")
    assert page.status_code == 200
    assert 'href="/workers/" aria-current="page">Workers</a>' in page.content.decode()


# What the API says -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_live_worker_shows_its_current_tasks_and_a_dead_one_what_auto_resume_did(owner, staff_client, redis_conn):
    heartbeat_row("alive-worker", pid=os.getpid(), age=2)
    heartbeat_row("killed-worker", pid=dead_pid(), age=3)  # fresh heartbeat, but its process is gone
    current = running_on(owner, "alive-worker")
    stranded = running_on(owner, "killed-worker")

    before = by_name(staff_client.get("/api/workers/").json())
    alive, lost = before["alive-worker"], before["killed-worker"]
    assert alive["state"] != "lost" and alive["pid"] == os.getpid() and alive["host"] == socket.gethostname()
    assert [(t["id"], t["run"], t["url"]) for t in alive["current_tasks"]] == [(current.pk, 1, f"/tasks/{current.pk}/")]
    assert alive["slots_in_use"] == 1 and alive["auto_resume"] == []
    assert 1.5 < alive["heartbeat_age"] < 30
    assert lost["state"] == "lost" and lost["current_tasks"] == [] and lost["slots_in_use"] == 0
    assert [(i["id"], i["outcome"]) for i in lost["auto_resume"]] == [(stranded.pk, "waiting")]

    reconcile.run_pass(trigger="test")

    after = by_name(staff_client.get("/api/workers/").json())
    [item] = after["killed-worker"]["auto_resume"]
    assert (item["id"], item["run"], item["outcome"]) == (stranded.pk, 1, "resumed")
    assert item["next_run"] == {"number": 2, "status": "queued", "worker": ""}
    assert "resumed as run 2: queued" in item["detail"]
    assert fresh(stranded).status == Status.QUEUED
    assert [t["id"] for t in after["alive-worker"]["current_tasks"]] == [current.pk]
    assert list(after) == ["alive-worker", "killed-worker"]  # the live first


@pytest.mark.django_db
def test_a_task_lost_too_often_shows_that_auto_resume_gave_up(owner, staff_client, redis_conn, settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_LOST_RUNS": 1}
    heartbeat_row("crashing-worker", pid=dead_pid())
    sig = running_on(owner, "crashing-worker")

    reconcile.run_pass(trigger="test")

    [item] = by_name(staff_client.get("/api/workers/").json())["crashing-worker"]["auto_resume"]
    assert (item["id"], item["outcome"], item["next_run"]) == (sig.pk, "gave_up", None)
    assert fresh(sig).status == Status.FAILED


@pytest.mark.django_db
def test_a_worker_whose_heartbeat_stopped_is_lost_and_an_old_loss_is_no_longer_listed(staff_client, redis_conn,
                                                                                      settings):
    timeout = settings.ORCHESTRATOR["HEARTBEAT_TIMEOUT"]
    heartbeat_row("elsewhere", pid=1, age=timeout + 5, host="another-host")
    heartbeat_row("long-gone", pid=dead_pid(), age=3 * 86400)

    answer = by_name(staff_client.get("/api/workers/").json())

    assert set(answer) == {"elsewhere"}
    assert answer["elsewhere"]["state"] == "lost" and answer["elsewhere"]["host"] == "another-host"
    assert answer["elsewhere"]["heartbeat_age"] >= timeout + 5


@pytest.mark.django_db
def test_queue_depths_by_priority_with_the_oldest_jobs_age(staff_client, redis_conn):
    low = transport.get_queue("orchestrator-low")
    first = low.enqueue("tasks_app.jobs.execute", 1, 1)
    low.enqueue("tasks_app.jobs.execute", 2, 1)
    a_while_ago = timezone.now() - timedelta(seconds=90)
    redis_conn.hset(first.key, "enqueued_at", a_while_ago.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    answer = {q["name"]: q for q in staff_client.get("/api/queues/").json()}

    assert list(answer) == transport.queue_names()
    assert answer["orchestrator-low"]["priority"] == "low" and answer["orchestrator-low"]["depth"] == 2
    assert 89 <= answer["orchestrator-low"]["oldest_age"] < 120
    assert answer["orchestrator-high"] == {"name": "orchestrator-high", "priority": "high", "depth": 0,
                                           "oldest_age": None, "started": 0, "scheduled": 0, "failed": 0}
    assert answer["orchestrator-webhooks"]["priority"] is None


@pytest.mark.django_db
def test_with_redis_away_the_queues_answer_503_and_the_workers_come_from_their_heartbeats(staff, staff_client,
                                                                                          settings):
    heartbeat_row("row-only", pid=os.getpid())
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
        settings.RQ_QUEUES = {name: {**conf, "URL": url} for name, conf in settings.RQ_QUEUES.items()}

        queues = staff_client.get("/api/queues/")
        workers = staff_client.get("/api/workers/")
        page = staff_page(staff).get("/workers/")
    finally:
        closed.close()

    assert queues.status_code == 503 and queues.json()["code"] == "redis_unavailable"
    assert workers.status_code == 200
    assert [(w["name"], w["concurrency"], w["finished_jobs"]) for w in workers.json()] == [("row-only", None, None)]
    assert page.status_code == 200 and "Redis is unreachable" in page.content.decode()


# End to end: real worker processes -------------------------------------------------------------------


def api_workers(client) -> dict[str, dict]:
    response = client.get("/api/workers/")
    assert response.status_code == 200
    return by_name(response.json())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_real_workers_are_listed_with_pid_host_concurrency_and_their_running_tasks(owner, staff_client, workers):
    [slots] = workers.start(1, args=["--concurrency", "4"])
    [horse] = workers.start(1, args=["--concurrency", "1"])
    done = execution.submit({"task": "examples.noop"}, owner=owner)
    workers.drain(lambda: fresh(done).status == Status.COMPLETED)
    sleepers = [execution.submit({"task": "examples.async_sleep", "kwargs": {"seconds": 60}}, owner=owner)
                for _ in range(2)]
    workers.drain(lambda: Run.objects.filter(signature__in=sleepers, status=RunStatus.RUNNING).count() == 2)

    answer = workers.drain(lambda: (a := api_workers(staff_client)) and len(a) == 2 and a)
    by_pid = {worker["pid"]: worker for worker in answer.values()}
    assert set(by_pid) == {slots.pid, horse.pid}
    assert {w["host"] for w in answer.values()} == {socket.gethostname()}
    assert (by_pid[slots.pid]["concurrency"], by_pid[horse.pid]["concurrency"]) == (4, 1)
    assert all(w["state"] in ("idle", "busy") for w in answer.values())
    running = {t["id"]: name for name, w in answer.items() for t in w["current_tasks"]}
    assert set(running) == {s.pk for s in sleepers}
    for sleeper in sleepers:
        assert running[sleeper.pk] == Run.objects.get(signature=sleeper, status=RunStatus.RUNNING).worker_name
    assert sum(w["slots_in_use"] for w in answer.values()) == 2
    assert sum(w["finished_jobs"] for w in answer.values()) >= 1  # the noop's job
    assert all(0 <= w["heartbeat_age"] < 30 for w in answer.values())
