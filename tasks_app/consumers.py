"""WebSocket entry points (CONTRACT.md §6): join the groups ``services.live`` publishes to, and forward.

``/ws/tasks/`` follows every task of the signed-in user (group ``user-<id>``); ``/ws/tasks/<id>/`` one
task and its descendants (group ``task-<id>``; members publish to their ancestors' groups too). Each
connection first gets a snapshot, then the live messages. A refused connection is accepted and closed
at once with a code the page can read: 4401 not signed in, 4404 no such task (or not theirs).

The consumers are async so that forwarding a live message stays on the event loop: a sync consumer
hands every message to Channels' single sync thread and back, and with 100 sockets watching a task
that reports 20 times a second those GIL hand-offs queue up to seconds of delay (bench/ws_latency.py).
Everything that reads the database is a service call wrapped in ``database_sync_to_async``.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.serializers.json import DjangoJSONEncoder

from .services import live, notifications

NOT_SIGNED_IN = 4401
NOT_FOUND = 4404
MAX_CLIENT_MESSAGE = 64 * 1024  # characters; clients only send small commands
MAX_TRACKED = 10_000  # tasks whose last percent a socket remembers (a user's socket sees every member)
RESTARTED = ("pending", "queued")

watchable = database_sync_to_async(notifications.watchable)
snapshot_for_task = database_sync_to_async(notifications.snapshot_for_task)
snapshot_for_user = database_sync_to_async(notifications.snapshot_for_user)


class ClientError(Exception):
    """A client message the server cannot act on; answered with ``{"type": "error"}``."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """What both endpoints share: refusing, joining groups, JSON in and out, the client commands."""

    async def connect(self) -> None:
        self.percents: dict[int, float] = {}  # the last percent forwarded, by task
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(NOT_SIGNED_IN)
            return
        self.user = user
        await self.start()

    async def start(self) -> None:
        """Join the groups this route watches and send the first snapshot (each route defines it)."""

    async def refuse(self, code: int) -> None:
        await self.accept()
        await self.close(code=code)

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups.append(group)

    async def leave(self, group: str) -> None:
        await self.channel_layer.group_discard(group, self.channel_name)
        self.groups.remove(group)

    async def task_message(self, event: dict) -> None:
        """A ``task.message`` from ``services.live`` or ``services.notifications``: forward it."""
        if self.moves_forward(event["message"]):
            await self.send_json(event["message"])

    def moves_forward(self, message: dict) -> bool:
        """False for a ``progress`` message below the last one this socket forwarded for its task:
        a container's messages come from every process whose members move, and can cross on the
        way. A new attempt (its ``status`` back to pending or queued) may start lower again."""
        kind, task_id = message.get("type"), message.get("task_id")
        if kind == "status" and message.get("status") in RESTARTED:
            self.percents.pop(task_id, None)
        elif kind == "progress":
            percent = message.get("percent") or 0
            if percent < self.percents.get(task_id, 0):
                return False
            if len(self.percents) >= MAX_TRACKED:
                self.percents.clear()
            self.percents[task_id] = percent
        return True

    async def dispatch(self, message: dict) -> None:
        # Forwarding touches no database, so it skips the connection clean-up Channels runs in a
        # worker thread before every handler: one thread hop per message per socket otherwise.
        if message["type"] == live.EVENT_MESSAGE:
            await self.task_message(message)
            return
        await super().dispatch(message)

    # Client messages --------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs) -> None:
        try:
            command = parse_command(text_data, bytes_data)
            handler = getattr(self, f"do_{command['action']}", None)
            if handler is None:
                raise ClientError("unknown_action", f"unknown action {command['action']!r}; use {self.actions()}")
            await handler(command)
        except ClientError as error:
            await self.send_json({"type": "error", "task_id": None, "code": error.code, "detail": error.detail})

    def actions(self) -> str:
        return ", ".join(sorted(name[3:] for name in dir(self) if name.startswith("do_")))

    async def do_ping(self, command: dict) -> None:
        await self.send_json({"type": "pong", "task_id": None})

    async def do_snapshot(self, command: dict) -> None:
        await self.send_json(await self.snapshot())

    async def snapshot(self) -> dict:
        """The current progress payload(s) of what this route watches (each route defines it)."""
        return {"type": "snapshot", "tasks": []}

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, cls=DjangoJSONEncoder)


class TasksConsumer(LiveConsumer):
    """``/ws/tasks/``: every task of the signed-in user; staff may also subscribe to anyone's task."""

    async def start(self) -> None:
        await self.join(live.user_group(self.user.pk))
        await self.accept()
        await self.send_json(await self.snapshot())

    async def snapshot(self) -> dict:
        return await snapshot_for_user(self.user)

    async def do_subscribe(self, command: dict) -> None:
        sig = await watchable(self.user, task_id_of(command))
        if sig is None:
            raise ClientError("not_found", f"no task #{command['task_id']} of yours")
        group = live.task_group(sig.pk)
        if sig.owner_id != self.user.pk and group not in self.groups:
            await self.join(group)  # the user's own tasks already arrive through user-<id>
        await self.send_json(await snapshot_for_task(sig))

    async def do_unsubscribe(self, command: dict) -> None:
        task_id = task_id_of(command)
        if live.task_group(task_id) in self.groups:
            await self.leave(live.task_group(task_id))
        await self.send_json({"type": "unsubscribed", "task_id": task_id})


class TaskConsumer(LiveConsumer):
    """``/ws/tasks/<id>/``: one task and its descendants; the owner or staff only."""

    async def start(self) -> None:
        sig = await watchable(self.user, int(self.scope["url_route"]["kwargs"]["task_id"]))
        if sig is None:
            await self.refuse(NOT_FOUND)
            return
        self.task_id = sig.pk
        await self.join(live.task_group(sig.pk))
        await self.accept()
        await self.send_json(await snapshot_for_task(sig))

    async def snapshot(self) -> dict:
        sig = await watchable(self.user, self.task_id)
        if sig is None:
            raise ClientError("not_found", f"task #{self.task_id} no longer exists")
        return await snapshot_for_task(sig)


def parse_command(text_data: str | None, bytes_data: bytes | None) -> dict:
    """``{"action": ...}`` from a client frame, or a ClientError saying what is wrong with it."""
    if text_data is None:
        raise ClientError("binary_not_supported", "send JSON text frames")
    if len(text_data) > MAX_CLIENT_MESSAGE:
        raise ClientError("too_large", f"messages are limited to {MAX_CLIENT_MESSAGE} characters")
    try:
        command = json.loads(text_data)
    except ValueError as exc:
        raise ClientError("invalid_json", f"not JSON: {exc}") from None
    except RecursionError:
        raise ClientError("invalid_json", "not JSON this program reads: nested too deeply") from None
    if not isinstance(command, dict):
        raise ClientError("not_an_object", 'send a JSON object such as {"action": "ping"}')
    if not isinstance(command.get("action"), str):
        raise ClientError("missing_action", 'a message needs an "action" string, e.g. {"action": "ping"}')
    return command


def task_id_of(command: dict) -> int:
    task_id = command.get("task_id")
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise ClientError("invalid_task_id", '"task_id" must be an integer')
    return task_id
