"""Notifications: which events reach the owner, through which channels, and the HTTP API over them."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core import mail
from django.urls import include, path
from django.utils import timezone

from tasks_app import jobs
from tasks_app.models import Notification, NotificationPreference, Run, Signature
from tasks_app.registry import task
from tasks_app.services import events, execution, live, notifications, reconcile, transport
from tests.drain import drain

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]
urlpatterns = [path("api/", include("tasks_app.api.live"))]

CRM = {"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0}}


@task("tests.notifications.broken_build", steps=["Create database tables", "Generate application UI"])
def broken_build(ctx):
    with ctx.step("Create database tables"):
        pass
    with ctx.step("Generate application UI"):
        raise RuntimeError("the UI generator crashed")


@pytest.fixture(autouse=True)
def memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    live._local.pending = None  # live messages buffered by an earlier test's rolled-back transaction


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """Submit a spec and run it to its end in this process, delivering after each commit."""

    def run_spec(spec: dict, owner) -> Signature:
        with django_capture_on_commit_callbacks(execute=True):
            sig = execution.submit(spec, owner=owner)
        with django_capture_on_commit_callbacks(execute=True):
            drain()
        sig.refresh_from_db()
        return sig

    return run_spec


def prefer(user, **fields) -> NotificationPreference:
    return NotificationPreference.objects.create(user=user, **fields)


def titles(user) -> list[str]:
    return list(Notification.objects.filter(owner=user).order_by("pk").values_list("title", flat=True))


# Which events notify ----------------------------------------------------------------------------


def test_a_finished_task_tells_its_owner_it_started_and_is_ready(owner, stranger, run):
    sig = run(CRM, owner)
    assert titles(owner) == ["Your Cellphone Store CRM task has started", "Step 4 complete: Configure workflows",
                             "✅ Cellphone Store CRM is ready!"]
    assert titles(stranger) == []
    done = Notification.objects.get(owner=owner, event="task_completed")
    assert done.signature_id == sig.pk and done.read_at is None
    assert done.deliveries == {"in_app": "sent", "browser": "sent"}


def test_steps_notify_when_the_user_asks_for_them(owner, run):
    prefer(owner, events=["step_completed"])
    run(CRM, owner)
    assert titles(owner) == ["Step 4 complete: Configure workflows"]  # one row, brought up to date step by step


FIFTY = [f"Part {i}" for i in range(1, 51)]


@task("tests.notifications.fifty_steps", steps=FIFTY)
def fifty_steps(ctx):
    for name in FIFTY:
        with ctx.step(name):
            pass


def test_a_fifty_step_task_keeps_one_step_notification_in_the_bell(owner, run, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer",
                                           "CONFIG": {"capacity": 10_000}}}  # 50 steps' live messages fit
    layer = get_channel_layer()
    mine = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(live.user_group(owner.pk), mine)
    sig = run({"task": "tests.notifications.fifty_steps"}, owner)  # step notifications are on by default
    [step] = Notification.objects.filter(owner=owner, event="step_completed")
    assert (step.signature_id, step.title, step.read_at) == (sig.pk, "Step 50 complete: Part 50", None)
    assert step.body.endswith("50 of 50 steps done.")
    assert Notification.objects.filter(owner=owner, read_at__isnull=True).count() == 3  # started, steps, ready
    updates = [m for m in received_on(layer, mine) if m["type"] == "notification" and m["event"] == "step_completed"]
    assert len(updates) == 50 and {m["id"] for m in updates} == {step.pk}  # the same desktop notification, replaced
    assert updates[-1]["title"] == "Step 50 complete: Part 50"


def test_a_read_step_notification_is_left_alone_and_the_next_step_starts_a_new_one(owner):
    sig = execution.submit(CRM, owner=owner, run=False)
    events.record(sig, "step_completed", order=1, name="Create database tables", duration_ms=1200)
    events.record(sig, "step_completed", order=2, name="Generate application UI", duration_ms=1200)
    assert titles(owner) == ["Step 2 complete: Generate application UI"]
    Notification.objects.filter(owner=owner).update(read_at=timezone.now())
    events.record(sig, "step_completed", order=3, name="Add search and filters", duration_ms=1200)
    assert titles(owner) == ["Step 2 complete: Generate application UI", "Step 3 complete: Add search and filters"]


def test_step_notifications_can_be_switched_off(owner, run):
    prefer(owner, events=["task_started", "task_completed", "task_failed"])
    run(CRM, owner)
    assert titles(owner) == ["Your Cellphone Store CRM task has started", "✅ Cellphone Store CRM is ready!"]


def test_events_left_out_of_the_preferences_notify_nobody(owner, run):
    prefer(owner, events=["task_failed"])
    run(CRM, owner)
    assert titles(owner) == []


def test_a_failure_names_the_step_it_failed_at(owner, run):
    run({"task": "tests.notifications.broken_build"}, owner)
    failed = Notification.objects.get(owner=owner, event="task_failed")
    assert failed.title == "❌ Task failed at Step 2: Generate application UI"
    assert "RuntimeError: the UI generator crashed" in failed.body


def test_members_of_a_swarm_do_not_notify_one_by_one(owner, run):
    run({"kind": "swarm", "name": "Nightly imports",
         "tasks": [{"task": "examples.echo", "kwargs": {"value": i}} for i in range(5)]}, owner)
    assert titles(owner) == ["Your Nightly imports task has started", "✅ Nightly imports is ready!"]


def test_an_approval_deep_in_a_workflow_notifies(owner, run):
    chain = run({"kind": "chain", "name": "Release", "steps": [
        {"task": "examples.echo", "kwargs": {"value": 1}},
        {"task": "orchestrator.approval", "kwargs": {"title": "Ship it?", "details": "All checks passed."}}]}, owner)
    needed = Notification.objects.get(owner=owner, event="approval_needed")
    assert needed.title == "⚠️ Approval required: Ship it?"
    assert "All checks passed." in needed.body
    assert needed.signature.parent_id == chain.pk


def test_an_automatic_retry_does_not_announce_a_second_start(owner, run):
    sig = run({"task": "examples.fail", "kwargs": {"times": 1}, "retries": 1, "name": "Flaky"}, owner)
    assert sig.attempts == 2
    assert titles(owner) == ["Your Flaky task has started", "✅ Flaky is ready!"]


def test_a_resume_report_tells_the_owner_which_tasks_resumed(owner, monkeypatch):
    monkeypatch.setattr(reconcile, "job_exists", lambda run, live=None: False)
    sig = execution.submit({"task": "examples.sleep", "name": "Long import", "kwargs": {"seconds": 1}}, owner=owner)
    execution.claim(sig.pk, 1)
    Run.objects.filter(signature=sig).update(worker_name="a-worker-that-died")
    reconcile.run_pass(trigger="test")
    report = Notification.objects.get(owner=owner, event="resume_report")
    assert report.title == "🔄 Your Long import task resumed automatically"
    assert f"#{sig.pk} Long import: resumed (worker gone)" in report.body


# Channels ----------------------------------------------------------------------------------------


def received_on(layer, channel: str) -> list[dict]:
    """Every message waiting on a channel of the in-memory layer."""

    async def drain_channel() -> list[dict]:
        messages = []
        while True:
            try:
                messages.append((await asyncio.wait_for(layer.receive(channel), timeout=0.2))["message"])
            except TimeoutError:
                return messages

    return async_to_sync(drain_channel)()


def test_the_owner_gets_a_notification_message_on_their_websocket_group(owner, stranger, run):
    layer = get_channel_layer()
    mine, theirs = async_to_sync(layer.new_channel)(), async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(live.user_group(owner.pk), mine)
    async_to_sync(layer.group_add)(live.user_group(stranger.pk), theirs)
    sig = run(CRM, owner)
    notices = [m for m in received_on(layer, mine) if m["type"] == "notification" and m["event"] != "step_completed"]
    assert [(n["title"], n["task_id"], n["desktop"]) for n in notices] == [
        ("Your Cellphone Store CRM task has started", sig.pk, True), ("✅ Cellphone Store CRM is ready!", sig.pk, True)]
    assert received_on(layer, theirs) == []


def test_failures_are_emailed_when_email_is_on(owner, run, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    prefer(owner, email=True)
    run({"task": "tests.notifications.broken_build"}, owner)
    assert [m.subject for m in mail.outbox] == ["❌ Task failed at Step 2: Generate application UI"]
    assert mail.outbox[0].to == [owner.email]
    assert Notification.objects.get(event="task_failed").deliveries["email"] == "sent"


def test_only_long_tasks_are_emailed_when_they_complete(owner, run, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    pref = prefer(owner, email=True, email_long_task_seconds=3600)
    run(CRM, owner)
    assert mail.outbox == []
    pref.email_long_task_seconds = 0
    pref.save()
    run(CRM, owner)
    assert [m.subject for m in mail.outbox] == ["✅ Cellphone Store CRM is ready!"]


def test_email_off_sends_nothing(owner, run, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    run({"task": "tests.notifications.broken_build"}, owner)
    assert mail.outbox == []


# Webhooks ----------------------------------------------------------------------------------------


class Hook(BaseHTTPRequestHandler):
    status = 200
    received: list = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append((self.headers["Content-Type"], json.loads(self.rfile.read(length))))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook_server(settings) -> Iterator[tuple[str, type[Hook]]]:
    settings.ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE = True  # the server listens on 127.0.0.1
    handler = type("TestHook", (Hook,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", handler
    server.shutdown()
    server.server_close()


def webhook_jobs() -> list:
    queue = transport.get_queue(notifications.WEBHOOK_QUEUE)
    scheduled = [queue.fetch_job(i) for i in queue.scheduled_job_registry.get_job_ids()]
    return [job for job in [*queue.get_jobs(), *scheduled] if job and job.func_name == "tasks_app.jobs.deliver_webhook"]


def test_a_webhook_gets_slack_compatible_json_from_a_job(owner, run, webhook_server, redis_conn):
    url, hook = webhook_server
    prefer(owner, webhook_url=url, events=["task_completed"])
    sig = run(CRM, owner)
    notice = Notification.objects.get(owner=owner)
    assert notice.deliveries["webhook"] == "queued" and hook.received == []  # the task never waits for it
    assert [tuple(job.args) for job in webhook_jobs()] == [(notice.pk, 1)]
    assert jobs.deliver_webhook(notice.pk) == "sent"
    content_type, body = hook.received[0]
    assert content_type == "application/json"
    assert body["text"].startswith("*✅ Cellphone Store CRM is ready!*")
    assert (body["event"], body["task_id"], body["user"]) == ("task_completed", sig.pk, "owner")
    notice.refresh_from_db()
    assert notice.deliveries["webhook"] == "sent"


def test_a_failing_webhook_is_retried_with_backoff_then_given_up(owner, webhook_server, redis_conn,
                                                                 django_capture_on_commit_callbacks):
    url, hook = webhook_server
    hook.status = 500
    prefer(owner, webhook_url=url)
    notice = Notification.objects.create(owner=owner, event="task_failed", title="❌ x",
                                         deliveries={"webhook": "queued"})
    with django_capture_on_commit_callbacks(execute=True):
        outcome = jobs.deliver_webhook(notice.pk)
    assert outcome.startswith("retrying in 10 s")
    assert [tuple(job.args) for job in webhook_jobs()] == [(notice.pk, 2)]
    assert jobs.deliver_webhook(notice.pk, attempt=4).startswith("failed after 4 attempts")
    notice.refresh_from_db()
    assert notice.deliveries["webhook"].startswith("failed after 4 attempts")
    assert len(hook.received) == 2


def test_a_webhook_that_does_not_answer_fails_within_seconds(owner, redis_conn, settings):
    settings.ORCHESTRATOR_WEBHOOK_DEADLINE = 0.5
    settings.ORCHESTRATOR_WEBHOOK_ALLOW_PRIVATE = True
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        prefer(owner, webhook_url=f"http://127.0.0.1:{silent.getsockname()[1]}/")
        notice = Notification.objects.create(owner=owner, event="task_failed", title="❌ x",
                                             deliveries={"webhook": "queued"})
        started = time.monotonic()
        outcome = jobs.deliver_webhook(notice.pk, attempt=4)
    assert "timed out" in outcome and time.monotonic() - started < 5


# The HTTP API ------------------------------------------------------------------------------------


def notify(user, title: str, **fields) -> Notification:
    return Notification.objects.create(owner=user, event="task_completed", title=title,
                                       deliveries={"in_app": "sent"}, **fields)


def test_the_list_shows_only_the_users_own_notifications(owner_client, owner, stranger):
    notify(owner, "mine, read", read_at=timezone.now())
    notify(owner, "mine, new")
    notify(stranger, "theirs")
    Notification.objects.create(owner=owner, event="task_failed", title="email only", deliveries={"email": "sent"})
    every = owner_client.get("/api/notifications/").json()
    assert [n["title"] for n in every["results"]] == ["mine, new", "mine, read"]
    unread = owner_client.get("/api/notifications/?unread=1").json()
    assert [(n["title"], n["read"]) for n in unread["results"]] == [("mine, new", False)]


def test_reading_one_and_reading_all(owner_client, owner, stranger):
    first, second = notify(owner, "one"), notify(owner, "two")
    theirs = notify(stranger, "theirs")
    answer = owner_client.post(f"/api/notifications/{first.pk}/read")
    assert answer.status_code == 200 and answer.json()["read"] is True
    missing = owner_client.post(f"/api/notifications/{theirs.pk}/read")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert owner_client.post("/api/notifications/read-all").json() == {"marked": 1}
    second.refresh_from_db()
    theirs.refresh_from_db()
    assert second.read_at is not None and theirs.read_at is None


def test_preferences_start_from_the_defaults_and_keep_what_is_not_sent(owner_client, owner):
    defaults = owner_client.get("/api/notifications/preferences").json()
    assert defaults["events"] == [] and defaults["in_app"] is True and defaults["email"] is False
    assert defaults["effective_events"] == ["task_started", "step_completed", "approval_needed", "task_completed",
                                            "task_failed", "resume_report"]
    changed = owner_client.put("/api/notifications/preferences",
                               {"email": True, "events": ["task_failed", "task_failed"]}, format="json")
    assert changed.status_code == 200
    assert changed.json()["events"] == ["task_failed"] and changed.json()["browser"] is True
    pref = NotificationPreference.objects.get(user=owner)
    assert pref.email and pref.events == ["task_failed"]


@pytest.mark.parametrize("body", [{"events": ["lunch"]}, {"webhook_url": "ftp://example.com/x"},
                                  {"email_long_task_seconds": -1}, ["not", "an", "object"]])
def test_bad_preferences_are_refused_with_the_field_named(owner_client, body):
    answer = owner_client.put("/api/notifications/preferences", body, format="json")
    assert answer.status_code == 400
    data = answer.json()
    assert data["code"] in ("invalid", "parse_error") and data["detail"]
    assert set(data["errors"]) & {"events[0]", "webhook_url", "email_long_task_seconds", "body"}


def test_notifications_need_a_signed_in_user(api_client):
    assert api_client.get("/api/notifications/").status_code in (401, 403)
    assert api_client.get("/api/notifications/preferences").status_code in (401, 403)
