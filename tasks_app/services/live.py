"""Live messages (CONTRACT.md §6) to browsers and API clients over the Channels layer.

Messages go to ``task-<id>`` for the signature and each of its ancestors (a workflow's page sees
its members) and to ``user-<owner id>``. Inside a transaction they are buffered and sent in one
batch after commit, so nobody sees a state that was rolled back; outside one they go at once.
"""

from __future__ import annotations

import logging
import os
import queue
import threading

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from channels_redis.utils import decode_hosts
from django.db import connection, transaction

from .. import private_apis
from ..models import Signature
from . import transport

log = logging.getLogger(__name__)
_local = threading.local()
EVENT_MESSAGE = "task.message"


def task_group(task_id: int) -> str:
    return f"task-{task_id}"


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


_ANCESTORS: dict[int, tuple[int, ...]] = {}
_ANCESTORS_MAX = 100_000


def _ancestors(task_id: int) -> tuple[int, ...]:
    """The ids above a signature (members and callbacks alike); a tree's shape never changes."""
    known = _ANCESTORS.get(task_id)
    if known is None and connection.in_atomic_block:
        known = _learned().get(task_id)
    if known is not None:
        return known
    row = Signature.objects.filter(pk=task_id).order_by().values_list("parent_id", "callback_of_id").first()
    if row is None:
        return ()
    up = row[0] or row[1]
    return _keep(task_id, (up, *_ancestors(up)) if up else ())


def _keep(task_id: int, ancestors: tuple[int, ...]) -> tuple[int, ...]:
    if connection.in_atomic_block:
        _learned()[task_id] = ancestors
    else:
        _store(task_id, ancestors)
    return ancestors


def _store(task_id: int, ancestors: tuple[int, ...]) -> None:
    if len(_ANCESTORS) >= _ANCESTORS_MAX:
        _ANCESTORS.clear()
    _ANCESTORS[task_id] = ancestors


class _Learned(dict):
    """Ancestors read inside a transaction, cached only once it commits: the rows may be its own,
    and on SQLite a rollback hands their ids out again, to signatures elsewhere in a tree."""

    def commit(self) -> None:
        for task_id, ancestors in self.items():
            _store(task_id, ancestors)


def _learned() -> _Learned:
    """This transaction's (or savepoint's) ancestors learned so far."""
    savepoints = tuple(connection.savepoint_ids)
    current = getattr(_local, "learned", None)
    if current is None or current[0] != savepoints or not _registered(current[1]):
        current = _local.learned = (savepoints, _Learned())
        transaction.on_commit(current[1].commit)
    return current[1]


def _said_by_row(sig: Signature) -> tuple[int, ...] | None:
    """A loaded signature's ancestors where its row says them: none at the top, the root alone
    right under it (the root is the top of its tree); None deeper down."""
    up = sig.parent_id or sig.callback_of_id
    if up is None:
        return ()
    return (up,) if up == sig.root_id else None


def remember(sig: Signature) -> None:
    """Learn a loaded signature's ancestors without a query where its row says them (a work horse
    starts with an empty cache, so this saves its lookups)."""
    known = _said_by_row(sig)
    if known is not None:
        _keep(sig.pk, known)


def groups_for(sig: Signature, ancestors: tuple[int, ...] | None = None) -> list[str]:
    if ancestors is None:
        ancestors = _ancestors(sig.pk)
    return [task_group(sig.pk), *(task_group(i) for i in ancestors), user_group(sig.owner_id)]


def publish(sig: Signature, type: str, **fields) -> None:
    """Send ``{"type": type, "task_id": id, **fields}`` to everyone watching the signature."""
    message = {"type": type, "task_id": sig.pk, **fields}
    _queue(groups_for(sig), message)


def _queue(groups: list[str], message: dict) -> None:
    if not connection.in_atomic_block:
        _send([(groups, message)])
        return
    pending = getattr(_local, "pending", None)
    if pending is None or not _registered(pending):
        pending = _local.pending = _Batch()
        transaction.on_commit(pending.flush)
    pending.append((groups, message))


class _Batch(list):
    """The messages of one transaction, sent by its on-commit callback (dropped on rollback)."""

    def flush(self) -> None:
        if getattr(_local, "pending", None) is self:
            _local.pending = None
        _send(list(self))


def _registered(owner: _Batch | _Learned) -> bool:
    """Whether the object's on-commit callback still waits for a commit (a rollback discards it)."""
    waiting = private_apis.on_commit_callbacks(connection)
    return any(getattr(callback, "__self__", None) is owner for callback in waiting)


def _send(batch: list) -> None:
    if not batch:
        return
    send(_resolve_touches(batch))


def send(batch: list[tuple[list[str], dict]]) -> None:
    """Deliver ``(groups, message)`` pairs now (or hand them to the process's outbox, when it has
    one); best effort, the database keeps the truth."""
    if _outbox is not None:
        _outbox.put(batch)
        return
    try:
        deliver(batch)
    except Exception:
        log.warning("live update not delivered", exc_info=True)


class _Outbox(threading.Thread):
    """Delivers the messages of a process with many tasks in flight (a worker's slots) from a
    thread of its own, several batches per Redis round trip, in the order they were sent: the
    threads that end tasks do not wait for Redis, nor hold the GIL's turn for it."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="orchestrator-live")
        self.queue: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, batch: list) -> None:
        self.queue.put(batch)

    def run(self) -> None:
        while True:
            batch = list(self.queue.get())
            while not self.queue.empty() and len(batch) < 1000:
                batch.extend(self.queue.get_nowait())
            try:
                deliver(batch)
            except Exception:
                log.warning("live update not delivered", exc_info=True)


_outbox: _Outbox | None = None


def _no_outbox_in_a_child() -> None:
    """A forked work horse sends its own messages: the outbox thread did not come along."""
    global _outbox
    _outbox = None


os.register_at_fork(after_in_child=_no_outbox_in_a_child)


def deliver_in_background() -> None:
    """From now on this process delivers live messages from a thread of its own (``_Outbox``)."""
    global _outbox
    if _outbox is None:
        _outbox = _Outbox()
        _outbox.start()


def deliver(batch: list[tuple[list[str], dict]]) -> None:
    """Deliver ``(groups, message)`` pairs now, raising when the channel layer cannot be reached."""
    layer = get_channel_layer()
    if layer is None or not batch:
        return
    publisher = _publisher(layer)
    if publisher is not None:
        publisher.publish(batch)
    else:
        _send_async(layer, batch)


def _send_async(layer, batch: list) -> None:
    async def send_all() -> None:
        for groups, message in batch:
            for group in groups:
                await layer.group_send(group, {"type": EVENT_MESSAGE, "message": message})

    async_to_sync(send_all)()


class _Publisher:
    """``group_send`` of the Redis pub/sub layer, done synchronously: one pipelined round trip.

    The layer's own ``group_send`` is async: from a worker it costs an event loop, a thread and a
    new Redis connection per batch. This writes the same bytes (the layer's serializer) to the
    same Redis channels over one kept connection per process.
    """

    def __init__(self, layer: RedisPubSubChannelLayer):
        self.layer = layer
        options = private_apis.layer_options(layer)
        self.prefix = options.get("prefix", "asgi")
        address = decode_hosts(options.get("hosts"))[0]["address"]
        self.redis = redis.Redis.from_url(
            address, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30,
            driver_info=transport.DRIVER_INFO,
        )

    def publish(self, batch: list) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for groups, message in batch:
            payload = self.layer.serialize({"type": EVENT_MESSAGE, "message": message})
            for group in groups:
                pipe.publish(private_apis.group_channel(self.prefix, group), payload)
        pipe.execute()


_publishers: dict[tuple[int, int], _Publisher] = {}


def _publisher(layer) -> _Publisher | None:
    """The process's publisher for a single-host Redis pub/sub layer; None for any other layer."""
    if not isinstance(layer, RedisPubSubChannelLayer) or len(private_apis.layer_options(layer).get("hosts") or ()) != 1:
        return None
    key = (os.getpid(), id(layer))  # a forked work horse opens its own connection
    if key not in _publishers:
        _publishers.clear()
        _publishers[key] = _Publisher(layer)
    return _publishers[key]


# What the services publish ----------------------------------------------------------------------


def touched(sig: Signature, event_type: str) -> None:
    """A transition happened: send the status as committed (and the end, once, with its result)."""
    _queue([], {"touch": sig.pk, "owner": sig.owner_id, "event": event_type, "up": _said_by_row(sig)})


def _resolve_touches(batch: list) -> list:
    ids = {m["touch"] for _, m in batch if "touch" in m}
    if not ids:
        return batch
    rows = {pk: (status, result, error) for pk, status, result, error in
            Signature.objects.filter(pk__in=ids).order_by().values_list("pk", "status", "result", "error")}
    resolved = []
    for groups, message in batch:
        if "touch" not in message:
            resolved.append((groups, message))
            continue
        if message["touch"] not in rows:
            continue
        sig = Signature(pk=message["touch"], owner_id=message["owner"])
        status, result, error = rows[sig.pk]
        groups = groups_for(sig, message["up"])
        resolved.append((groups, {"type": "status", "task_id": sig.pk, "status": status, "event": message["event"]}))
        if message["event"] == "completed":
            resolved.append((groups, {"type": "task_complete", "task_id": sig.pk, "result": result}))
        elif message["event"] == "failed":
            resolved.append((groups, {"type": "task_failed", "task_id": sig.pk, "error": error}))
    return resolved


def progress(sig: Signature, *, percent: float, current_step: int, total_steps: int, eta_seconds: float | None,
             current_step_name: str | None = None, **extra) -> None:
    """A ``progress`` message; ``extra`` fields ride along (a container's ``done_steps``, ``failed_steps``)."""
    publish(sig, "progress", percent=round(percent, 1), current_step=current_step, total_steps=total_steps,
            eta_seconds=eta_seconds, current_step_name=current_step_name, **extra)


def log_lines(task_id: int, owner_id: int, entries: list, limit: int = 500) -> None:
    """Log records of a batch; past ``limit`` one line says how many more were stored."""
    sig = Signature(pk=task_id, owner_id=owner_id)
    messages = [
        {"type": "log", "task_id": task_id, "level": e.levelname, "message": e.message[:2000], "at": e.at.isoformat()}
        for e in entries[:limit]
    ]
    if len(entries) > limit:
        messages.append({"type": "log", "task_id": task_id, "level": "INFO", "at": entries[-1].at.isoformat(),
                         "message": f"… {len(entries) - limit} more lines stored (see the logs page)"})
    groups = groups_for(sig)
    send([(groups, m) for m in messages])
