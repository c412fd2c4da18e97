"""Webhook hardening (issue 17, items 5 and 7): where a delivery may go, how long it may take, what the
user is told when it fails, how the receiver knows it came from us, and retries that outlive Redis."""

from __future__ import annotations

import hashlib
import hmac
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import time_machine
import trustme
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tasks_app import jobs
from tasks_app.models import Notification, NotificationPreference, Status
from tasks_app.services import execution, notifications, transport
from tasks_app.worker import POP_FOLLOW_UP

pytestmark = pytest.mark.django_db


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with ``status`` (and ``location``) and keeps what it received."""

    status = 200
    location = ""
    requests: list

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body,
                              "at": timezone.now()})
        self.answer()

    def do_GET(self) -> None:
        self.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers), "body": b""})
        self.answer()

    def answer(self) -> None:
        self.send_response(type(self).status)
        if type(self).location:
            self.send_header("Location", type(self).location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@contextmanager
def hook_server(host: str = "127.0.0.1", port: int = 0, status: int = 200,
                tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Hook", (Recorder,), {"requests": [], "status": status})
    server = HTTPServer((host, port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hook() -> Iterator[tuple[str, type[Recorder]]]:
    with hook_server() as served:
        yield served


@pytest.fixture
def local_allowed(settings) -> None:
    """The test servers listen on 127.0.0.1, which only the setting allows."""
    settings.ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE = True


def notify(user, url: str, capture) -> Notification:
    """A notification through the real path: created in a transaction, its webhook job enqueued after commit."""
    pref, _ = NotificationPreference.objects.update_or_create(user=user, defaults={"webhook_url": url})
    with capture(execute=True):
        notice = notifications.create(user.pk, "task_failed", "❌ Build failed", "RuntimeError: boom", pref=pref)
    return notice


def webhook_jobs() -> list:
    queue = transport.get_queue(notifications.WEBHOOK_QUEUE)
    scheduled = [queue.fetch_job(i) for i in queue.scheduled_job_registry.get_job_ids()]
    return [job for job in [*queue.get_jobs(), *scheduled] if job is not None]


def run_queued_webhook(capture=None) -> str:
    """Run the one webhook job waiting on the webhook queue, as a worker would (``capture``: with its
    after-commit enqueues, such as the next attempt)."""
    queue = transport.get_queue(notifications.WEBHOOK_QUEUE)
    (job,) = queue.get_jobs()
    queue.remove(job)
    if capture is None:
        return jobs.deliver_webhook(*job.args)
    with capture(execute=True):
        return jobs.deliver_webhook(*job.args)


def fake_dns(monkeypatch, host: str, answer) -> list[str]:
    """``host`` resolves through ``answer`` (a list, or a callable of the lookup count); others as usual."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(name, *args, **kwargs):
        if name != host:
            return real(name, *args, **kwargs)
        lookups.append(name)
        return answer(len(lookups)) if callable(answer) else answer

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def answers(port: int, *ips: str) -> list[tuple]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]


def webhook_outcome(notice: Notification) -> str:
    notice.refresh_from_db()
    return notice.deliveries["webhook"]


# Where a delivery may go -------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost", "0.0.0.0"])
def test_loopback_destinations_are_refused_and_nothing_is_sent(owner, hook, redis_conn, address,
                                                              django_capture_on_commit_callbacks):
    url, server = hook
    port = url.rsplit(":", 1)[1]
    notice = notify(owner, f"http://{address}:{port}/hook", django_capture_on_commit_callbacks)
    assert run_queued_webhook(django_capture_on_commit_callbacks) == "failed: destination not allowed"
    assert server.requests == []
    assert webhook_outcome(notice) == "failed: destination not allowed"
    assert webhook_jobs() == []  # a refused destination is not retried


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.169.254", "100.64.0.1",
                                     "224.0.0.1", "240.0.0.1", "[fe80::1]", "[fc00::1]", "[::1]", "[::]"])
def test_private_link_local_and_other_non_global_destinations_are_refused(owner, redis_conn, address,
                                                                         django_capture_on_commit_callbacks):
    notice = notify(owner, f"http://{address}/latest/meta-data/", django_capture_on_commit_callbacks)
    started = time.monotonic()
    assert run_queued_webhook() == "failed: destination not allowed"
    assert time.monotonic() - started < 1  # refused before any connection attempt
    assert webhook_outcome(notice) == "failed: destination not allowed"


def test_a_name_with_one_private_address_among_public_ones_is_refused(owner, hook, redis_conn, monkeypatch,
                                                                     django_capture_on_commit_callbacks):
    url, server = hook
    port = int(url.rsplit(":", 1)[1])
    fake_dns(monkeypatch, "hooks.example.com", answers(port, "93.184.215.14", "127.0.0.1"))
    notice = notify(owner, f"http://hooks.example.com:{port}/hook", django_capture_on_commit_callbacks)
    assert run_queued_webhook() == "failed: destination not allowed"
    assert server.requests == [] and webhook_outcome(notice) == "failed: destination not allowed"


def test_the_connection_goes_to_the_address_that_was_checked(owner, local_allowed, redis_conn, monkeypatch,
                                                             django_capture_on_commit_callbacks):
    """DNS rebinding: a second lookup answering another address must not be where the request goes."""
    with hook_server("127.0.0.1") as (url, checked), hook_server("127.0.0.2", int(url.rsplit(":", 1)[1])) as (_, other):
        port = int(url.rsplit(":", 1)[1])
        lookups = fake_dns(monkeypatch, "rebind.test", lambda n: answers(port, "127.0.0.1" if n == 1 else "127.0.0.2"))
        notify(owner, f"http://rebind.test:{port}/hook", django_capture_on_commit_callbacks)
        assert run_queued_webhook() == "sent"
    assert len(checked.requests) == 1 and other.requests == [] and lookups == ["rebind.test"]
    assert checked.requests[0]["headers"]["Host"] == f"rebind.test:{port}"


@contextmanager
def https_server(ca: trustme.CA, name: str) -> Iterator[tuple[int, type[Recorder]]]:
    """An HTTPS receiver on 127.0.0.1 whose certificate, issued by ``ca``, names ``name``."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(tls)
    with hook_server(tls=tls) as (url, handler):
        yield int(url.rsplit(":", 1)[1]), handler


@pytest.fixture
def trusted_ca(monkeypatch, tmp_path) -> trustme.CA:
    """A certificate authority the process trusts (OpenSSL reads SSL_CERT_FILE when a context loads its roots)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    return ca


def test_https_goes_to_the_checked_address_and_verifies_the_certificate_of_the_name(
        owner, local_allowed, trusted_ca, redis_conn, monkeypatch, django_capture_on_commit_callbacks):
    with https_server(trusted_ca, "hooks.test") as (port, server):
        lookups = fake_dns(monkeypatch, "hooks.test", lambda n: answers(port, "127.0.0.1" if n == 1 else "127.0.0.2"))
        notice = notify(owner, f"https://hooks.test:{port}/hook", django_capture_on_commit_callbacks)
        assert run_queued_webhook() == "sent"
    assert lookups == ["hooks.test"] and len(server.requests) == 1 and webhook_outcome(notice) == "sent"
    assert server.requests[0]["headers"]["Host"] == f"hooks.test:{port}"


def test_https_with_a_certificate_of_another_name_is_refused(owner, local_allowed, trusted_ca, redis_conn,
                                                             monkeypatch, django_capture_on_commit_callbacks):
    with https_server(trusted_ca, "other.test") as (port, server):
        fake_dns(monkeypatch, "hooks.test", answers(port, "127.0.0.1"))
        notify(owner, f"https://hooks.test:{port}/hook", django_capture_on_commit_callbacks)
        assert run_queued_webhook() == "retrying in 10 s (attempt 1 failed: TLS error)"
    assert server.requests == []


def test_the_setting_allows_a_local_destination(owner, hook, local_allowed, redis_conn,
                                                django_capture_on_commit_callbacks):
    url, server = hook
    notice = notify(owner, f"{url}/hook", django_capture_on_commit_callbacks)
    assert run_queued_webhook() == "sent"
    assert [r["path"] for r in server.requests] == ["/hook"] and webhook_outcome(notice) == "sent"


def test_a_redirect_is_not_followed(owner, local_allowed, redis_conn, django_capture_on_commit_callbacks):
    with hook_server() as (target_url, target), hook_server(status=302) as (url, redirecting):
        redirecting.location = f"{target_url}/elsewhere"
        notice = notify(owner, f"{url}/hook", django_capture_on_commit_callbacks)
        outcome = run_queued_webhook()
    assert len(redirecting.requests) == 1 and target.requests == []
    assert outcome == "retrying in 10 s (attempt 1 failed: HTTP 302 (redirects are not followed))"
    assert webhook_outcome(notice) == outcome


# How long it may take ----------------------------------------------------------------------------


@contextmanager
def trickling_server(interval: float) -> Iterator[str]:
    """Accepts, reads the request, then answers one byte every ``interval`` seconds for a minute."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 600:
                if stop.wait(interval):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_trickling_server_is_cut_at_the_deadline(owner, local_allowed, settings, redis_conn,
                                                  django_capture_on_commit_callbacks):
    settings.ORCHESTRATOR_WEBHOOK_DEADLINE = 1.5
    with trickling_server(interval=0.1) as url:  # never idle long enough for a per-read timeout
        notice = notify(owner, url, django_capture_on_commit_callbacks)
        started = time.monotonic()
        outcome = run_queued_webhook()
        took = time.monotonic() - started
    assert outcome == "retrying in 10 s (attempt 1 failed: timed out)"
    assert 1.4 < took < 3.5
    assert webhook_outcome(notice) == outcome


# What the user is told ---------------------------------------------------------------------------


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_failures_are_recorded_with_a_short_generic_reason(owner, owner_client, local_allowed, redis_conn,
                                                           monkeypatch, django_capture_on_commit_callbacks):
    with hook_server(status=500) as (url, _):
        erroring = notify(owner, f"{url}/hook", django_capture_on_commit_callbacks)
        run_queued_webhook()
    refused = notify(owner, f"http://127.0.0.1:{closed_port()}/hook", django_capture_on_commit_callbacks)
    run_queued_webhook()

    def unknown(count: int):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    fake_dns(monkeypatch, "no-such-host.example", unknown)
    unresolved = notify(owner, "https://no-such-host.example/hook", django_capture_on_commit_callbacks)
    run_queued_webhook()
    reasons = {n["id"]: n["deliveries"]["webhook"] for n in owner_client.get("/api/notifications/").json()["results"]}
    assert reasons == {
        erroring.pk: "retrying in 10 s (attempt 1 failed: HTTP 500)",
        refused.pk: "retrying in 10 s (attempt 1 failed: connection refused)",
        unresolved.pk: "retrying in 10 s (attempt 1 failed: host not found)",
    }


def test_the_last_attempt_gives_up_with_the_reason(owner, local_allowed, redis_conn,
                                                   django_capture_on_commit_callbacks):
    with hook_server(status=503) as (url, server):
        notice = notify(owner, f"{url}/hook", django_capture_on_commit_callbacks)
        with django_capture_on_commit_callbacks(execute=True):
            for attempt in range(1, notifications.WEBHOOK_ATTEMPTS + 1):
                jobs.deliver_webhook(notice.pk, attempt)
    assert len(server.requests) == 4
    assert webhook_outcome(notice) == "failed after 4 attempts: HTTP 503"
    notice.refresh_from_db()
    assert notice.webhook_due_at is None  # nothing left to reschedule


# How the receiver knows it came from us ----------------------------------------------------------


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """What docs/security.md tells a receiver to do."""
    signed = headers["X-Orchestrator-Timestamp"].encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Orchestrator-Signature"])


def test_the_signature_verifies_with_the_users_secret_and_rotation_replaces_it(
        owner, owner_client, hook, local_allowed, redis_conn, django_capture_on_commit_callbacks):
    url, server = hook
    response = owner_client.patch("/api/notifications/preferences", {"webhook_url": f"{url}/hook"}, format="json")
    secret = response.json()["webhook_secret"]
    assert len(secret) >= 32
    notify(owner, f"{url}/hook", django_capture_on_commit_callbacks)
    assert run_queued_webhook() == "sent"
    first = server.requests[0]
    assert verify(secret, first["headers"], first["body"])
    assert abs(int(first["headers"]["X-Orchestrator-Timestamp"]) - time.time()) < 60
    assert not verify(secret, first["headers"], first["body"].replace(b"Build failed", b"Build passed"))

    rotated = owner_client.patch("/api/notifications/preferences", {"rotate_webhook_secret": True}, format="json")
    new_secret = rotated.json()["webhook_secret"]
    assert new_secret != secret
    assert owner_client.get("/api/notifications/preferences").json()["webhook_secret"] == new_secret
    notify(owner, f"{url}/hook", django_capture_on_commit_callbacks)
    assert run_queued_webhook() == "sent"
    second = server.requests[1]
    assert verify(new_secret, second["headers"], second["body"]) and not verify(secret, second["headers"],
                                                                                second["body"])


def test_the_preferences_page_shows_the_secret_and_rotates_it(owner):
    client = Client()
    client.force_login(owner)
    page = client.get(reverse("notification_preferences"))
    secret = NotificationPreference.objects.get(user=owner).webhook_secret
    assert secret in page.content.decode()
    saved = client.post(reverse("notification_preferences"), {"in_app": "on", "email_long_task_seconds": "600",
                                                              "rotate_webhook_secret": "on"}, follow=True)
    new_secret = NotificationPreference.objects.get(user=owner).webhook_secret
    assert new_secret != secret and new_secret in saved.content.decode() and secret not in saved.content.decode()


def test_every_user_has_a_secret_of_their_own(owner, colleague, owner_client, colleague_client):
    mine = owner_client.patch("/api/notifications/preferences", {"in_app": True}, format="json").json()
    theirs = colleague_client.patch("/api/notifications/preferences", {"in_app": True}, format="json").json()
    assert mine["webhook_secret"] and theirs["webhook_secret"] and mine["webhook_secret"] != theirs["webhook_secret"]
    assert "rotate_webhook_secret" not in mine


# Retries that outlive Redis ----------------------------------------------------------------------


def test_a_retry_lost_with_redis_is_rescheduled_once_when_due(owner, local_allowed, redis_conn,
                                                              django_capture_on_commit_callbacks):
    with hook_server(status=500) as (url, server):
        notice = notify(owner, f"{url}/hook", django_capture_on_commit_callbacks)
        assert run_queued_webhook(django_capture_on_commit_callbacks).startswith("retrying in 10 s")
        assert [tuple(job.args) for job in webhook_jobs()] == [(notice.pk, 2)]  # in RQ's scheduler
        redis_conn.flushdb()  # the scheduled retry is gone with Redis
        assert notifications.reschedule_due_deliveries() == 0  # not due yet
        with time_machine.travel(timezone.now() + timedelta(seconds=11), tick=False):
            with django_capture_on_commit_callbacks(execute=True):
                assert notifications.reschedule_due_deliveries() == 1
                assert notifications.reschedule_due_deliveries() == 0  # the attempt has its job now
        assert [tuple(job.args) for job in webhook_jobs()] == [(notice.pk, 2)]
        server.status = 200
        assert run_queued_webhook() == "sent"
        assert jobs.deliver_webhook(notice.pk, 2) == "skipped: attempt already made"  # a duplicate job
        with time_machine.travel(timezone.now() + timedelta(hours=1), tick=False):
            assert notifications.reschedule_due_deliveries() == 0
    assert len(server.requests) == 2 and webhook_outcome(notice) == "sent"


def test_a_first_delivery_never_enqueued_is_picked_up(owner, local_allowed, redis_conn, hook,
                                                      django_capture_on_commit_callbacks):
    """Redis was down when the notification was committed: the database still says it is due."""
    url, server = hook
    pref = NotificationPreference.objects.create(user=owner, webhook_url=f"{url}/hook")
    notice = notifications.create(owner.pk, "task_failed", "❌ Build failed", "", pref=pref)  # on_commit never runs
    assert webhook_jobs() == []
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.reschedule_due_deliveries() == 1
    assert run_queued_webhook() == "sent" and len(server.requests) == 1 and webhook_outcome(notice) == "sent"


def test_a_work_horse_never_takes_a_webhook_job_for_a_task_run(owner, redis_conn, hook,
                                                                django_capture_on_commit_callbacks):
    """Workers take ``orch-...`` jobs at the queues' heads as task runs (follow-ups, slots); a delivery is not one."""
    url, _ = hook
    notify(owner, f"{url}/hook", django_capture_on_commit_callbacks)
    pop = redis_conn.register_script(POP_FOLLOW_UP)
    queues = [f"rq:queue:{name}" for name in settings.ORCHESTRATOR_QUEUES]
    assert not pop(keys=["orchestrator:follow-up:test", *queues], args=["test", "2026-12-04T15:00:00Z", 60, "orch-1-1"])
    assert len(webhook_jobs()) == 1


# On real workers ---------------------------------------------------------------------------------


@pytest.mark.e2e
def test_workers_deliver_webhooks_after_the_task_queues(owner, workers, settings):
    """The default worker reads the webhook queue last: a queued task runs before a delivery queued earlier."""
    settings.ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE = True
    workers.env["ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE"] = "1"
    with hook_server() as (url, server):
        pref = NotificationPreference.objects.create(user=owner, webhook_url=f"{url}/hook")
        earlier = notifications.create(owner.pk, "task_failed", "❌ Earlier", "", pref=pref)  # enqueued on commit
        sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 1}, "priority": "low"}, owner=owner)
        workers.burst(1)
        workers.drain(lambda: len(server.requests) >= 1)
    sig.refresh_from_db()
    assert sig.status == Status.COMPLETED
    first = server.requests[0]
    assert b"Earlier" in first["body"] and first["at"] > sig.finished_at
    assert verify(pref.webhook_secret, first["headers"], first["body"])
    assert webhook_outcome(earlier) == "sent"
