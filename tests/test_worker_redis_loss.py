"""A worker survives Redis going away at any point of its loop, not only while it waits for work.

Each test runs a real forking OrchestratorWorker in this process against a redis-server of its own,
stops that server at one chosen moment of the loop, starts it again (empty, as a restart without
persistence) a moment later, enqueues one job, and expects the same worker to run it and return.
"""

from __future__ import annotations

import threading

import pytest
import redis
from rq import Queue

from tasks_app.embedded_redis import EmbeddedRedis
from tasks_app.worker import OrchestratorWorker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture
def server(tmp_path):
    embedded = EmbeddedRedis(tmp_path / "redis")
    embedded.start()
    yield embedded
    embedded.stop()


@pytest.fixture
def outage(server):
    outage = Outage(server)
    yield outage
    outage.done.set()


class Outage:
    """Stops `server` when triggered; a thread starts it again after `seconds` and enqueues a job.

    The thread lives until the test ends: the server dies with the thread that started it (PDEATHSIG).
    """

    def __init__(self, server: EmbeddedRedis, seconds: float = 1.5):
        self.server = server
        self.seconds = seconds
        self.triggered = False
        self.restarted = threading.Event()
        self.done = threading.Event()

    def trigger(self) -> None:
        if self.triggered:
            return
        self.triggered = True
        self.server._terminate()
        threading.Thread(target=self._back, daemon=True).start()

    def _back(self) -> None:
        threading.Event().wait(self.seconds)
        self.server._launch()
        connection = redis.Redis.from_url(self.server.url)
        Queue("default", connection=connection).enqueue("os.getpid")
        connection.close()
        self.restarted.set()
        self.done.wait(120)


class CountingWorker(OrchestratorWorker):
    jobs_started = 0

    def execute_job(self, job, queue):
        self.jobs_started += 1
        return super().execute_job(job, queue)


def run_worker(server: EmbeddedRedis, worker_class, *first_job) -> int:
    """Enqueue `first_job`, run a worker until it has run two jobs; returns how many it started."""
    connection = redis.Redis.from_url(server.url)
    queue = Queue("default", connection=connection)
    queue.enqueue(*first_job)
    worker = worker_class([queue], connection=connection, worker_ttl=30, job_monitoring_interval=5)
    worker.work(max_jobs=2, logging_level="WARNING")
    return worker.jobs_started


@pytest.mark.parametrize("moment", ["check_for_suspension", "heartbeat", "run_maintenance_tasks"])
def test_redis_lost_between_two_steps_of_the_loop(server, outage, moment):
    """Redis goes away just after `moment` succeeded: the next Redis call of the loop meets the outage."""

    def after_the_first_job(worker) -> bool:
        return worker.jobs_started == 1 and worker.get_state() == "idle"

    class Worker(CountingWorker):
        pass

    original = getattr(CountingWorker, moment)

    def then_lose_redis(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if after_the_first_job(self):
            outage.trigger()
        return result

    setattr(Worker, moment, then_lose_redis)
    if moment == "run_maintenance_tasks":
        Worker.should_run_maintenance_tasks = property(lambda self: after_the_first_job(self) and not outage.triggered)

    ran = run_worker(server, Worker, "os.getpid")

    assert outage.triggered and outage.restarted.is_set()
    assert ran == 2, f"the worker ended without running the job enqueued after Redis came back ({moment})"


def test_redis_lost_while_the_horse_runs(server, outage):
    """The outage starts while a job runs; the worker waits the horse out and takes the next job."""
    threading.Timer(0.6, outage.trigger).start()

    ran = run_worker(server, CountingWorker, "time.sleep", 1.0)

    assert outage.restarted.is_set()
    assert ran == 2


def test_a_worker_stopped_while_redis_is_away_ends_cleanly(server):
    """Its death cannot be written to Redis (the key expires by itself); its heartbeat row goes."""
    from tasks_app.models import WorkerProcess

    connection = redis.Redis.from_url(server.url)
    worker = OrchestratorWorker([Queue("default", connection=connection)], connection=connection)
    worker.register_birth()
    worker.subscribe()
    assert WorkerProcess.objects.filter(name=worker.name).exists()
    server._terminate()

    worker.teardown()

    assert not WorkerProcess.objects.filter(name=worker.name).exists()
