"""End to end: a real daphne, a real worker, a real Redis, and a WebSocket client signed in with a
session cookie, watching examples.build_crm from submit to the end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.db import transaction
from django.test import Client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tasks_app.models import Notification
from tasks_app.services import execution
from tests import live_server

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CRM = {"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0.05}}


@pytest.fixture
def daphne(transactional_db, tmp_path) -> Iterator[str]:
    """A daphne process serving the project on a free port, on the test database; its base ws:// URL."""
    with live_server.daphne(tmp_path / "daphne.log") as url:
        yield "ws" + url.removeprefix("http")


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


@contextmanager
def websocket(url: str, user=None, origin: str | None = None) -> Iterator[ClientConnection]:
    """A socket as the site's own page opens it: the Origin is the server's scheme, host and port."""
    origin = origin or "http" + url[2:].split("/ws/")[0]
    headers = {"Cookie": session_cookie(user)} if user is not None else {}
    with connect(url, origin=origin, additional_headers=headers, proxy=None, open_timeout=10) as conn:
        yield conn


def receive(conn: ClientConnection, timeout: float = 10) -> dict:
    return json.loads(conn.recv(timeout=timeout))


def collect(conn: ClientConnection, done: Callable[[list[dict]], bool], timeout: float = 60,
            linger: float = 0.5) -> list[dict]:
    """Messages until ``done(messages)``, then whatever else arrives within ``linger`` seconds."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(messages):
        left = deadline - time.monotonic()
        assert left > 0, f"gave up after {timeout:g} s; last messages: {messages[-5:]}"
        messages.append(receive(conn, timeout=left))
    end = time.monotonic() + linger
    while (left := end - time.monotonic()) > 0:
        try:
            messages.append(receive(conn, timeout=left))
        except TimeoutError:
            break
    return messages


def first(messages: list[dict], matches: Callable[[dict], bool]) -> int:
    return next(i for i, m in enumerate(messages) if matches(m))


def close_code(url: str, user=None) -> int:
    with websocket(url, user) as conn:
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=10)
    return closed.value.rcvd.code


def test_a_signed_in_user_watches_a_workflow_live(owner, workers, daphne):
    workers.start(1)
    with websocket(f"{daphne}/ws/tasks/", owner) as conn:
        assert receive(conn) == {"type": "snapshot", "task_id": None, "tasks": [], "unread_notifications": 0}
        sig = execution.submit(CRM, owner=owner)

        def finished(messages: list[dict]) -> bool:
            return any(m["type"] == "notification" and m.get("event") == "task_completed" for m in messages)

        messages = [m for m in collect(conn, finished) if m["task_id"] == sig.pk]

    kinds = [m["type"] for m in messages]
    assert kinds.count("task_complete") == 1
    assert next(m for m in messages if m["type"] == "task_complete")["result"]["title"] == "Cellphone Store CRM"
    percents = [m["percent"] for m in messages if m["type"] == "progress"]
    assert percents == sorted(percents) and percents[-1] == 100 and len(set(percents)) >= 5
    for order in (1, 2, 3):
        step_done = first(messages, lambda m, k=order: m["type"] == "step_complete" and m["step"]["order"] == k)
        next_step = first(messages, lambda m, k=order: m["type"] == "progress" and m["current_step"] == k + 1)
        assert step_done < next_step
    assert [m["step"]["name"] for m in messages if m["type"] == "step_complete"] == [
        "Create database tables", "Generate application UI", "Add search and filters", "Configure workflows"]
    assert {"running", "completed"} <= {m["status"] for m in messages if m["type"] == "status"}
    assert any(m["type"] == "log" and "Configure workflows" in m["message"] for m in messages)
    notices = [m for m in messages if m["type"] == "notification"]
    assert [m["title"] for m in notices if m["event"] != "step_completed"] == [
        "Your Cellphone Store CRM task has started", "✅ Cellphone Store CRM is ready!"]
    steps = [m for m in notices if m["event"] == "step_completed"]  # on by default, one row updated in place
    assert steps[-1]["title"] == "Step 4 complete: Configure workflows" and len({m["id"] for m in steps}) == 1
    assert Notification.objects.filter(owner=owner).count() == 3

    with websocket(f"{daphne}/ws/tasks/{sig.pk}/", owner) as again:  # a reconnecting client: the state first
        snapshot = receive(again)
        assert snapshot["type"] == "snapshot"
        assert (snapshot["task"]["status"], snapshot["task"]["progress"]) == ("completed", 100)


def test_a_task_socket_streams_that_task_only(owner, workers, daphne):
    workers.start(1)
    watched = execution.submit(CRM, owner=owner, run=False)
    with websocket(f"{daphne}/ws/tasks/{watched.pk}/", owner) as conn:
        assert receive(conn)["task"]["status"] == "pending"
        other = execution.submit({"task": "examples.log", "kwargs": {"lines": 3}}, owner=owner)
        with transaction.atomic():
            execution.start(watched)
        messages = collect(conn, lambda ms: any(m["type"] == "task_complete" for m in ms))
    assert {m["task_id"] for m in messages} == {watched.pk} and other.pk != watched.pk


def test_strangers_and_anonymous_clients_are_refused(owner, stranger, daphne):
    sig = execution.submit(CRM, owner=owner, run=False)
    assert close_code(f"{daphne}/ws/tasks/") == 4401
    assert close_code(f"{daphne}/ws/tasks/{sig.pk}/") == 4401
    assert close_code(f"{daphne}/ws/tasks/{sig.pk}/", stranger) == 4404
    with pytest.raises(InvalidStatus) as refused:
        with websocket(f"{daphne}/ws/tasks/", owner, origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403


def test_an_idle_socket_stays_open(owner, daphne):
    """A page left open with nothing happening keeps its socket (the channel layer's blocking read
    must outlast redis-py's 5 s default socket timeout)."""
    with websocket(f"{daphne}/ws/tasks/", owner) as conn:
        assert receive(conn)["type"] == "snapshot"
        time.sleep(11)  # two of channels_redis's 5 s blocking reads
        conn.send(json.dumps({"action": "ping"}))
        assert receive(conn) == {"type": "pong", "task_id": None}
