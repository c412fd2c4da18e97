"""The private parts of RQ, channels_redis and Django that the fast paths rely on, fenced here.

Each one is used through this module only, and tests/test_private_apis.py fails when an upgrade
of the library changes it (the versions are pinned in requirements.txt):

- RQ ``Job._result`` and ``Job._status``: a job that ends outside RQ's ``perform_job`` (a task in
  a worker's slots, a follow-up run in the worker) is marked finished before RQ's public
  ``handle_job_success`` records it (tasks_app/slots.py, tasks_app/worker.py).
- RQ ``Worker._stopped_job_id``: how ``handle_job_failure`` tells a stopped job from a failed one
  (tasks_app/slots.py, a task in a slot stopped by a stop-job command).
- RQ's queue layout: a queue is a Redis list of job ids at ``Queue.key``, read from its head
  (``POP_TASK_JOBS`` in tasks_app/slots.py takes task jobs from the heads in one trip).
- channels_redis ``RedisPubSubChannelLayer._kwargs`` (its ``hosts`` and ``prefix``) and the name of
  a group's Redis channel: tasks_app/services/live.py publishes a batch of live messages in one
  pipelined round trip instead of one ``group_send`` per group.
- Django ``connection.run_on_commit``: the callbacks waiting for the commit of the current
  transaction (live.py asks whether its batch is still among them after a savepoint rollback).
"""

from __future__ import annotations

from rq.job import Job, JobStatus


def mark_finished(job: Job) -> None:
    """A job ended well outside ``perform_job``: what RQ sets before ``handle_job_success``."""
    job._result, job._status = None, JobStatus.FINISHED


def mark_stopped(worker, job: Job) -> None:
    """The next ``handle_job_failure`` of ``job`` records it as stopped, not failed."""
    worker._stopped_job_id = job.id


def push_to_head(pipeline, queue_key: str, job_id: str) -> None:
    """Put a job back at the head of its queue: the next dequeue takes it first."""
    pipeline.lpush(queue_key, job_id)


def is_in_queue(connection, queue_key: str, job_id: str) -> bool:
    """Whether a job id waits in its queue's list (without reading the whole list)."""
    return connection.lpos(queue_key, job_id) is not None


def layer_options(layer) -> dict:
    """The keyword arguments a ``RedisPubSubChannelLayer`` was configured with."""
    return layer._kwargs


def group_channel(prefix: str, group: str) -> str:
    """The Redis pub/sub channel a ``RedisPubSubChannelLayer`` group's messages travel on."""
    return f"{prefix}__group__{group}"


def on_commit_callbacks(connection) -> list:
    """The callbacks registered with ``transaction.on_commit`` that wait for the current commit."""
    return [callback for _, callback, _ in connection.run_on_commit]
