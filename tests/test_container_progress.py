"""A workflow's own progress: one computation (``progress.container_percent``) behind the page, the
API, the CLI and the container's ``progress`` messages; the ETA in tenths; messages that never go
backwards, with real workers and a real Redis at the end."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import time_machine
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from django.test import Client

from orchestrator_site.asgi import application
from tasks_app.models import Run, RunStatus, Signature, Status, Step, StepStatus
from tasks_app.services import containers, execution, lifecycle, live, progress
from tests.conftest import client_for

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def swarm_of(owner, n: int, *, task: str = "examples.noop", max_concurrency: int = 10, run: bool = False, **kwargs):
    spec = {"kind": "swarm", "max_concurrency": max_concurrency,
            "tasks": [{"task": task, "kwargs": kwargs, "name": f"m{i}"} for i in range(n)]}
    return execution.submit(spec, owner=owner, run=run)


def set_members(swarm: Signature, *states: tuple[str, float]) -> None:
    for member, (status, percent) in zip(swarm.members.order_by("position"), states, strict=True):
        Signature.objects.filter(pk=member.pk).update(status=status, progress=percent)


def sleep_history(owner, seconds: float, count: int = 3) -> None:
    """Completed runs of examples.sleep that took ``seconds``."""
    for _ in range(count):
        sig = Signature.objects.create(owner=owner, task_name="examples.sleep", status=Status.COMPLETED)
        Run.objects.create(signature=sig, number=1, status=RunStatus.COMPLETED, started_at=T0,
                           finished_at=T0 + dt.timedelta(seconds=seconds))


# The one computation ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_ended_members_count_whole_failed_and_skipped_ones_too_everywhere(owner):
    swarm = swarm_of(owner, 5)
    Signature.objects.filter(pk=swarm.pk).update(status=Status.RUNNING)
    set_members(swarm, (Status.COMPLETED, 100), (Status.FAILED, 30), (Status.SKIPPED, 0), (Status.RUNNING, 50),
                (Status.PENDING, 0))
    swarm.refresh_from_db()
    expected = (100 + 100 + 100 + 50 + 0) / 5

    data = progress.payload(swarm)
    assert (data["progress"], data["done_steps"], data["failed_steps"], data["total_steps"]) == (expected, 3, 1, 5)
    assert [s["progress"] for s in data["steps"]] == [100, 100, 100, 50, 0]
    api = client_for(owner)
    assert api.get(f"/api/tasks/{swarm.pk}/progress").json()["progress"] == expected
    assert api.get(f"/api/tasks/{swarm.pk}/").json()["progress"] == expected
    assert containers.roll_up(swarm) == expected
    web = Client()
    web.force_login(owner)
    page = web.get(f"/tasks/{swarm.pk}/").content.decode()
    assert "3 of 5 members done (1 failed)" in page and f'aria-valuenow="{int(expected)}"' in page
    out = io.StringIO()
    call_command("status", str(swarm.pk), stdout=out)
    assert f"{int(expected)}%" in out.getvalue()


@pytest.mark.django_db
def test_a_container_never_shows_less_than_it_stored(owner):
    swarm = swarm_of(owner, 2)
    Signature.objects.filter(pk=swarm.pk).update(status=Status.RUNNING, progress=80)
    set_members(swarm, (Status.RUNNING, 10), (Status.PENDING, 0))
    assert progress.payload(Signature.objects.get(pk=swarm.pk))["progress"] == 80


# ETA --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_eta_is_given_in_tenths_of_a_second(owner):
    for _ in range(3):
        done = Signature.objects.create(owner=owner, task_name="examples.build_crm", status=Status.COMPLETED)
        Step.objects.create(signature=done, order=1, name="Create database tables", status=StepStatus.COMPLETED,
                            started_at=T0, finished_at=T0 + dt.timedelta(seconds=2.34))
    sig = Signature.objects.create(owner=owner, task_name="examples.build_crm", status=Status.RUNNING, started_at=T0)
    Step.objects.create(signature=sig, order=1, name="Create database tables", status=StepStatus.RUNNING,
                        started_at=T0, progress=0)
    with time_machine.travel(T0 + dt.timedelta(seconds=1), tick=False):
        assert progress.payload(sig)["eta_seconds"] == 1.3  # 2.34 − 1, not a whole 1
        assert client_for(owner).get(f"/api/tasks/{sig.pk}/progress").json()["eta_seconds"] == 1.3


@pytest.mark.django_db
def test_a_swarms_eta_lays_its_members_on_its_slots(owner):
    sleep_history(owner, 2.0)
    swarm = swarm_of(owner, 5, task="examples.sleep", max_concurrency=2, seconds=2)
    Signature.objects.filter(pk=swarm.pk).update(status=Status.RUNNING, started_at=T0)
    assert progress.payload(Signature.objects.get(pk=swarm.pk))["eta_seconds"] == 6.0  # 2 + 2 + 2 on two slots
    first = swarm.members.order_by("position").first()
    Signature.objects.filter(pk=first.pk).update(status=Status.RUNNING, progress=25, started_at=T0)
    with time_machine.travel(T0 + dt.timedelta(seconds=0.5), tick=False):
        # 1.5 s left of the running one; then 2 s members on the slot free first: 0→2, 1.5→3.5, 2→4, 3.5→5.5
        assert progress.payload(Signature.objects.get(pk=swarm.pk))["eta_seconds"] == 5.5


@pytest.mark.django_db
def test_a_waiting_member_costs_its_turnaround_the_hand_over_included(owner):
    earlier = swarm_of(owner, 3, task="examples.sleep", seconds=2)
    for member in earlier.members.all():  # queued 0.5 s before a worker started each, which then ran 2 s
        Run.objects.create(signature=member, number=1, status=RunStatus.COMPLETED, queued_at=T0,
                           started_at=T0 + dt.timedelta(seconds=0.5), finished_at=T0 + dt.timedelta(seconds=2.5))
    swarm = swarm_of(owner, 4, task="examples.sleep", max_concurrency=2, seconds=2)
    Signature.objects.filter(pk=swarm.pk).update(status=Status.RUNNING, started_at=T0)
    assert progress.payload(Signature.objects.get(pk=swarm.pk))["eta_seconds"] == 5.0  # 2.5 + 2.5 on two slots


# The container's own messages --------------------------------------------------------------------


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """The live messages the services publish (the test's transaction never commits to send them)."""
    messages: list[dict] = []
    monkeypatch.setattr(live, "_queue", lambda groups, message: messages.append(message))
    monkeypatch.setattr(progress, "_announced", {})
    return messages


def container_progress(messages: list[dict], container: Signature) -> list[dict]:
    return [m for m in messages if m.get("type") == "progress" and m["task_id"] == container.pk]


@pytest.mark.django_db
def test_members_moving_send_the_containers_progress_throttled(owner, sent, django_capture_on_commit_callbacks):
    swarm = swarm_of(owner, 4)
    Signature.objects.filter(pk=swarm.pk).update(status=Status.RUNNING)
    set_members(swarm, (Status.COMPLETED, 100), (Status.RUNNING, 50), (Status.PENDING, 0), (Status.PENDING, 0))
    members = list(swarm.members.order_by("position"))
    with django_capture_on_commit_callbacks(execute=True):
        for member in members * 5:  # twenty moves within the throttle interval
            progress.member_moved(member)
    [message] = container_progress(sent, swarm)
    assert (message["percent"], message["done_steps"], message["total_steps"]) == (37.5, 1, 4)
    assert Signature.objects.get(pk=swarm.pk).progress == 37.5  # stored: a reload shows no less

    progress._announced.clear()  # the interval has passed
    set_members(swarm, (Status.COMPLETED, 100), (Status.FAILED, 50), (Status.RUNNING, 20), (Status.PENDING, 0))
    with django_capture_on_commit_callbacks(execute=True):
        progress.member_moved(members[2])
    assert [m["percent"] for m in container_progress(sent, swarm)] == [37.5, 55.0]


@pytest.mark.django_db
def test_a_nested_workflow_moves_its_container_too(owner, sent, django_capture_on_commit_callbacks):
    chain = execution.submit({"kind": "chain", "steps": [
        {"kind": "swarm", "tasks": [{"task": "examples.noop"}, {"task": "examples.noop"}]}, {"task": "examples.noop"},
    ]}, owner=owner, run=False)
    swarm = chain.members.get(position=0)
    Signature.objects.filter(pk__in=[chain.pk, swarm.pk]).update(status=Status.RUNNING)
    set_members(swarm, (Status.COMPLETED, 100), (Status.RUNNING, 0))
    with django_capture_on_commit_callbacks(execute=True):
        progress.member_moved(swarm.members.get(position=0))
    assert [m["percent"] for m in container_progress(sent, swarm)] == [50.0]
    assert [m["percent"] for m in container_progress(sent, chain)] == [25.0]


# The socket --------------------------------------------------------------------------------------


def cookie_for(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def ws_for(cookie: bytes, path: str) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)]
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.mark.django_db(transaction=True)
def test_a_socket_never_forwards_a_lower_percent_within_an_attempt(owner, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    swarm = swarm_of(owner, 2)
    publish = database_sync_to_async(
        lambda percent: live.progress(swarm, percent=percent, current_step=1, total_steps=2, eta_seconds=None))
    status = database_sync_to_async(lambda value: live.publish(swarm, "status", status=value))
    cookie = cookie_for(owner)

    async def run() -> None:
        ws = ws_for(cookie, f"/ws/tasks/{swarm.pk}/")
        assert (await ws.connect())[0]
        assert (await ws.receive_json_from(timeout=5))["type"] == "snapshot"
        for percent in (40, 60, 55, 60):  # two processes' messages crossing on the way
            await publish(percent)
        await status("queued")  # a retry: a new attempt starts over
        await publish(10)
        seen = []
        for _ in range(4):
            message = await ws.receive_json_from(timeout=5)
            seen.append(message.get("percent", message.get("status")))
        assert seen == [40, 60, 60, "queued"]
        assert (await ws.receive_json_from(timeout=5))["percent"] == 10
        assert await ws.receive_nothing(timeout=0.2)
        await ws.disconnect()

    async_to_sync(run)()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_running_swarm_sends_its_own_progress_that_never_goes_back(owner, workers):
    """Real workers and Redis: the swarm's socket gets progress messages with the swarm's own id, a
    percent and a done count that only grow, while members run and end."""
    workers.start(2)
    swarm = swarm_of(owner, 6, task="examples.sleep", max_concurrency=2, seconds=1, step=0.25)
    cookie = cookie_for(owner)

    async def run() -> list[dict]:
        ws = ws_for(cookie, f"/ws/tasks/{swarm.pk}/")
        assert (await ws.connect())[0]
        assert (await ws.receive_json_from(timeout=5))["type"] == "snapshot"
        await database_sync_to_async(lambda: lifecycle.start(swarm, actor="test"))()
        messages = []
        while not any(m["type"] == "task_complete" and m["task_id"] == swarm.pk for m in messages):
            messages.append(await ws.receive_json_from(timeout=30))
        await ws.disconnect()
        return messages

    messages = async_to_sync(run)()
    own = container_progress(messages, swarm)
    percents = [m["percent"] for m in own]
    assert len(own) >= 3, messages
    assert percents == sorted(percents) and percents[0] > 0
    done = [m["done_steps"] for m in own]
    assert done == sorted(done) and len(set(done)) >= 2
    assert all(m["total_steps"] == 6 for m in own)
    assert Signature.objects.get(pk=swarm.pk).status == Status.COMPLETED
