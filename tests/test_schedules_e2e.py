"""Schedules end to end: two real schedulers (`manage.py rqcron tasks_app.cron`, as `orchestrate`
runs it) enqueue the firing job every second, two real workers run those jobs side by side against
the test database; each tick gets exactly one run, also across a scheduler's restart. Pause stops
the ticks, run now runs at once, and max_active holds a schedule back while its run is still going."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import django_rq
import pytest
from django.conf import settings
from rq.cron import CronScheduler, get_cron_job_ids

from tasks_app.models import TERMINAL, Schedule, Signature, Status
from tasks_app.services import schedules
from tests.workers import MANAGE, Workers, kill_tree, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ECHO = {"task": "examples.echo", "kwargs": {"value": 7}}
FIRE = "tasks_app.jobs.fire_schedules"


class Clock:
    """Real RQ cron schedulers and workers with a one-second schedule tick."""

    def __init__(self, tmp_path):
        self.env = {**subprocess_env(), "ORCHESTRATOR_SCHEDULE_TICK": "1"}
        (tmp_path / "workers").mkdir()
        self.workers = Workers(tmp_path / "workers", env=self.env)
        self.log_dir = tmp_path
        self.schedulers: list[subprocess.Popen] = []

    def start_scheduler(self) -> subprocess.Popen:
        argv = [sys.executable, str(MANAGE), "rqcron", "tasks_app.cron"]
        with (self.log_dir / f"cron-{len(self.schedulers) + 1}.log").open("wb") as log:
            process = subprocess.Popen(argv, env=self.env, cwd=settings.BASE_DIR, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT)
        self.schedulers.append(process)
        return process

    def registered_schedulers(self) -> int:
        return len(CronScheduler.all(django_rq.get_connection("orchestrator-high")))

    def stop_schedulers(self) -> None:
        for process in self.schedulers:
            kill_tree(process)
        self.schedulers = []

    def stop(self) -> None:
        self.stop_schedulers()
        self.workers.stop()


@pytest.fixture
def clock(transactional_db, redis_conn, tmp_path) -> Iterator[Clock]:
    running = Clock(tmp_path)
    yield running
    running.stop()


def runs_of(schedule: Schedule) -> list[Signature]:
    return list(Signature.objects.filter(schedule=schedule).order_by("scheduled_for", "pk"))


def test_two_schedulers_write_exactly_one_run_per_tick(owner, clock):
    clock.workers.start(2)
    for _ in range(2):
        clock.start_scheduler()
    clock.workers.drain(lambda: clock.registered_schedulers() >= 2, timeout=90)  # Django starts slowly on a busy host
    schedule = schedules.create({"name": "every 2 s", "spec": ECHO, "interval": 2}, owner=owner)
    started = time.monotonic()
    def completed(n: int):
        return lambda: len([r for r in runs_of(schedule) if r.status == Status.COMPLETED]) >= n

    clock.workers.drain(completed(3), timeout=60)
    kill_tree(clock.schedulers.pop(0))  # a scheduler dies and another one starts: the ticks go on, once each
    clock.start_scheduler()
    clock.workers.drain(completed(7), timeout=60)
    elapsed = time.monotonic() - started
    clock.stop_schedulers()
    clock.workers.drain(lambda: not Signature.objects.exclude(status__in=TERMINAL).exists(), timeout=30)

    runs = runs_of(schedule)
    ticks = [r.scheduled_for for r in runs]
    assert len(ticks) == len(set(ticks)) >= 7  # one run per tick
    assert all(b - a == timedelta(seconds=2) for a, b in zip(ticks, ticks[1:], strict=False))  # and no tick left out
    assert all(r.status == Status.COMPLETED and r.result == 7 and r.owner == owner for r in runs)
    # Two schedulers at a time were enqueuing the firing job, about twice a second between them.
    fired = len(get_cron_job_ids(FIRE, django_rq.get_connection("orchestrator-high")))
    assert fired > elapsed + 2, (fired, elapsed)


def test_pause_stops_the_ticks_resume_and_run_now_go_on(owner, owner_client, clock):
    clock.workers.start(1)
    clock.start_scheduler()
    created = owner_client.post("/api/schedules/", {"name": "every s", "spec": ECHO, "interval": 1}, format="json")
    url = f"/api/schedules/{created.json()['id']}/"
    schedule = Schedule.objects.get()
    clock.workers.drain(lambda: len(runs_of(schedule)) >= 2, timeout=60)

    assert owner_client.post(url + "pause").json()["paused"] is True
    time.sleep(2)  # a firing job already running when the pause landed may still write its tick's run
    count = len(runs_of(schedule))
    time.sleep(4)  # four ticks' worth of time, with the scheduler and the worker still running
    assert len(runs_of(schedule)) == count

    run = owner_client.post(url + "run").json()
    clock.workers.drain(lambda: Signature.objects.get(pk=run["id"]).status == Status.COMPLETED, timeout=30)
    assert Signature.objects.get(pk=run["id"]).scheduled_for is None
    assert len(runs_of(schedule)) == count + 1  # run now, and nothing else, while paused

    owner_client.post(url + "resume")
    clock.workers.drain(lambda: len(runs_of(schedule)) >= count + 3, timeout=60)
    listed = owner_client.get(url + "runs").json()["results"]
    assert listed[-1]["status"] == Status.COMPLETED and all(r["schedule"] == schedule.pk for r in listed)


def test_max_active_skips_ticks_while_a_run_is_still_going(owner, clock):
    clock.workers.start(2)
    clock.start_scheduler()
    schedule = schedules.create({"name": "slow", "interval": 1, "max_active": 1,
                                 "spec": {"task": "examples.sleep", "kwargs": {"seconds": 2.5, "step": 0.5}}},
                                owner=owner)
    clock.workers.drain(lambda: Schedule.objects.get().skipped_ticks >= 3 and len(runs_of(schedule)) >= 2,
                        timeout=60)
    clock.stop_schedulers()
    clock.workers.drain(lambda: not Signature.objects.exclude(status__in=TERMINAL).exists(), timeout=30)

    runs = sorted(runs_of(schedule), key=lambda r: r.started_at)
    assert all(r.status == Status.COMPLETED for r in runs)
    # Never two at once, though two workers were free: each run was created after the previous ended.
    assert all(later.created_at >= earlier.finished_at for earlier, later in zip(runs, runs[1:], strict=False))
