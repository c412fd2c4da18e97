"""Security settings and limits: CSRF on every state-changing web action, the WebSocket Origin check,
a clean ``check --deploy`` with DEBUG off, no user input evaluated as code, the kwargs size limit, and
the API's rate limits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from orchestrator_site.asgi import application
from tasks_app.models import GraphDefinition, Notification, NotificationPreference, Schedule, Signature
from tests.api_helpers import ECHO, GRAPH, make
from tests.conftest import PASSWORD, client_for
from tests.test_authz_matrix import MATRIX

BASE_DIR = Path(__file__).resolve().parent.parent

# CSRF ------------------------------------------------------------------------------------------------

# (route, who, path, form data): every web route that changes something when POSTed to.
STATE_CHANGING = [
    ("task_bulk", "owner", "/tasks/bulk/", {"action": "pause", "ids": ["{task}"]}),
    ("task_action", "owner", "/tasks/{task}/pause/", {}),
    ("task_new", "owner", "/tasks/new/", {"mode": "task", "task": "examples.noop"}),
    ("notification_read", "owner", "/notifications/read/", {"all": "yes"}),
    ("notification_preferences", "owner", "/notifications/preferences/", {"in_app": "on"}),
    ("graph_new", "owner", "/graphs/new/", {"name": "g"}),
    ("graph_edit", "owner", "/graphs/{graph}/edit/", {"name": "g"}),
    ("graph_validate", "owner", "/graphs/validate/", {}),
    ("graph_params", "owner", "/graphs/params/", {"task": "examples.echo"}),
    ("graph_run", "owner", "/graphs/{graph}/run/", {}),
    ("graph_delete", "owner", "/graphs/{graph}/delete/", {}),
    ("schedule_action", "owner", "/schedules/{schedule}/pause/", {}),
    ("login", "anon", "/accounts/login/", {"username": "owner", "password": PASSWORD}),
    ("logout", "owner", "/accounts/logout/", {}),
    (
        "password_change",
        "owner",
        "/accounts/password_change/",
        {"old_password": PASSWORD, "new_password1": "another-horse-9", "new_password2": "another-horse-9"},
    ),
    ("password_reset", "anon", "/accounts/password_reset/", {"email": "owner@example.com"}),
    ("admin:login", "anon", "/admin/login/", {"username": "root", "password": PASSWORD}),
    ("admin:logout", "root", "/admin/logout/", {}),
    ("admin:tasks_app_signature_act", "root", "/admin/tasks_app/signature/{task}/act/pause_selected/", {}),
    (
        "admin:tasks_app_signature_changelist",
        "root",
        "/admin/tasks_app/signature/",
        {"action": "pause_selected", "_selected_action": ["{task}"]},
    ),
    ("admin:tasks_app_signature_add", "root", "/admin/tasks_app/signature/add/", {"task": "examples.noop"}),
    # The API with the web UI's session: DRF checks CSRF for session-authenticated requests.
    ("api:task-list", "owner", "/api/tasks/", {"task": "examples.noop"}),
]


@pytest.fixture
def people(owner) -> dict:
    root = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    task = make(owner, ECHO)
    graph = GraphDefinition.objects.create(owner=owner, name="a graph", spec=GRAPH)
    schedule = Schedule.objects.create(owner=owner, name="a schedule", spec=ECHO, interval=3600)
    Notification.objects.create(owner=owner, event="task_started", title="hi", deliveries={"in_app": "sent"})
    return {"users": {"owner": owner, "root": root, "anon": None},
            "ids": {"task": task.pk, "graph": graph.pk, "schedule": schedule.pk}}


def strict_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


def fill(value, ids: dict):
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value.format(**ids) if isinstance(value, str) and value.startswith("{") else value


def everything() -> list:
    """What a refused request must leave as it was."""
    return [
        *Signature.objects.order_by("pk").values_list("pk", "status", "delete_after"),
        *Notification.objects.order_by("pk").values_list("pk", "read_at"),
        *GraphDefinition.objects.order_by("pk").values_list("pk", "name"),
        *Schedule.objects.order_by("pk").values_list("pk", "paused"),
        *NotificationPreference.objects.order_by("pk").values_list("pk", "in_app"),
        *get_user_model().objects.order_by("pk").values_list("pk", "password", "last_login"),
    ]


@pytest.mark.parametrize(("route", "who", "path", "data"), STATE_CHANGING, ids=[r[0] for r in STATE_CHANGING])
def test_a_post_without_the_csrf_token_is_refused(route, who, path, data, people):
    ids = people["ids"]
    client = strict_client(people["users"][who])
    before = everything()
    response = client.post(path.format(**ids), {k: fill(v, ids) for k, v in data.items()})
    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert everything() == before


def test_the_same_post_with_the_token_passes_the_check(people):
    client = strict_client(people["users"]["owner"])
    client.get("/tasks/")  # sets the csrftoken cookie, as the page does for its forms
    token = client.cookies["csrftoken"].value
    response = client.post(f"/tasks/{people['ids']['task']}/pause/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Signature.objects.get(pk=people["ids"]["task"]).status == "paused"


def test_every_state_changing_route_of_the_matrix_is_checked_for_csrf():
    posted = {row.route for row in MATRIX if row.method != "GET" and not row.route.startswith("api:")}
    assert posted <= {route for route, *_ in STATE_CHANGING}


def test_token_clients_need_no_csrf_token(owner):
    client = client_for(owner)  # the API's other authentications are not cookies: no CSRF to forge
    assert client.post("/api/tasks/", {**ECHO, "run": False}, format="json").status_code == 201


# WebSocket Origin ------------------------------------------------------------------------------------


def socket_opens(path: str, cookie: str, origin: str | None) -> bool:
    headers = [(b"host", b"localhost"), (b"cookie", cookie.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))

    async def connect() -> bool:
        ws = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await ws.connect()
        if connected:
            await ws.disconnect()
        return connected

    return async_to_sync(connect)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", ["/ws/tasks/", "/ws/tasks/{task}/"])
def test_sockets_open_only_from_the_sites_own_pages(route, owner, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    client = Client()
    client.force_login(owner)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    path = route.format(task=make(owner, ECHO).pk)
    assert socket_opens(path, cookie, "http://localhost")
    for origin in ("http://evil.example", "http://localhost.evil.example", "null", None):
        assert not socket_opens(path, cookie, origin), origin


# Deployment settings ---------------------------------------------------------------------------------


def test_check_deploy_is_clean_with_debug_off(tmp_path):
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "x7!k" + "q9Zr-2mVt_8LpW#cYb4nHs6JdAe%Ug3F" * 2,
        "ALLOWED_HOSTS": "orchestrator.example.com",
        "ORCHESTRATOR_VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_debug_off_without_a_secret_key_refuses_to_start(tmp_path):
    env = {**os.environ, "DEBUG": "0", "ORCHESTRATOR_VAR_DIR": str(tmp_path)}
    env.pop("SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


# No input evaluated as code --------------------------------------------------------------------------

UNSAFE = re.compile(r"(?<![\w.])(eval|exec)\s*\(|\bpickle\.loads?\(|\bmarshal\.loads?\(|\byaml\.load\(|__import__\(")


def test_the_application_evaluates_no_input_as_code():
    sources = [p for p in (BASE_DIR / "tasks_app").rglob("*.py") if "migrations" not in p.parts]
    assert len(sources) > 20
    found = [
        f"{path.relative_to(BASE_DIR)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if UNSAFE.search(line)
    ]
    assert not found, found


# The kwargs size limit -------------------------------------------------------------------------------


@pytest.fixture
def small_kwargs(settings) -> int:
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "MAX_KWARGS_BYTES": 1000}
    return 1000


def test_oversize_kwargs_are_refused_with_413_naming_the_path(owner_client, small_kwargs):
    big = {"task": "examples.echo", "kwargs": {"value": "x" * small_kwargs}}
    spec = {"kind": "chain", "steps": [ECHO, {"kind": "swarm", "tasks": [ECHO, big]}], "run": False}
    before = Signature.objects.count()
    response = owner_client.post("/api/tasks/", spec, format="json")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert "steps[1].tasks[1].kwargs is 10" in response.json()["detail"]
    assert Signature.objects.count() == before


def test_kwargs_within_the_limit_are_accepted(owner_client, small_kwargs):
    spec = {"task": "examples.echo", "kwargs": {"value": "x" * (small_kwargs - 20)}, "run": False}
    assert owner_client.post("/api/tasks/", spec, format="json").status_code == 201


def test_oversize_kwargs_of_members_added_to_a_swarm_are_refused(owner_client, owner, small_kwargs):
    swarm = make(owner, {"kind": "swarm", "closed": False, "tasks": []})
    big = {"task": "examples.echo", "kwargs": {"value": "x" * small_kwargs}}
    response = owner_client.post(f"/api/tasks/{swarm.pk}/tasks", {"tasks": [ECHO, big]}, format="json")
    assert response.status_code == 413
    assert "tasks[1].kwargs" in response.json()["detail"]
    assert swarm.members.count() == 0


# Rate limits -----------------------------------------------------------------------------------------


@pytest.fixture
def low_rates(settings) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": "3/min", "anon": "2/min"}}
    cache.clear()
    yield
    cache.clear()


def test_a_user_over_the_rate_gets_429_in_the_error_format(owner_client, colleague_client, low_rates):
    assert [owner_client.get("/api/registry/").status_code for _ in range(3)] == [200, 200, 200]
    response = owner_client.get("/api/registry/")
    assert response.status_code == 429
    assert response.json()["code"] == "throttled" and "available in" in response.json()["detail"]
    assert int(response["Retry-After"]) > 0
    assert colleague_client.get("/api/registry/").status_code == 200  # each user has their own budget


def test_anonymous_clients_are_limited_by_address_and_cannot_spoof_it(low_rates):
    client = Client()
    assert [client.get("/api/schema/").status_code for _ in range(2)] == [200, 200]
    spoofed = client.get("/api/schema/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert spoofed.status_code == 429


def test_rates_come_from_the_environment(tmp_path):
    env = {
        **os.environ,
        "ORCHESTRATOR_API_RATE_USER": "5/second",
        "ORCHESTRATOR_API_RATE_ANON": "",
        "ORCHESTRATOR_VAR_DIR": str(tmp_path),
    }
    code = "from django.conf import settings; print(settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'])"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "{'user': '5/second', 'anon': None}", result.stderr


def test_the_metrics_window_is_bounded(owner_client):
    """A start decades back would mean a throughput point per day of them: refused, not computed."""
    response = owner_client.get("/api/metrics/", {"since": "0001-01-01T00:00:00Z"})
    assert response.status_code == 400
    assert "since" in response.json()["errors"]
