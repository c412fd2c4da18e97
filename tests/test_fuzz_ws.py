"""Hostile WebSocket frames: random text, JSON of every shape, unknown actions, wrong task ids, binary
and oversize frames, sent over the real ASGI application. Each frame gets exactly one answer (an
``error`` naming what is wrong, or the answer of a well-formed command) and the socket stays open:
a ``ping`` afterwards still gets its ``pong``."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator_site.asgi import application
from tasks_app.consumers import MAX_CLIENT_MESSAGE
from tests.api_helpers import ECHO, make

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("FUZZ_WS_EXAMPLES", "100"))
ACTIONS = ["ping", "snapshot", "subscribe", "unsubscribe", "dance", "", "PING", "do_ping", "__init__", "close"]
ANSWERS = {"ping": "pong", "snapshot": "snapshot", "unsubscribe": "unsubscribed"}
USER_ACTIONS = {"ping", "snapshot", "subscribe", "unsubscribe"}  # /ws/tasks/
TASK_ACTIONS = {"ping", "snapshot"}  # /ws/tasks/<id>/

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
task_ids = st.integers() | st.integers(min_value=10**18, max_value=10**40) | json_values
commands = st.fixed_dictionaries(
    {"action": st.sampled_from(ACTIONS) | st.text(max_size=20)},
    optional={"task_id": task_ids, "extra": json_values},
)
frames = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    commands.map(json.dumps),
    st.binary(max_size=200),
)


@pytest.fixture(autouse=True)
def memory_layer(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def cookie(owner) -> str:
    client = Client()
    client.force_login(owner)
    return f"sessionid={client.cookies['sessionid'].value}"


def socket(path: str, cookie: str) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie.encode())]
    return WebsocketCommunicator(application, path, headers=headers)


def expected_type(frame: str | bytes, actions: set[str]) -> str | set[str]:
    """The type of the one answer a frame deserves from a socket that knows ``actions``."""
    try:
        command = json.loads(frame) if isinstance(frame, str) and len(frame) <= MAX_CLIENT_MESSAGE else None
    except (ValueError, RecursionError):
        command = None
    if not isinstance(command, dict) or not isinstance(command.get("action"), str):
        return "error"
    action, task_id = command["action"], command.get("task_id")
    if action not in actions:
        return "error"
    valid_id = isinstance(task_id, int) and not isinstance(task_id, bool)
    if action == "subscribe" and valid_id:
        return {"snapshot", "error"}  # an own task, or not found
    if action in ("subscribe", "unsubscribe") and not valid_id:
        return "error"
    return ANSWERS.get(action, "error")


async def answers_each_and_stays_open(
    ws: WebsocketCommunicator, sent: list[str | bytes], actions: set[str] = USER_ACTIONS
) -> None:
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from(timeout=2))["type"] == "snapshot"
    for frame in sent:
        # send_input, not send_to: an empty frame is a frame too.
        await ws.send_input({"type": "websocket.receive", ("bytes" if isinstance(frame, bytes) else "text"): frame})
        answer: dict[str, Any] = await ws.receive_json_from(timeout=2)
        wanted = expected_type(frame, actions)
        assert answer["type"] in (wanted if isinstance(wanted, set) else {wanted}), (frame, answer)
        if answer["type"] == "error":
            assert answer["code"] and answer["detail"]
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=2) == {"type": "pong", "task_id": None}
    await ws.disconnect()


@pytest.mark.parametrize(("route", "actions"), [("/ws/tasks/", USER_ACTIONS), ("/ws/tasks/{task}/", TASK_ACTIONS)])
def test_random_frames_get_one_answer_each_and_the_socket_stays_open(route, actions, owner, cookie):
    path = route.format(task=make(owner, ECHO).pk)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(sent=st.lists(frames, min_size=1, max_size=5))
    def check(sent: list[str | bytes]) -> None:
        async_to_sync(answers_each_and_stays_open)(socket(path, cookie), sent, actions)

    check()


@pytest.mark.parametrize(
    "frame",
    [
        "x" * (MAX_CLIENT_MESSAGE + 1),
        json.dumps({"action": "ping", "pad": "x" * 1_000_000}),
        "[" * 100_000 + "]" * 100_000,
        b"\xff" * 1_000_000,
    ],
    ids=["just-over-the-limit", "1-MB-json", "deeply-nested", "1-MB-binary"],
)
def test_oversize_frames_are_refused_with_an_error(frame, cookie):
    async def run() -> None:
        ws = socket("/ws/tasks/", cookie)
        await answers_each_and_stays_open(ws, [frame])

    async_to_sync(run)()


def test_a_deeply_nested_frame_within_the_limit_is_an_error_not_a_crash(cookie):
    frame = "[" * 30_000 + "]" * 30_000  # under the size limit, past Python's recursion limit

    async def run() -> None:
        await answers_each_and_stays_open(socket("/ws/tasks/", cookie), [frame])

    async_to_sync(run)()
