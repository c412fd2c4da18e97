"""WebSocket consumers over the real ASGI application (origin check, session auth, routing), with an
in-memory channel layer: who may connect, the snapshot first, forwarding, and bad client messages."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from orchestrator_site.asgi import application
from tasks_app.consumers import MAX_CLIENT_MESSAGE
from tasks_app.models import Notification, Signature, Status
from tasks_app.services import execution, live

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def socket(path: str, cookie: str | None = None, origin: str = "http://localhost") -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode()), (b"host", b"localhost")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


def scenario(test: Callable[[], Awaitable[None]]) -> None:
    """Run an async scenario; services called inside it publish on the scenario's event loop."""
    async_to_sync(test)()


def submit(owner, **kwargs) -> Signature:
    spec = {"task": "examples.build_crm", "kwargs": {"seconds_per_item": 0}, **kwargs}
    return execution.submit(spec, owner=owner, run=False)


publish_progress = database_sync_to_async(
    lambda sig, percent: live.progress(sig, percent=percent, current_step=2, total_steps=4, eta_seconds=30)
)


async def refused_with(ws: WebsocketCommunicator) -> int:
    connected, _ = await ws.connect()
    assert connected  # accepted, then closed with a code the page can read
    closing = await ws.receive_output(timeout=2)
    assert closing["type"] == "websocket.close"
    await ws.wait()
    return closing["code"]


# Who may connect ----------------------------------------------------------------------------------


def test_anonymous_connections_are_refused(owner):
    sig = submit(owner)

    async def run() -> None:
        assert await refused_with(socket("/ws/tasks/")) == 4401
        assert await refused_with(socket(f"/ws/tasks/{sig.pk}/")) == 4401

    scenario(run)


def test_other_users_tasks_are_refused_and_staff_may_watch(owner, stranger, operator):
    owner_cookie = cookie_for(owner)
    staff_cookie = cookie_for(operator)
    stranger_cookie = cookie_for(stranger)
    sig = submit(owner)

    async def run() -> None:
        assert await refused_with(socket(f"/ws/tasks/{sig.pk}/", stranger_cookie)) == 4404
        assert await refused_with(socket("/ws/tasks/999999/", owner_cookie)) == 4404
        ws = socket(f"/ws/tasks/{sig.pk}/", staff_cookie)
        assert (await ws.connect())[0]
        assert (await ws.receive_json_from(timeout=2))["task_id"] == sig.pk
        await ws.disconnect()

    scenario(run)


def test_a_page_of_another_site_cannot_open_a_socket(owner):
    owner_cookie = cookie_for(owner)
    async def run() -> None:
        connected, _ = await socket("/ws/tasks/", owner_cookie, origin="http://evil.example").connect()
        assert not connected

    scenario(run)


# Snapshot first, then live messages ----------------------------------------------------------------


def test_the_user_stream_starts_with_a_snapshot_of_their_own_tasks(owner, stranger):
    owner_cookie = cookie_for(owner)
    older, newer = submit(owner, name="Older"), submit(owner, name="Newer")
    submit(stranger, name="Not yours")
    Notification.objects.create(owner=owner, event="task_started", title="hi", deliveries={"in_app": "sent"})

    async def run() -> None:
        ws = socket("/ws/tasks/", owner_cookie)
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from(timeout=2)
        assert snapshot["type"] == "snapshot" and snapshot["unread_notifications"] == 1
        assert [t["task_id"] for t in snapshot["tasks"]] == [newer.pk, older.pk]
        assert [s["name"] for s in snapshot["tasks"][0]["steps"]][:2] == ["Create database tables",
                                                                          "Generate application UI"]
        await ws.disconnect()

    scenario(run)


def test_a_task_stream_starts_with_its_progress_payload_and_dates_as_text(owner, django_capture_on_commit_callbacks):
    owner_cookie = cookie_for(owner)
    with django_capture_on_commit_callbacks(execute=True):
        sig = execution.submit({"task": "examples.sleep", "kwargs": {"seconds": 1}}, owner=owner)
    execution.claim(sig.pk, 1)

    async def run() -> None:
        ws = socket(f"/ws/tasks/{sig.pk}", owner_cookie)  # the trailing slash is optional
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from(timeout=2)
        assert (snapshot["type"], snapshot["task_id"]) == ("snapshot", sig.pk)
        assert snapshot["task"]["status"] == Status.RUNNING and isinstance(snapshot["task"]["started_at"], str)
        await ws.disconnect()

    scenario(run)


def test_messages_reach_the_owners_sockets_and_no_one_elses(owner, stranger):
    owner_cookie = cookie_for(owner)
    stranger_cookie = cookie_for(stranger)
    sig = submit(owner)

    async def run() -> None:
        everything, one_task = socket("/ws/tasks/", owner_cookie), socket(f"/ws/tasks/{sig.pk}/", owner_cookie)
        theirs = socket("/ws/tasks/", stranger_cookie)
        for ws in (everything, one_task, theirs):
            assert (await ws.connect())[0]
            assert (await ws.receive_json_from(timeout=2))["type"] == "snapshot"
        await publish_progress(sig, 65)
        for ws in (everything, one_task):
            message = await ws.receive_json_from(timeout=2)
            assert (message["type"], message["task_id"], message["percent"]) == ("progress", sig.pk, 65)
        assert await theirs.receive_nothing(timeout=0.3)
        for ws in (everything, one_task, theirs):
            await ws.disconnect()

    scenario(run)


def test_a_workflow_socket_sees_its_members(owner):
    owner_cookie = cookie_for(owner)
    chain = execution.submit({"kind": "chain", "steps": [{"task": "examples.noop"}, {"task": "examples.noop"}]},
                             owner=owner, run=False)
    first, member = chain.members.order_by("position")

    async def run() -> None:
        ws = socket(f"/ws/tasks/{chain.pk}/", owner_cookie)
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from(timeout=2)
        assert [s["task_id"] for s in snapshot["task"]["steps"]] == [first.pk, member.pk]
        await publish_progress(member, 40)
        assert (await ws.receive_json_from(timeout=2))["task_id"] == member.pk
        await ws.disconnect()

    scenario(run)


def test_a_reconnecting_client_gets_the_current_state_first(owner):
    owner_cookie = cookie_for(owner)
    sig = submit(owner)

    async def run() -> None:
        first = socket(f"/ws/tasks/{sig.pk}/", owner_cookie)
        assert (await first.connect())[0]
        await first.receive_json_from(timeout=2)
        await first.disconnect()
        await database_sync_to_async(Signature.objects.filter(pk=sig.pk).update)(progress=65)
        again = socket(f"/ws/tasks/{sig.pk}/", owner_cookie)
        assert (await again.connect())[0]
        snapshot = await again.receive_json_from(timeout=2)
        assert snapshot["type"] == "snapshot" and snapshot["task"]["progress"] == 65
        await again.disconnect()

    scenario(run)


# Client messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("frame", "code"), [
    ("this is not json", "invalid_json"),
    ("[1, 2, 3]", "not_an_object"),
    ('{"hello": "there"}', "missing_action"),
    ('{"action": "dance"}', "unknown_action"),
    ('{"action": "subscribe", "task_id": "seven"}', "invalid_task_id"),
    ("x" * (MAX_CLIENT_MESSAGE + 1), "too_large"),
    (b"\x00\x01binary", "binary_not_supported"),
])
def test_a_malformed_message_gets_an_error_and_the_socket_stays_open(owner, frame, code):
    owner_cookie = cookie_for(owner)
    async def run() -> None:
        ws = socket("/ws/tasks/", owner_cookie)
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=2)
        if isinstance(frame, bytes):
            await ws.send_to(bytes_data=frame)
        else:
            await ws.send_to(text_data=frame)
        error = await ws.receive_json_from(timeout=2)
        assert error["type"] == "error" and error["code"] == code and error["detail"]
        await ws.send_json_to({"action": "ping"})
        assert await ws.receive_json_from(timeout=2) == {"type": "pong", "task_id": None}
        await ws.disconnect()

    scenario(run)


def test_a_snapshot_can_be_asked_for_again(owner):
    owner_cookie = cookie_for(owner)
    sig = submit(owner)

    async def run() -> None:
        ws = socket(f"/ws/tasks/{sig.pk}/", owner_cookie)
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=2)
        await ws.send_to(text_data=json.dumps({"action": "snapshot"}))
        again = await ws.receive_json_from(timeout=2)
        assert (again["type"], again["task"]["task_id"]) == ("snapshot", sig.pk)
        await ws.disconnect()

    scenario(run)


def test_staff_subscribe_to_any_task_and_others_only_to_their_own(owner, stranger, operator):
    staff_cookie = cookie_for(operator)
    stranger_cookie = cookie_for(stranger)
    sig = submit(owner)

    async def run() -> None:
        watcher, nosy = socket("/ws/tasks/", staff_cookie), socket("/ws/tasks/", stranger_cookie)
        for ws in (watcher, nosy):
            assert (await ws.connect())[0]
            await ws.receive_json_from(timeout=2)
            await ws.send_json_to({"action": "subscribe", "task_id": sig.pk})
        assert (await watcher.receive_json_from(timeout=2))["type"] == "snapshot"
        refused = await nosy.receive_json_from(timeout=2)
        assert (refused["type"], refused["code"]) == ("error", "not_found")
        await publish_progress(sig, 10)
        assert (await watcher.receive_json_from(timeout=2))["type"] == "progress"
        assert await nosy.receive_nothing(timeout=0.3)
        await watcher.send_json_to({"action": "unsubscribe", "task_id": sig.pk})
        assert (await watcher.receive_json_from(timeout=2))["type"] == "unsubscribed"
        await publish_progress(sig, 20)
        assert await watcher.receive_nothing(timeout=0.3)
        for ws in (watcher, nosy):
            await ws.disconnect()

    scenario(run)
