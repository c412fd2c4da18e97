"""Operational hardening (issue 17): the WebSocket Origin check compares scheme, host and port; var/
is private; the embedded Redis needs its password; RQ jobs are JSON; staff reach others' tasks through
Django permissions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import psutil
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import DefaultSerializer, JSONSerializer

from orchestrator_site.asgi import application
from tasks_app.embedded_redis import EmbeddedRedis
from tasks_app.models import Status
from tasks_app.services import transport
from tests.api_helpers import ECHO, make
from tests.conftest import client_for, grant

# WebSocket Origin: scheme, host and port ----------------------------------------------------------------


def socket_opens(owner, host: str, origin: str, extra: list[tuple[bytes, bytes]] | None = None) -> bool:
    client = Client()
    client.force_login(owner)
    headers = [
        (b"host", host.encode()),
        (b"origin", origin.encode()),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
        *(extra or []),
    ]
    path = f"/ws/tasks/{make(owner, ECHO).pk}/"

    async def connect() -> bool:
        ws = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await ws.connect()
        if connected:
            first = await ws.receive_json_from(timeout=2)
            await ws.disconnect()
            return first["type"] == "snapshot"
        return False

    return async_to_sync(connect)()


@pytest.fixture
def live_memory_layer(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.ALLOWED_HOSTS = ["h", "localhost"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_memory_layer")
def test_a_page_on_port_8000_opens_sockets_but_another_port_or_scheme_does_not(owner):
    assert socket_opens(owner, "h:8000", "http://h:8000")
    assert not socket_opens(owner, "h:8000", "http://h:9000")
    assert not socket_opens(owner, "h:8000", "https://h:8000")
    assert not socket_opens(owner, "h:8000", "http://h")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_memory_layer")
def test_default_ports_are_the_same_origin_and_a_tls_proxy_makes_the_page_https(owner, settings):
    assert socket_opens(owner, "h", "http://h:80")
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = [(b"x-forwarded-proto", b"https")]
    assert socket_opens(owner, "h", "https://h", proxied)
    assert not socket_opens(owner, "h", "http://h", proxied)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_memory_layer")
def test_a_host_outside_allowed_hosts_is_refused_and_trusted_origins_are_accepted(owner, settings):
    assert not socket_opens(owner, "evil.example", "http://evil.example")
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
    assert socket_opens(owner, "h:8000", "https://app.example.com")
    assert not socket_opens(owner, "h:8000", "https://app.example.com:8443")


# Staff reach other users' tasks through Django permissions ----------------------------------------------


def test_staff_without_the_view_permission_see_only_their_own_tasks(owner, staff, staff_client):
    theirs, mine = make(owner, ECHO), make(staff, ECHO)
    listed = [row["id"] for row in staff_client.get("/api/tasks/").json()["results"]]
    assert listed == [mine.pk]
    assert staff_client.get(f"/api/tasks/{theirs.pk}/").status_code == 404
    assert staff_client.post(f"/api/tasks/{theirs.pk}/pause").status_code == 404
    page = Client()
    page.force_login(staff)
    assert page.get(f"/tasks/{theirs.pk}/").status_code == 404
    listing = page.get("/tasks/").content.decode()
    assert f"/tasks/{mine.pk}/" in listing and f"/tasks/{theirs.pk}/" not in listing


def test_the_view_permission_shows_others_tasks_but_controlling_them_needs_change(owner, staff):
    theirs = make(owner, ECHO)
    viewer = client_for(grant(staff, "view_signature"))
    assert viewer.get(f"/api/tasks/{theirs.pk}/").status_code == 200
    refused = viewer.post(f"/api/tasks/{theirs.pk}/pause")
    assert refused.status_code == 403 and "change_signature" in refused.json()["detail"]
    assert viewer.patch(f"/api/tasks/{theirs.pk}/", {"name": "renamed"}, format="json").status_code == 403
    page = Client()
    page.force_login(staff)
    assert page.post(f"/tasks/{theirs.pk}/pause/").status_code == 403
    theirs.refresh_from_db()
    assert theirs.status != Status.PAUSED and theirs.name != "renamed"
    controller = client_for(grant(staff, "change_signature"))
    assert controller.post(f"/api/tasks/{theirs.pk}/pause").status_code == 200


def test_a_superuser_sees_and_controls_everything_without_explicit_permissions(owner):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "x" * 12)
    theirs = make(owner, ECHO)
    client = client_for(root)
    assert [row["id"] for row in client.get("/api/tasks/").json()["results"]] == [theirs.pk]
    assert client.post(f"/api/tasks/{theirs.pk}/pause").status_code == 200


# RQ jobs are JSON -------------------------------------------------------------------------------------------


class Planted:
    """What an attacker with write access to Redis plants: unpickling it touches a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def raw_job_data(connection, job_id: str) -> object:
    return json.loads(zlib.decompress(connection.hget(f"rq:job:{job_id}", "data")))


def test_task_and_service_jobs_are_written_as_json(owner, redis_conn, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        sig = make(owner, ECHO, run=True)
        transport.enqueue_call("tasks_app.jobs.purge", delay=30)
    run = sig.runs.get()
    assert raw_job_data(redis_conn, transport.job_id(run))[0] == transport.EXECUTE
    assert raw_job_data(redis_conn, transport.job_id(run))[2] == [sig.pk, run.number]
    delayed = transport.get_queue("orchestrator-high").scheduled_job_registry.get_job_ids()
    assert [raw_job_data(redis_conn, job)[0] for job in delayed] == ["tasks_app.jobs.purge"]


def test_the_periodic_jobs_of_rq_cron_are_written_as_json(redis_conn):
    from django_rq.cron import DjangoCronScheduler

    scheduler = DjangoCronScheduler()
    scheduler.load_config_from_file("tasks_app.cron")
    enqueued = scheduler.enqueue_jobs()
    assert {job.func_name for job in enqueued} == {
        "tasks_app.jobs.reconcile", "tasks_app.jobs.purge", "tasks_app.jobs.fire_schedules"
    }
    queued = transport.get_queue("orchestrator-high").jobs
    assert [job.func_name for job in queued] == ["tasks_app.jobs.reconcile", "tasks_app.jobs.fire_schedules"]
    assert raw_job_data(redis_conn, queued[0].id)[0] == "tasks_app.jobs.reconcile"


def test_every_configured_queue_is_one_the_workers_read():
    """No queue that fills and is never consumed: django-rq's unused "default" is not configured."""
    from tasks_app.management.commands.worker import Command

    options = Command().create_parser("manage.py", "worker").parse_args([])
    read_by_default = options.queues or settings.ORCHESTRATOR_QUEUES
    assert set(settings.RQ_QUEUES) == set(read_by_default)
    assert all(transport.get_queue(name).serializer is JSONSerializer for name in settings.RQ_QUEUES)


@pytest.mark.e2e
def test_a_pickled_job_planted_in_redis_runs_no_code_in_a_worker(workers, redis_conn, tmp_path):
    touched = tmp_path / "unpickled"
    planted = Queue("orchestrator-high", connection=redis_conn, serializer=DefaultSerializer)
    planted.enqueue("tasks_app.jobs.purge", Planted(touched), job_id="planted")
    workers.burst(args=["--no-reconcile"])
    assert not touched.exists()
    assert Job.fetch("planted", connection=redis_conn).get_status() == JobStatus.FAILED


def test_the_reconcile_pass_reads_a_planted_pickled_job_without_unpickling_it(owner, redis_conn, tmp_path):
    from tasks_app.services import reconcile

    sig = make(owner, ECHO, run=True)  # queued; its job never reached Redis (the test transaction never commits)
    run = sig.runs.get()
    touched = tmp_path / "unpickled"
    planted = Queue(run.queue, connection=redis_conn, serializer=DefaultSerializer)
    planted.enqueue(transport.EXECUTE, sig.pk, run.number, job_id=transport.job_id(run), meta={"x": Planted(touched)})
    assert reconcile.job_exists(run)
    assert not touched.exists()


# var/ is private, and the embedded Redis needs its password ---------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_embedded_redis_refuses_clients_without_its_password_and_keeps_it_private(tmp_path):
    data_dir, url_file = tmp_path / "var" / "redis", tmp_path / "var" / "redis.url"
    with EmbeddedRedis(data_dir, url_file=url_file) as server:
        password = server.password
        assert len(password) >= 32 and f":{password}@" in url_file.read_text()
        assert redis.Redis.from_url(url_file.read_text().strip()).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port).ping()
        assert not any(password in part for part in psutil.Process(server.process.pid).cmdline())
        assert (data_dir / "password").read_text().strip() == password
        for path in (data_dir / "password", data_dir / "redis.conf", data_dir / "redis.log", url_file):
            assert mode(path) == 0o600, path
        assert mode(data_dir) == 0o700
        server.restart()
        assert redis.Redis.from_url(server.url).ping() and server.password == password
    with EmbeddedRedis(data_dir) as again:  # the next start of the same var/ uses the same password
        assert again.password == password


def test_var_is_0700_and_the_sqlite_database_and_its_wal_are_0600(tmp_path):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    var.chmod(0o755)  # a var/ of an older version, readable by everyone
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(ORCHESTRATOR_VAR_DIR=str(var), DJANGO_SETTINGS_MODULE="orchestrator_site.settings")
    script = (  # the modes are read while the connection is open: SQLite removes its WAL on the last close
        "import os, json, stat; os.umask(0o022); import django; django.setup(); from django.db import connection; "
        "c = connection.cursor(); c.execute('create table t (x int)'); c.execute('insert into t values (1)'); "
        "var = os.environ['ORCHESTRATOR_VAR_DIR']; print(json.dumps({name: stat.S_IMODE(os.stat(os.path.join(var, "
        "name)).st_mode) for name in os.listdir(var) if name.startswith('db.sqlite3')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=settings.BASE_DIR,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    modes = json.loads(done.stdout.strip().splitlines()[-1])
    assert mode(var) == 0o700
    assert set(modes) >= {"db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"}
    assert modes == {name: 0o600 for name in modes}


# CI's dependency audit --------------------------------------------------------------------------------------


def audit_verdict(tmp_path: Path, **reports: dict) -> tuple[int, str]:
    args = []
    for kind, report in reports.items():
        path = tmp_path / f"{kind}.json"
        path.write_text(json.dumps(report))
        args += [f"--{kind}-report", str(path)]
    done = subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "bin" / "audit-deps"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout


def pip_report(*vulns: dict) -> dict:
    return {
        "dependencies": [
            {"name": "django", "version": "5.2.0", "vulns": list(vulns)},
            {"name": "rq", "version": "3.0.0", "vulns": []},
        ],
        "fixes": [],
    }


def test_the_audit_fails_on_a_vulnerability_with_a_fix_and_only_warns_without_one(tmp_path):
    fixable = {"id": "PYSEC-2026-1", "fix_versions": ["5.2.1"], "aliases": [], "description": ""}
    unfixed = {"id": "GHSA-xxxx", "fix_versions": [], "aliases": [], "description": ""}
    code, out = audit_verdict(tmp_path, pip=pip_report(fixable, unfixed))
    assert code == 1 and "django 5.2.0: PYSEC-2026-1 (fixed in 5.2.1)" in out and "GHSA-xxxx (no fix" in out
    assert audit_verdict(tmp_path, pip=pip_report(unfixed))[0] == 0
    npm = {"vulnerabilities": {"htmx.org": {"severity": "high", "fixAvailable": True, "via": [{"title": "XSS"}]}}}
    code, out = audit_verdict(tmp_path, npm=npm)
    assert code == 1 and "htmx.org (high): XSS" in out
    npm["vulnerabilities"]["htmx.org"]["fixAvailable"] = False
    assert audit_verdict(tmp_path, npm=npm)[0] == 0


def test_an_audit_that_could_not_read_its_database_does_not_pass(tmp_path):
    skipped = {"dependencies": [{"name": "django", "skip_reason": "Dependency not found on PyPI"}], "fixes": []}
    assert audit_verdict(tmp_path, pip=skipped)[0] == 2
    assert audit_verdict(tmp_path, npm={"message": "405 Method Not Allowed", "error": {}})[0] == 2
