"""`manage.py orchestrate`: which processes it runs, how it revives them, and that a stop leaves none."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from rq.cron import get_cron_job_ids
from rq.job import Job

from tasks_app.embedded_redis import EmbeddedRedis, free_port
from tasks_app.management.commands.orchestrate import Child, Supervisor, build_children
from tests.live_server import wait_for_http
from tests.workers import gone, subprocess_env

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
DEAF = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"]
# A parent that leaves behind a child in its own process group that ignores SIGTERM, as an RQ
# worker killed mid-job leaves its work horse.
HORSE = "import os, signal, time; os.setpgrp(); signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
SPAWN_HORSE = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {HORSE!r}]); time.sleep(120)"
WORKER_WITH_HORSE = [sys.executable, "-c", SPAWN_HORSE]


@pytest.fixture
def messages() -> list[str]:
    return []


@pytest.fixture
def supervisor(messages):
    children = [Child("web", SLEEPER, essential=True), Child("worker-1", SLEEPER), Child("worker-2", DEAF)]
    supervisor = Supervisor(children, log=messages.append, min_uptime=0)
    yield supervisor
    supervisor.stop(grace=0, kill_after=0.2)


def child(supervisor: Supervisor, name: str) -> Child:
    return next(c for c in supervisor.children if c.name == name)


def family_of(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def test_one_worker_runs_the_scheduler_and_the_cron_scheduler_runs_the_periodic_jobs():
    children = build_children(host="127.0.0.1", port=8123, workers=3, web=True)

    assert [c.name for c in children] == ["web", "worker-1", "worker-2", "worker-3", "cron"]
    assert [c.name for c in children if "--with-scheduler" in c.argv] == ["worker-1"]
    assert children[0].essential and not any(c.essential for c in children[1:])
    assert children[0].argv[1:] == [
        "-m", "daphne", "-b", "127.0.0.1", "-p", "8123", "orchestrator_site.asgi:application"
    ]
    assert children[-1].argv[-4:] == ["rqcron", "tasks_app.cron", "--logging-level", "WARNING"]
    assert "web" not in [c.name for c in build_children(host="127.0.0.1", port=1, workers=1, web=False)]


def test_the_cron_config_enqueues_reconcile_every_minute_purge_every_five_and_schedules_every_tick():
    from django_rq.cron import DjangoCronScheduler

    scheduler = DjangoCronScheduler()
    scheduler.load_config_from_file("tasks_app.cron")

    assert {(job.func_name, job.interval, job.queue_name) for job in scheduler.get_jobs()} == {
        ("tasks_app.jobs.reconcile", 60, "orchestrator-high"),
        ("tasks_app.jobs.purge", 300, "orchestrator-low"),
        ("tasks_app.jobs.fire_schedules", 5, "orchestrator-high"),  # ORCHESTRATOR_SCHEDULE_TICK
    }


def test_orchestrate_refuses_a_web_port_that_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()

        with pytest.raises(CommandError, match="already in use"):
            call_command("orchestrate", port=taken.getsockname()[1])


def test_a_dead_worker_is_started_again(supervisor, messages):
    supervisor.start()
    worker = child(supervisor, "worker-1")
    old_pid = worker.process.pid
    worker.process.kill()
    worker.process.wait()

    assert supervisor.check() is True

    assert worker.alive and worker.process.pid != old_pid
    assert worker.restarts == 1
    assert any("worker-1 exited" in message for message in messages)


def test_a_worker_that_dies_right_after_starting_waits_longer_each_time(supervisor):
    supervisor.min_uptime = 60
    supervisor.start()
    worker = child(supervisor, "worker-1")
    worker.process.kill()
    worker.process.wait()

    supervisor.check()

    assert not worker.alive
    assert worker.quick_deaths == 1
    assert worker.next_start - time.monotonic() == pytest.approx(1, abs=0.2)


def test_a_dead_web_server_stops_the_system(supervisor):
    supervisor.start()
    web = child(supervisor, "web")
    web.process.kill()
    web.process.wait()

    assert supervisor.check() is False
    assert supervisor.failure.startswith("web exited")


def test_a_stop_request_ends_the_loop(supervisor):
    supervisor.start()
    supervisor.request_stop(signal.SIGINT, None)

    supervisor.run(interval=0.01)

    assert all(c.alive for c in supervisor.children)


def test_stop_leaves_no_process_behind_even_those_that_ignore_sigterm(messages):
    supervisor = Supervisor([Child("worker-1", WORKER_WITH_HORSE), Child("worker-2", DEAF)], log=messages.append)
    supervisor.start()
    horse_parent = child(supervisor, "worker-1").process.pid
    deadline = time.monotonic() + 10
    while not psutil.Process(horse_parent).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    processes = [p for c in supervisor.children for p in family_of(c.process.pid)]
    assert len(processes) == 3

    supervisor.stop(grace=0.2, kill_after=0.5)

    assert all(gone(p.pid) for p in processes)


def test_the_embedded_redis_is_started_first_and_revived_on_the_same_port(tmp_path, messages):
    supervisor = Supervisor([], redis=EmbeddedRedis(tmp_path), log=messages.append)
    supervisor.start()
    url = supervisor.env["REDIS_URL"]
    supervisor.redis.process.kill()
    supervisor.redis.process.wait()

    supervisor.check()

    assert supervisor.redis.url == url and supervisor.redis.ping()
    supervisor.stop()
    assert not supervisor.redis.is_running()


def periodic_job_finished(connection: redis.Redis, name: str) -> bool:
    """Whether the latest job the cron scheduler enqueued for `name` has run; fails if it failed."""
    ids = get_cron_job_ids(name, connection)
    if not ids:
        return False
    job = Job.fetch(ids[0], connection=connection)
    assert job.get_status() != "failed", job.latest_result().exc_string
    return job.get_status() == "finished"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_orchestrate_serves_the_site_runs_periodic_jobs_and_ctrl_c_stops_every_process(tmp_path):
    port = free_port()
    env = {**subprocess_env(), "ORCHESTRATOR_VAR_DIR": str(tmp_path)}
    del env["REDIS_URL"]  # orchestrate starts its embedded Redis and publishes it under the var dir
    log = tmp_path / "orchestrate.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "orchestrate", "--port", str(port), "--workers", "2", "--grace", "1"],
            cwd=settings.BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/admin/login/", process, log) == 200
        connection = redis.Redis.from_url((tmp_path / "redis.url").read_text().strip())
        deadline = time.monotonic() + 60
        while not all(periodic_job_finished(connection, f"tasks_app.jobs.{name}") for name in ("reconcile", "purge")):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        family = family_of(process.pid)
        commands = " ".join(" ".join(p.cmdline()) for p in family)
        assert all(part in commands for part in ("daphne", "redis-server", "rqcron", "worker --with-scheduler"))

        process.send_signal(signal.SIGINT)

        assert process.wait(timeout=30) == 0, log.read_text()
        assert all(gone(p.pid) for p in family)
        assert not (tmp_path / "redis.url").exists()
        assert "Orchestrator is running" in log.read_text()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
