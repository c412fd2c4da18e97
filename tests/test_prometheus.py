"""``/metrics`` for Prometheus: who may scrape it, and what the exposition text says about signatures,
queues, workers and run durations (read from the database and Redis at scrape time)."""

from __future__ import annotations

from datetime import timedelta

import django_rq
import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from tasks_app.models import Run, RunStatus, WorkerProcess
from tasks_app.services import prometheus
from tests.api_helpers import ECHO, make

pytestmark = pytest.mark.django_db
TOKEN = "scrape-me-0123456789"


@pytest.fixture(autouse=True)
def metrics_token(settings) -> None:
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "METRICS_TOKEN": TOKEN, "METRICS_WINDOW": 3600}


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` of an exposition text, parsed by the client library's parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: Client | None = None, **headers: str) -> dict[tuple[str, frozenset], float]:
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


# Access ----------------------------------------------------------------------------------------------


def test_the_anonymous_and_a_wrong_token_are_asked_to_authenticate():
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer ünïcode"}):
        response = Client().get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_signed_in_user_who_is_not_staff_is_refused(owner):
    assert signed_in(owner).get("/metrics").status_code == 403


def test_staff_and_the_bearer_token_may_scrape(staff):
    assert scrape(signed_in(staff))
    assert scrape(Authorization=f"Bearer {TOKEN}")


def test_without_a_configured_token_no_bearer_is_accepted(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "METRICS_TOKEN": ""}
    assert Client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


# What it says ----------------------------------------------------------------------------------------


def test_signatures_are_counted_by_kind_and_status(owner, stranger):
    make(owner, ECHO)
    make(stranger, ECHO)
    make(owner, {"kind": "chain", "steps": [ECHO, {"task": "examples.double"}]})
    found = scrape(Authorization=f"Bearer {TOKEN}")
    assert found[("orchestrator_signatures", labels(kind="task", status="pending"))] == 4
    assert found[("orchestrator_signatures", labels(kind="chain", status="pending"))] == 1
    assert found[("orchestrator_signatures", labels(kind="swarm", status="failed"))] == 0


def test_queue_depth_per_rq_queue(redis_conn):
    django_rq.get_queue("orchestrator-low").enqueue("tasks_app.jobs.execute", 1, 1)
    found = scrape(Authorization=f"Bearer {TOKEN}")
    assert found[("orchestrator_redis_up", frozenset())] == 1
    assert found[("orchestrator_queue_jobs", labels(queue="orchestrator-low"))] == 1
    assert found[("orchestrator_queue_jobs", labels(queue="orchestrator-high"))] == 0


def test_an_unreachable_redis_is_reported_not_fatal(monkeypatch):
    def unreachable(name: str):
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(prometheus.transport, "get_queue", unreachable)
    found = scrape(Authorization=f"Bearer {TOKEN}")
    assert found[("orchestrator_redis_up", frozenset())] == 0
    assert not any(name == "orchestrator_queue_jobs" for name, _ in found)


def test_workers_alive_are_those_with_a_fresh_heartbeat(settings):
    now = timezone.now()
    stale = now - timedelta(seconds=settings.ORCHESTRATOR["HEARTBEAT_TIMEOUT"] + 5)
    WorkerProcess.objects.create(name="w1", hostname="h", pid=1, last_heartbeat=now)
    WorkerProcess.objects.create(name="w2", hostname="h", pid=2, last_heartbeat=stale)
    found = scrape(Authorization=f"Bearer {TOKEN}")
    assert found[("orchestrator_workers_alive", frozenset())] == 1
    assert found[("orchestrator_workers_registered", frozenset())] == 2


def finished_run(sig, number: int, seconds: float, *, status: str = RunStatus.COMPLETED, ago: float = 60) -> Run:
    ended = timezone.now() - timedelta(seconds=ago)
    return Run.objects.create(
        signature=sig, number=number, status=status, started_at=ended - timedelta(seconds=seconds), finished_at=ended
    )


def test_durations_of_recent_runs_per_task(owner):
    sig = make(owner, ECHO)
    for n in range(1, 11):
        finished_run(sig, n, seconds=n)
    finished_run(sig, 11, seconds=1, status=RunStatus.FAILED)
    finished_run(sig, 12, seconds=500, ago=7200)  # before the window: not counted
    found = scrape(Authorization=f"Bearer {TOKEN}")
    echo = "examples.echo"
    assert found[("orchestrator_task_runs_finished", labels(task=echo, status="completed"))] == 10
    assert found[("orchestrator_task_runs_finished", labels(task=echo, status="failed"))] == 1
    assert found[("orchestrator_task_duration_seconds", labels(task=echo, quantile="0.5"))] == 5
    assert found[("orchestrator_task_duration_seconds", labels(task=echo, quantile="0.95"))] == 10


def test_every_scrape_reads_the_current_state(owner):
    first = scrape(Authorization=f"Bearer {TOKEN}")
    make(owner, ECHO)
    second = scrape(Authorization=f"Bearer {TOKEN}")
    key = ("orchestrator_signatures", labels(kind="task", status="pending"))
    assert (first[key], second[key]) == (0, 1)
