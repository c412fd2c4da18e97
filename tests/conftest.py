"""Shared fixtures: the people (owner, colleague, stranger, staff), their API clients, the test
Redis, and real worker processes for end-to-end tests.

An end-to-end test module declares
`pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]`: the worker processes
only see committed rows, and with autocommit the services' on-commit enqueues fire at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import django_rq
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tests.redis_plugin import embedded_server
from tests.workers import Workers

PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """A PostgreSQL test database of this run's own (`test_<name>_<pid>`), as settings.py gives
    SQLite: two test runs on one server at the same time neither share nor drop each other's."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.postgresql" and not database.get("TEST", {}).get("NAME"):
        database.setdefault("TEST", {})["NAME"] = f"test_{database['NAME']}_{os.getpid()}"


@pytest.fixture(autouse=True)
def forget_tree_shapes() -> Iterator[None]:
    """Most tests' transactions are rolled back, and SQLite then hands their ids out again: the
    process's cache of which signature sits under which (services.live) must not outlive a test.
    The service's own care for rollbacks is not enough here: django_capture_on_commit_callbacks
    runs a test transaction's on-commit callbacks, and the transaction is rolled back afterwards."""
    yield
    from tasks_app.services import live

    live._ANCESTORS.clear()


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(username, email=f"{username}@example.com", password=PASSWORD, **extra)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def owner(db):
    return make_user("owner")


@pytest.fixture
def colleague(db):
    return make_user("colleague")


@pytest.fixture
def stranger(db):
    return make_user("stranger")


@pytest.fixture
def staff(db):
    """Staff without model permissions: the admin's door opens, but other users' tasks stay hidden."""
    return make_user("staff", is_staff=True)


def grant(user, *codenames: str):
    """The user (fetched afresh: Django caches permissions) with these ``tasks_app`` permissions added."""
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="tasks_app", codename__in=codenames))
    return get_user_model().objects.get(pk=user.pk)


@pytest.fixture
def operator(db):
    """Staff who see and control every user's tasks (``view_signature`` and ``change_signature``)."""
    return grant(make_user("operator", is_staff=True), "view_signature", "change_signature")


@pytest.fixture
def api_client() -> APIClient:
    """Not signed in."""
    return APIClient()


@pytest.fixture
def owner_client(owner) -> APIClient:
    return client_for(owner)


@pytest.fixture
def colleague_client(colleague) -> APIClient:
    return client_for(colleague)


@pytest.fixture
def stranger_client(stranger) -> APIClient:
    return client_for(stranger)


@pytest.fixture
def staff_client(staff) -> APIClient:
    return client_for(staff)


@pytest.fixture
def operator_client(operator) -> APIClient:
    return client_for(operator)


@pytest.fixture
def redis_conn():
    """The test Redis, emptied: no job or worker of an earlier test is left."""
    connection = django_rq.get_connection(settings.ORCHESTRATOR_QUEUES[0])
    connection.flushdb()
    return connection


@pytest.fixture(autouse=True)
def _no_api_rate_limits(settings) -> None:
    """Tests hammer the API: no rate limits, except where tests/test_security.py sets them to test them."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": None, "anon": None}}


@pytest.fixture(autouse=True)
def _fresh_login_limits() -> Iterator[None]:
    """Failed sign-ins of one test never lock the next one out: the counters live in the test Redis,
    which outlives a test (tasks_app/services/login_limits.py)."""
    yield
    from tasks_app.services import login_limits

    login_limits.reset_all()


@pytest.fixture(autouse=True)
def _fresh_redis_for_e2e(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("e2e"):
        request.getfixturevalue("redis_conn")


@pytest.fixture
def redis_loss(request: pytest.FixtureRequest, redis_conn) -> Callable[[], None]:
    """Simulates losing Redis: the embedded server restarts empty on the same port; a Redis
    server given by REDIS_URL has the test database flushed."""
    server = embedded_server(request.config)

    def lose() -> None:
        if server is not None:
            server.restart()
        else:
            redis_conn.flushdb()

    return lose


@pytest.fixture
def workers(transactional_db, redis_conn, tmp_path) -> Iterator[Workers]:
    """Real `manage.py worker` processes on the test database; all killed at teardown, before the
    database is flushed."""
    log_dir = tmp_path / "workers"
    log_dir.mkdir()
    pool = Workers(log_dir)
    yield pool
    pool.stop()
