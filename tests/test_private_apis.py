"""The private APIs in tasks_app/private_apis.py still do what the fast paths need, on the installed
RQ, channels_redis and Django (real Redis): an upgrade that changes one fails here first."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.db import connection, transaction
from rq import Queue, Worker
from rq.job import JobStatus
from rq.registry import FinishedJobRegistry
from rq.utils import now

from tasks_app import private_apis
from tasks_app.services import transport

QUEUE = "orchestrator-low"


@pytest.fixture
def queue():
    q = Queue(f"fence-{uuid.uuid4().hex[:8]}", connection=transport.connection(QUEUE))
    yield q
    q.empty()
    q.connection.delete(q.key)


def started(queue: Queue, worker: Worker):
    """A job taken by the worker the way a slot takes one (execution, job started)."""
    job = queue.enqueue("builtins.len", "abc")
    assert queue.connection.lpop(queue.key).decode() == job.id
    execution = worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    return job, execution


def test_a_job_marked_finished_is_recorded_finished_by_handle_job_success(queue):
    worker = Worker([queue], connection=queue.connection)
    job, execution = started(queue, worker)
    job.ended_at = now()
    private_apis.mark_finished(job)
    worker.handle_job_success(job, queue, queue.started_job_registry, execution)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.id in FinishedJobRegistry(queue.name, connection=queue.connection).get_job_ids()
    assert job.id not in queue.started_job_registry.get_job_ids()


def test_a_job_marked_stopped_is_recorded_stopped_not_failed(queue):
    worker = Worker([queue], connection=queue.connection)
    job, execution = started(queue, worker)
    job.ended_at = now()
    private_apis.mark_stopped(worker, job)
    worker.handle_job_failure(job, queue, queue.started_job_registry, "stopped", execution)
    job.refresh()
    assert job.get_status() == JobStatus.STOPPED
    assert worker._stopped_job_id is None  # used up by this job: the next failure is a failure


def test_a_queue_is_a_list_of_job_ids_read_from_its_head(queue):
    first, second = queue.enqueue("builtins.len", "a"), queue.enqueue("builtins.len", "b")
    taken = queue.connection.lpop(queue.key).decode()
    assert taken == first.id
    assert private_apis.is_in_queue(queue.connection, queue.key, second.id)
    assert not private_apis.is_in_queue(queue.connection, queue.key, first.id)
    with queue.connection.pipeline() as pipeline:
        private_apis.push_to_head(pipeline, queue.key, first.id)
        pipeline.execute()
    assert queue.get_job_ids() == [first.id, second.id]  # RQ's own view: back at the head


def test_a_message_published_on_a_group_channel_reaches_the_layers_group():
    layer = get_channel_layer()
    assert isinstance(layer, RedisPubSubChannelLayer)
    options = private_apis.layer_options(layer)
    assert options["hosts"] and options["prefix"]
    group = f"fence-{uuid.uuid4().hex[:8]}"

    async def roundtrip():
        fresh = RedisPubSubChannelLayer(**options)
        channel = await fresh.new_channel()
        await fresh.group_add(group, channel)
        try:
            client = aioredis.from_url(options["hosts"][0])
            await client.publish(private_apis.group_channel(options["prefix"], group),
                                 fresh.serialize({"type": "fence.message", "n": 1}))
            await client.aclose()
            return await asyncio.wait_for(fresh.receive(channel), timeout=5)
        finally:
            await fresh.group_discard(group, channel)
            await fresh.flush()

    assert asyncio.run(roundtrip()) == {"type": "fence.message", "n": 1}


@pytest.mark.django_db(transaction=True)
def test_on_commit_callbacks_are_those_waiting_for_the_current_commit():
    ran = []

    def callback() -> None:
        ran.append(True)

    with transaction.atomic():
        transaction.on_commit(callback)
        assert callback in private_apis.on_commit_callbacks(connection)
        try:
            with transaction.atomic():
                transaction.on_commit(ran.clear)
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass
        assert private_apis.on_commit_callbacks(connection) == [callback]  # the rolled-back one is gone
    assert ran == [True] and private_apis.on_commit_callbacks(connection) == []
