"""The end-to-end harness: real worker processes run what the test submitted, on the test database."""

from __future__ import annotations

import dj_database_url
import pytest

from tasks_app.models import TERMINAL, Signature, Status
from tasks_app.services import execution
from tests.redis_plugin import url_for_tests
from tests.workers import database_url

e2e = pytest.mark.e2e
transactional = pytest.mark.django_db(transaction=True)


@e2e
@transactional
def test_a_burst_worker_runs_a_submitted_task_on_the_test_database(owner, workers):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": 7}}, owner=owner)

    workers.burst()

    sig.refresh_from_db()
    assert sig.status == Status.COMPLETED
    assert sig.result == 7


@e2e
@transactional
def test_running_workers_finish_a_chain_while_the_test_watches_the_database(owner, workers):
    workers.start(n=2)
    spec = {"kind": "chain", "steps": [{"task": "examples.echo", "kwargs": {"value": 21}}, {"task": "examples.double"}]}
    chain = execution.submit(spec, owner=owner)

    workers.drain(until=lambda: Signature.objects.get(pk=chain.pk).status in TERMINAL)

    chain.refresh_from_db()
    assert chain.status == Status.COMPLETED
    assert chain.result == 42


@e2e
@transactional
def test_a_task_queued_before_redis_is_lost_still_runs(owner, workers, redis_loss):
    sig = execution.submit({"task": "examples.echo", "kwargs": {"value": "survivor"}}, owner=owner)

    redis_loss()
    workers.burst()  # the worker's start-up reconcile pass re-enqueues the lost job

    sig.refresh_from_db()
    assert sig.status == Status.COMPLETED
    assert sig.result == "survivor"


@pytest.mark.parametrize(
    "settings_dict",
    [
        {"ENGINE": "django.db.backends.sqlite3", "NAME": "/work/var/test_db.sqlite3"},
        {"ENGINE": "django.db.backends.postgresql", "NAME": "test_test", "USER": "postgres", "PASSWORD": "",
         "HOST": "127.0.0.1", "PORT": 5432},
        {"ENGINE": "django.db.backends.postgresql", "NAME": "test_app", "USER": "app", "PASSWORD": "p@ss/word",
         "HOST": "db.internal", "PORT": ""},
    ],
)
def test_worker_subprocesses_get_the_same_database_as_the_tests(settings_dict):
    parsed = dj_database_url.parse(database_url(settings_dict))

    assert parsed["ENGINE"] == settings_dict["ENGINE"]
    for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
        assert (parsed.get(key) or "") == (settings_dict.get(key) or ""), key


@pytest.mark.parametrize(
    ("configured", "used"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/15"),
        ("redis://:secret@redis.internal:6380", "redis://:secret@redis.internal:6380/15"),
        ("redis://127.0.0.1:6379/7", "redis://127.0.0.1:6379/7"),
    ],
)
def test_tests_never_flush_the_database_applications_use_by_default(configured, used):
    assert url_for_tests(configured) == used
