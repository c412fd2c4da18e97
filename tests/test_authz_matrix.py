"""Who gets what, everywhere: every API endpoint, page, admin view and WebSocket route, asked by the
owner of the objects, another user, a staff user and an anonymous client (and, on admin views, a
superuser).

Another user's objects answer 404, never 403 (their existence stays hidden); the API refuses the
anonymous with 403 (session authentication comes first, so DRF answers 403 rather than 401), pages
send them to the sign-in page, sockets close with 4401. What another user asks never changes the
owner's objects. The last tests walk the URL configuration and the WebSocket routes: a named route
that is neither in the matrix nor in ``EXCLUDED_NAMESPACES`` fails the suite, so a new route needs its row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from orchestrator_site.asgi import application
from tasks_app.models import GraphDefinition, Notification, SavedWorkflow, Schedule, Signature
from tasks_app.routing import websocket_urlpatterns
from tests.api_helpers import ECHO, GRAPH, make
from tests.conftest import PASSWORD

ROLES = ("owner", "other", "staff", "anon")
OPEN = "open, snapshot first"


def to(path: str) -> str:
    """A redirect, compared by the start of its target (``to("/tasks/")`` matches ``/tasks/12/``)."""
    return f"redirect to {path}"


LOGIN = to("/accounts/login/?next=")
ADMIN_LOGIN = to("/admin/login/?next=")

Answer = int | str


@dataclass(frozen=True)
class Row:
    route: str
    method: str
    path: str  # placeholders: {task} {swarm} {notification} {graph} {owner}, also in the body
    owner: Answer
    other: Answer
    staff: Answer
    anon: Answer
    body: dict[str, Any] | None = None
    superuser: Answer | None = None
    as_json: bool = False

    def expected(self, role: str) -> Answer:
        return getattr(self, role)


def own(route: str, method: str, path: str, ok: Answer, body: dict | None = None) -> Row:
    """An API endpoint on one of the owner's tasks: others get 404, and so does staff without the model's
    permissions (tests/test_hardening_ops.py covers staff who hold them)."""
    return Row(route, method, path, ok, 404, 404, 403, body, as_json=True)


def per_user(route: str, method: str, path: str, ok: Answer, body: dict | None = None) -> Row:
    """An API endpoint about the caller's own things: every signed-in user gets an answer."""
    return Row(route, method, path, ok, ok, ok, 403, body, as_json=True)


def own_page(route: str, method: str, path: str, ok: Answer, body: dict | None = None) -> Row:
    return Row(route, method, path, ok, 404, 404, LOGIN, body)


def own_definition(route: str, method: str, path: str, ok: Answer, body: dict | None = None) -> Row:
    """A page on one of the owner's saved graph definitions: staff open every definition."""
    return Row(route, method, path, ok, 404, ok, LOGIN, body)


def page(route: str, method: str, path: str, ok: Answer, body: dict | None = None, as_json: bool = False) -> Row:
    return Row(route, method, path, ok, ok, ok, LOGIN, body, as_json=as_json)


def public(route: str, method: str, path: str, ok: Answer, body: dict | None = None) -> Row:
    return Row(route, method, path, ok, ok, ok, ok, body, as_json=route.startswith("api:"))


def admin_view(route: str, method: str, path: str, staff: Answer, superuser: Answer, body: dict | None = None) -> Row:
    """Admin views: only staff pass the admin's gate; model pages also need model permissions."""
    return Row(route, method, path, ADMIN_LOGIN, ADMIN_LOGIN, staff, ADMIN_LOGIN, body, superuser)


TASK = "/api/tasks/{task}/"
SCHEDULE = "/api/schedules/{schedule}/"
API = [
    per_user("api:task-list", "GET", "/api/tasks/", 200),
    per_user("api:task-list", "POST", "/api/tasks/", 201, {**ECHO, "run": False}),
    own("api:task-detail", "GET", TASK, 200),
    own("api:task-detail", "PATCH", TASK, 200, {"name": "renamed"}),
    own("api:task-detail", "DELETE", TASK, 200),
    own("api:task-start", "POST", TASK + "start", 200),
    own("api:task-pause", "POST", TASK + "pause", 200),
    own("api:task-resume", "POST", TASK + "resume", 409),
    own("api:task-interrupt", "POST", TASK + "interrupt", 200),
    own("api:task-retry", "POST", TASK + "retry", 409),
    own("api:task-skip", "POST", TASK + "skip", 409),
    own("api:task-rerun", "POST", TASK + "rerun", 409),
    own("api:task-restore", "POST", TASK + "restore", 409),
    own("api:task-cancel", "POST", TASK + "cancel", 200, {"confirm": True}),
    own("api:task-approve", "POST", TASK + "approve", 409, {"comment": ""}),
    own("api:task-reject", "POST", TASK + "reject", 409, {"comment": ""}),
    own("api:task-add-tasks", "POST", "/api/tasks/{swarm}/tasks", 201, {"tasks": [ECHO], "run": False}),
    own("api:task-close", "POST", "/api/tasks/{swarm}/close", 200),
    own("api:task-progress", "GET", TASK + "progress", 200),
    own("api:task-logs", "GET", TASK + "logs", 200),
    own("api:task-events", "GET", TASK + "events", 200),
    per_user("api:schedule-list", "GET", "/api/schedules/", 200),
    per_user("api:schedule-list", "POST", "/api/schedules/", 201, {"name": "n", "spec": ECHO, "interval": 60}),
    own("api:schedule-detail", "GET", SCHEDULE, 200),
    own("api:schedule-detail", "PATCH", SCHEDULE, 200, {"name": "renamed"}),
    own("api:schedule-detail", "DELETE", SCHEDULE, 204),
    own("api:schedule-pause", "POST", SCHEDULE + "pause", 200),
    own("api:schedule-resume", "POST", SCHEDULE + "resume", 200),
    own("api:schedule-run", "POST", SCHEDULE + "run", 201),
    own("api:schedule-runs", "GET", SCHEDULE + "runs", 200),
    per_user("api:workflow-list", "GET", "/api/workflows/", 200),
    per_user("api:workflow-list", "POST", "/api/workflows/", 201, {"name": "n", "spec": ECHO}),
    # A saved workflow resolves among its owner's: nobody else, staff included, sees or deletes it.
    own("api:workflow-detail", "GET", "/api/workflows/a-workflow/", 200),
    own("api:workflow-detail", "DELETE", "/api/workflows/a-workflow/", 204),
    per_user("api:registry", "GET", "/api/registry/", 200),
    per_user("api:graph-templates", "GET", "/api/graph-templates/", 200),
    per_user("api:metrics", "GET", "/api/metrics/", 200),
    per_user("api:resume-reports", "GET", "/api/resume-reports/", 200),
    # Workers and queues: staff only (is_staff, as the RQ dashboard); signed-in others get 403.
    Row("api:workers", "GET", "/api/workers/", 403, 403, 200, 403),
    Row("api:queues", "GET", "/api/queues/", 403, 403, 200, 403),
    per_user("api:notifications", "GET", "/api/notifications/", 200),
    per_user("api:notifications-read-all", "POST", "/api/notifications/read-all", 200),
    per_user("api:notification-preferences", "GET", "/api/notifications/preferences", 200),
    per_user("api:notification-preferences", "PATCH", "/api/notifications/preferences", 200, {"email": True}),
    # Notifications are personal: staff, too, see only their own.
    Row("api:notification-read", "POST", "/api/notifications/{notification}/read", 200, 404, 404, 403, as_json=True),
    per_user("api:chat", "POST", "/api/chat/", 200, {"message": "help"}),
    # Public by design: signing in for a token, and the API's description (no data in either).
    public("api:token", "POST", "/api/auth/token/", 200, {"username": "owner", "password": PASSWORD}),
    public("api:schema", "GET", "/api/schema/", 200),
    public("api:docs", "GET", "/api/docs/", 200),
]

PAGES = [
    page("dashboard", "GET", "/", 200),
    page("dashboard_metrics", "GET", "/dashboard/metrics.json", 200),
    page("task_list", "GET", "/tasks/", 200),
    page("task_bulk", "POST", "/tasks/bulk/", to("/tasks/"), {"action": "pause", "ids": ["{task}"]}),
    page("task_new", "GET", "/tasks/new/", 200),
    own_page("task_detail", "GET", "/tasks/{task}/", 200),
    own_page("task_logs", "GET", "/tasks/{task}/logs/", 200),
    own_page("task_logs_export", "GET", "/tasks/{task}/logs/export/", 200),
    own_page("task_action", "POST", "/tasks/{task}/pause/", to("/tasks/{task}/")),
    own_page("task_retry", "GET", "/tasks/{task}/retry/edit/", 200),
    own_page("task_graph", "GET", "/tasks/{task}/graph.json", 200),
    own_page("task_timeline", "GET", "/tasks/{task}/timeline.json", 200),
    own_page("task_graph_table", "GET", "/tasks/{task}/graph/table/", 200),
    own_page("task_graph_node", "GET", "/tasks/{task}/graph/node/{task}/", 200),
    page("graph_definition_list", "GET", "/graphs/", 200),
    page("graph_new", "GET", "/graphs/new/", 200),
    page("graph_validate", "POST", "/graphs/validate/", 200, {"spec": GRAPH}, as_json=True),
    page("graph_params", "GET", "/graphs/params/?task=examples.echo", 200),
    own_definition("graph_edit", "GET", "/graphs/{graph}/edit/", 200),
    own_definition("graph_run", "POST", "/graphs/{graph}/run/", to("/tasks/")),
    own_definition("graph_delete", "POST", "/graphs/{graph}/delete/", to("/graphs/")),
    page("schedule_list", "GET", "/schedules/", 200),
    own_page("schedule_edit", "GET", "/schedules/{schedule}/edit/", 200),
    own_page("schedule_action", "POST", "/schedules/{schedule}/pause/", to("/schedules/")),
    page("notification_list", "GET", "/notifications/", 200),
    page("notification_bell", "GET", "/notifications/bell/", 200),
    page("notification_read", "POST", "/notifications/read/", to("/notifications/"), {"all": "yes"}),
    page("notification_preferences", "GET", "/notifications/preferences/", 200),
    # Prometheus scrapes: staff sessions (or the bearer token, tests/test_prometheus.py); others 403.
    Row("prometheus_metrics", "GET", "/metrics", 403, 403, 200, 401),
    Row("workers", "GET", "/workers/", 403, 403, 200, LOGIN),
    # Signing in and out, and password resets, are for everyone.
    public("healthz", "GET", "/healthz", 200),
    public("login", "GET", "/accounts/login/", 200),
    public("logout", "POST", "/accounts/logout/", to("/accounts/login/")),
    page("password_change", "GET", "/accounts/password_change/", 200),
    page("password_change_done", "GET", "/accounts/password_change/done/", 200),
    public("password_reset", "GET", "/accounts/password_reset/", 200),
    public("password_reset_done", "GET", "/accounts/password_reset/done/", 200),
    public("password_reset_confirm", "GET", "/accounts/reset/MQ/not-a-token/", 200),
    public("password_reset_complete", "GET", "/accounts/reset/done/", 200),
]


def admin_rows() -> list[Row]:
    """The admin's own pages and a sample of its generated ones: each registered model's list."""
    rows = [
        admin_view("admin:index", "GET", "/admin/", 200, 200),
        Row("admin:login", "GET", "/admin/login/", 200, 200, to("/admin/"), 200, superuser=to("/admin/")),
        # Signing out of the admin: non-staff are sent to its index (and on to its sign-in page).
        Row(
            "admin:logout",
            "POST",
            "/admin/logout/",
            to("/admin/"),
            to("/admin/"),
            to("/accounts/login/"),
            to("/admin/"),
            superuser=to("/accounts/login/"),
        ),
        admin_view("admin:tasks_app_signature_change", "GET", "/admin/tasks_app/signature/{task}/change/", 403, 200),
        admin_view("admin:tasks_app_signature_add", "GET", "/admin/tasks_app/signature/add/", 403, 200),
        admin_view(
            "admin:tasks_app_signature_act",
            "POST",
            "/admin/tasks_app/signature/{task}/act/pause_selected/",
            403,
            to("/admin/tasks_app/signature/{task}/change/"),
        ),
        admin_view("admin:auth_user_change", "GET", "/admin/auth/user/{owner}/change/", 403, 200),
        # django-rq's dashboard checks is_staff only: staff read the queues without model permissions.
        admin_view("admin:django_rq_home", "GET", "/admin/django_rq/dashboard/", 200, 200),
    ]
    for model in admin.site._registry:
        opts = model._meta
        path = f"/admin/{opts.app_label}/{opts.model_name}/"
        if opts.app_label == "django_rq":
            continue  # its changelist is the dashboard above
        rows.append(admin_view(f"admin:{opts.app_label}_{opts.model_name}_changelist", "GET", path, 403, 200))
    return rows


MATRIX = [*API, *PAGES, *admin_rows()]


@dataclass(frozen=True)
class SocketRow:
    route: str
    path: str
    owner: Answer
    other: Answer
    staff: Answer
    anon: Answer

    def expected(self, role: str) -> Answer:
        return getattr(self, role)


SOCKETS = [
    SocketRow("ws-tasks", "/ws/tasks/", OPEN, OPEN, OPEN, 4401),
    SocketRow("ws-task", "/ws/tasks/{task}/", OPEN, 4404, 4404, 4401),
]

# Named routes with no row of their own, and why.
EXCLUDED_NAMESPACES = {
    "admin": "Django's admin: its generated add/change/delete/history pages and django-rq's dashboard pages all "
    "pass AdminSite.admin_view or staff_member_required; admin_rows() samples the gate on each registered model.",
}


# The world each case runs in ------------------------------------------------------------------------


@dataclass
class World:
    users: dict[str, Any]
    ids: dict[str, int] = field(default_factory=dict)

    def fill(self, text: str) -> str:
        for key, value in self.ids.items():
            text = text.replace(f"{{{key}}}", str(value))
        return text

    def fill_body(self, body: dict | None) -> dict | None:
        return None if body is None else json.loads(self.fill(json.dumps(body)))


@pytest.fixture(autouse=True)
def quick_passwords(settings) -> None:
    """Five users per case: the fastest hasher keeps hundreds of cases quick (no password is at stake)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(db, owner, colleague, staff) -> World:
    superuser = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    task = make(owner, ECHO)
    swarm = make(owner, {"kind": "swarm", "closed": False, "tasks": [ECHO]})
    note = Notification.objects.create(owner=owner, event="task_started", title="hi", deliveries={"in_app": "sent"})
    graph = GraphDefinition.objects.create(owner=owner, name="a graph", spec=GRAPH)
    schedule = Schedule.objects.create(owner=owner, name="a schedule", spec=ECHO, interval=3600)
    SavedWorkflow.objects.create(owner=owner, name="a-workflow", version=1, kind="task", spec=ECHO)
    users = {"owner": owner, "other": colleague, "staff": staff, "superuser": superuser, "anon": None}
    ids = {"task": task.pk, "swarm": swarm.pk, "notification": note.pk, "graph": graph.pk, "owner": owner.pk,
           "schedule": schedule.pk}
    return World(users, ids)


def client_of(world: World, role: str) -> Client:
    client = Client()
    if world.users[role] is not None:
        client.force_login(world.users[role])
    return client


def owners_state(world: World) -> list[tuple]:
    """What another user's request must leave alone: the owner's signatures and notifications."""
    owner = world.users["owner"]
    sigs = Signature.objects.filter(owner=owner).order_by("pk")
    notes = Notification.objects.filter(owner=owner).order_by("pk")
    graphs = GraphDefinition.objects.filter(owner=owner).order_by("pk")
    owned_schedules = Schedule.objects.filter(owner=owner).order_by("pk")
    saved_workflows = SavedWorkflow.objects.filter(owner=owner).order_by("pk")
    return [
        *sigs.values_list("pk", "status", "name", "priority", "delete_after", "config"),
        *notes.values_list("pk", "read_at"),
        *graphs.values_list("pk", "name", "spec"),
        *owned_schedules.values_list("pk", "name", "paused"),
        *saved_workflows.values_list("pk", "name", "version"),
    ]


def request(client: Client, row: Row, world: World):
    body = world.fill_body(row.body)
    path = world.fill(row.path)
    if row.method == "GET":
        return client.get(path)
    if row.as_json:
        return client.generic(row.method, path, data=json.dumps(body or {}), content_type="application/json")
    return client.post(path, body or {})


def answer_of(response) -> Answer:
    if response.status_code in (301, 302):
        return to(response["Location"])
    return response.status_code


def matches(answer: Answer, expected: Answer, world: World) -> bool:
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.startswith(world.fill(expected))
    return answer == expected


def cases() -> list:
    return [
        pytest.param(row, role, id=f"{row.method} {row.path} {role}")
        for row in MATRIX
        for role in ((*ROLES, "superuser") if row.superuser is not None else ROLES)
    ]


# The matrix ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("row", "role"), cases())
def test_each_role_gets_the_expected_answer(row: Row, role: str, world: World):
    before = owners_state(world)
    response = request(client_of(world, role), row, world)
    answer = answer_of(response)
    assert matches(answer, row.expected(role), world), f"{answer!r}: {response.content[:300]!r}"
    if role == "other":
        assert owners_state(world) == before, "another user's request changed the owner's objects"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("row", SOCKETS, ids=lambda r: r.path)
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_the_expected_socket(row: SocketRow, role: str, settings, owner, colleague, staff):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    users = {"owner": owner, "other": colleague, "staff": staff, "anon": None}
    task = make(owner, ECHO)
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if users[role] is not None:
        client = Client()
        client.force_login(users[role])
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    socket = WebsocketCommunicator(application, row.path.format(task=task.pk), headers=headers)
    assert async_to_sync(socket_answer)(socket) == row.expected(role)


async def socket_answer(socket: WebsocketCommunicator) -> Answer:
    connected, _ = await socket.connect()
    assert connected
    first = await socket.receive_output(timeout=2)
    if first["type"] == "websocket.close":
        await socket.wait()
        return first["code"]
    await socket.disconnect()
    return OPEN if '"type": "snapshot"' in first.get("text", "") else first


# No route without a row ------------------------------------------------------------------------------


def walk(patterns: list, namespace: str = "") -> Iterator[tuple[str, str | None]]:
    """(namespace, name) of every URL pattern, recursively through includes."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(filter(None, [namespace, pattern.namespace]))
            yield from walk(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern):
            yield namespace, pattern.name


def route_names() -> set[str]:
    return {":".join(filter(None, [ns, name])) for ns, name in walk(get_resolver().url_patterns) if name}


def test_every_named_route_has_a_row_or_a_reason():
    covered = {row.route for row in MATRIX}
    unexplained = {name for name in route_names() - covered if name.split(":")[0] not in EXCLUDED_NAMESPACES}
    assert not unexplained, f"routes missing from the authorisation matrix: {sorted(unexplained)}"
    assert not covered - route_names(), f"rows for routes that no longer exist: {sorted(covered - route_names())}"


def test_every_route_outside_the_admin_has_a_name():
    unnamed = [ns for ns, name in walk(get_resolver().url_patterns) if name is None and ns not in EXCLUDED_NAMESPACES]
    assert not unnamed, "an unnamed route cannot be checked by name; give it one"


def test_every_socket_route_has_a_row():
    names = {pattern.name for pattern in websocket_urlpatterns}
    assert names == {row.route for row in SOCKETS}
