"""The canvas from async code: ``arun``/``asave`` and the ``AsyncHandle`` (awaiting results, feeding a
swarm, lifecycle), called from an async Django view and a Channels consumer without ``sync_to_async``,
and end to end on real workers.

Without workers, ``worked()`` plays one in this process: it runs queued jobs (``tests.drain``) in
Django's sync thread between the awaits of the code under test, as a worker process would beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, override_settings
from django.urls import path

from tasks_app.canvas import AsyncHandle, Handle, SignatureFailed, chain, sign, swarm
from tasks_app.models import Signature, Status
from tasks_app.services.errors import InvalidTransition, SpecError
from tests.drain import drain

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")


async def worked(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` while an in-process worker runs every job that gets queued meanwhile."""
    waiting = asyncio.ensure_future(awaitable)
    while not waiting.done():
        await sync_to_async(drain, thread_sensitive=True)()
        await asyncio.wait({waiting}, timeout=0.02)
    return waiting.result()


def echoes(values) -> list:
    return [sign("examples.echo", value=v) for v in values]


# Run and await --------------------------------------------------------------------------------------


def test_a_chain_is_run_and_awaited_to_its_result(owner):
    async def scenario() -> tuple[AsyncHandle, Any]:
        handle = await chain([sign("examples.add", a=1, b=2), sign("examples.double")]).arun(owner=owner)
        assert await handle.astatus() == Status.RUNNING and await handle.aresult() is None
        return handle, await worked(handle.await_result(timeout=30, interval=0.02))

    handle, result = async_to_sync(scenario)()
    assert result == 6
    assert Signature.objects.get(pk=handle.id).status == Status.COMPLETED


def test_a_failed_signature_raises_with_its_error_and_await_end_returns_it(owner):
    async def scenario() -> tuple[SignatureFailed, Signature]:
        handle = await sign("examples.fail", message="disk full").arun(owner=owner)
        with pytest.raises(SignatureFailed) as failure:
            await worked(handle.await_result(timeout=30, interval=0.02))
        return failure.value, await handle.await_end(timeout=1)

    failure, ended = async_to_sync(scenario)()
    assert str(failure) == f"signature {ended.pk} ended failed: RuntimeError: disk full"
    assert failure.status == Status.FAILED and failure.error["message"] == "disk full"
    assert ended.status == Status.FAILED


def test_waiting_leaves_the_event_loop_free_and_times_out_with_the_status(owner):
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def scenario() -> AsyncHandle:
        handle = await sign("examples.noop").arun(owner=owner)  # no worker: it stays queued
        beside = asyncio.create_task(ticker())
        with pytest.raises(TimeoutError, match=rf"^signature {handle.id} is still queued after 0.5 s$"):
            await handle.await_result(timeout=0.5, interval=0.05)
        beside.cancel()
        return handle

    async_to_sync(scenario)()
    assert ticks >= 20  # about 50; a blocking wait lets it run only while a poll reads the database (11)


def test_asave_stores_without_starting_and_astart_starts(owner):
    async def scenario() -> list[str]:
        handle = await sign("examples.echo", value=1).asave(owner=owner)
        seen = [await handle.astatus()]
        await handle.astart()
        return [*seen, handle.signature.status, await worked(handle.await_result(timeout=30, interval=0.02))]

    assert async_to_sync(scenario)() == [Status.PENDING, Status.QUEUED, 1]


def test_the_two_handles_convert_and_share_the_signature(owner):
    handle = sign("examples.noop").run(owner=owner)
    assert isinstance(handle.aio, AsyncHandle) and handle.aio.sync is handle and handle.aio.id == handle.id
    assert isinstance(AsyncHandle(handle.signature).sync, Handle)


# Lifecycle ---------------------------------------------------------------------------------------------


def test_lifecycle_actions_are_awaited_and_refuse_what_the_status_forbids(owner):
    async def scenario() -> list[str]:
        handle = await sign("examples.echo", value="x").arun(owner=owner)
        seen = [(await handle.apause()).signature.status, (await handle.aresume()).signature.status,
                (await handle.ainterrupt()).signature.status, (await handle.aretry()).signature.status]
        with pytest.raises(InvalidTransition, match="cannot rerun a queued signature"):
            await handle.arerun()
        seen.append(await worked(handle.await_result(timeout=30, interval=0.02)))
        seen.append((await handle.arerun()).signature.status)
        with pytest.raises(SpecError, match="confirm"):
            await handle.acancel(confirm=False)
        await handle.acancel(confirm=True)
        return seen

    assert async_to_sync(scenario)() == [Status.PAUSED, Status.QUEUED, Status.INTERRUPTED, Status.QUEUED, "x",
                                         Status.QUEUED]
    assert not Signature.objects.exists()


# Swarms ------------------------------------------------------------------------------------------------


def test_an_open_swarm_is_fed_closed_and_awaited(owner):
    async def scenario() -> tuple[list, Any, int]:
        batch = await swarm([], max_concurrency=2, closed=False).arun(owner=owner)
        first = await batch.add_task(sign("examples.echo", value=0))
        await batch.add_tasks_bulk(echoes([1, 2]))
        await batch.add_task_and_run(sign("examples.echo", value=3))
        await batch.add_tasks_and_run(echoes([4]))
        with pytest.raises(SpecError, match=r"tasks\[1\]"):
            await batch.add_tasks_bulk([sign("examples.echo", value=5), sign("examples.no_such_task")])
        await batch.aclose()
        with pytest.raises(InvalidTransition, match="closed"):
            await batch.add_task(sign("examples.echo", value=6))
        result = await worked(batch.await_result(timeout=30, interval=0.02))
        return result, await first.aresult(), await Signature.objects.filter(parent_id=batch.id).acount()

    result, first, members = async_to_sync(scenario)()
    assert result == [0, 1, 2, 3, 4]
    assert first == 0 and members == 5  # the refused bulk add added nothing


# From an async Django view ------------------------------------------------------------------------------


async def sum_then_double(request: HttpRequest) -> JsonResponse:
    """An async view of a user's project: runs a chain and answers with its result."""
    flow = chain([sign("examples.add", a=1, b=2), sign("examples.double")])
    handle = await flow.arun(owner=request.user)
    try:
        result = await handle.await_result(timeout=30, interval=0.02)
    except SignatureFailed as failure:
        return JsonResponse({"detail": str(failure), "code": "failed"}, status=409)
    return JsonResponse({"id": handle.id, "result": result})


urlpatterns = [path("sum-then-double/", sum_then_double)]


def on_workers(workers, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run an async scenario beside real workers; a wait that times out shows what the workers said."""
    try:
        return async_to_sync(scenario)()
    except TimeoutError as timeout:
        raise AssertionError(f"{timeout}\n{workers.output()}") from timeout


@pytest.mark.e2e
@pytest.mark.canvas
@override_settings(ROOT_URLCONF=__name__)
def test_an_async_view_runs_a_chain_on_real_workers_and_answers_its_result(owner, workers):
    """On real workers: the project's sync middleware (WhiteNoise) runs the view in a thread of its own
    whose sync calls go back to this one, so no in-process worker could run jobs meanwhile."""
    workers.start(1)

    async def scenario():
        client = AsyncClient()
        await client.aforce_login(owner)
        return await client.get("/sum-then-double/")

    response = on_workers(workers, scenario)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["result"] == 6
    assert Signature.objects.get(pk=body["id"]).owner == owner


# From a Channels consumer -------------------------------------------------------------------------------


class SwarmFeeder(AsyncJsonWebsocketConsumer):
    """A consumer of a user's project: a page feeds an open swarm over its WebSocket."""

    async def connect(self) -> None:
        self.swarm = AsyncHandle(await Signature.objects.aget(pk=self.scope["url_route"]["kwargs"]["swarm_id"]))
        await self.accept()

    async def receive_json(self, content: dict, **kwargs: Any) -> None:
        try:
            added = await self.swarm.add_tasks_bulk(content["tasks"])
        except (SpecError, InvalidTransition) as refusal:
            await self.send_json({"type": "error", "detail": str(refusal), "code": refusal.code})
            return
        await self.send_json({"type": "added", "ids": [member.pk for member in added.added]})


@pytest.fixture
def memory_layer(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def test_a_channels_consumer_adds_swarm_members_in_bulk(owner, memory_layer):
    batch = swarm([], max_concurrency=3, closed=False).run(owner=owner)
    application = URLRouter([path("feed/<int:swarm_id>/", SwarmFeeder.as_asgi())])

    async def scenario() -> tuple[dict, dict, Any]:
        socket = WebsocketCommunicator(application, f"/feed/{batch.id}/")
        connected, _ = await socket.connect()
        assert connected
        await socket.send_json_to({"tasks": [sign("examples.echo", value=v).spec() for v in range(3)]})
        added = await socket.receive_json_from(timeout=5)
        await socket.send_json_to({"tasks": [{"task": "examples.echo"}, {"task": "examples.no_such_task"}]})
        refused = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        await batch.aio.aclose()
        return added, refused, await worked(batch.aio.await_result(timeout=30, interval=0.02))

    added, refused, result = async_to_sync(scenario)()
    assert added["type"] == "added" and len(added["ids"]) == 3
    assert refused["type"] == "error" and refused["code"] == "invalid" and "tasks[1]" in refused["detail"]
    assert result == [0, 1, 2]


# End to end on real workers ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.canvas
def test_on_real_workers_a_chain_and_an_open_swarm_are_awaited(owner, workers):
    workers.start(2)

    async def scenario() -> tuple[Any, Any, Any]:
        flow = await chain([sign("examples.add", a=1, b=2), sign("examples.double")]).arun(owner=owner)
        batch = await swarm([], max_concurrency=2, closed=False).arun(owner=owner)
        member = await batch.add_task(sign("examples.echo", value=0))
        await batch.add_tasks_bulk(echoes([1, 2]))
        await batch.add_task_and_run(sign("examples.echo", value=3))
        await batch.add_tasks_and_run(echoes([4, 5]))
        await batch.aclose()
        return (await flow.await_result(timeout=60), await batch.await_result(timeout=60),
                await member.await_result(timeout=5))

    chain_result, swarm_result, member_result = on_workers(workers, scenario)
    assert chain_result == 6
    assert swarm_result == [0, 1, 2, 3, 4, 5]
    assert member_result == 0
