"""The visual graph editor `/graphs/new/` and saved graph definitions `/graphs/`.

The editor (static/tasks_app/graph_editor.js) keeps the spec in the page and talks JSON to these
views: validate as you go, save; a node's arguments use the execute page's generated form.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..forms import PARAM_PREFIX, JSONValueField, ParamsForm
from ..models import GraphDefinition
from ..registry import TaskDef, all_tasks, get_task
from ..services import conditions, graph_definitions
from ..services.errors import OrchestratorError, PayloadTooLarge, SpecError
from .common import actor, get_signature, refusal, row_id

EMPTY_GRAPH = {"kind": "graph", "nodes": {}, "edges": []}


def definitions(request: HttpRequest) -> QuerySet[GraphDefinition]:
    """The definitions this person may open: their own, or all for staff."""
    rows = GraphDefinition.objects.all()
    return rows if request.user.is_staff else rows.filter(owner=request.user)


def _definition(request: HttpRequest, pk: int) -> GraphDefinition:
    return get_object_or_404(definitions(request), pk=pk)


@login_required
@require_GET
def graph_definition_list(request: HttpRequest) -> HttpResponse:
    rows = definitions(request).select_related("owner")
    return render(request, "tasks_app/graph_definitions.html", {"definitions": rows})


@login_required
@require_http_methods(["GET", "POST"])
def graph_new(request: HttpRequest) -> HttpResponse:
    """The editor on a blank graph, or on a copy of a task's stored spec (``?from_task=<id>``)."""
    if request.method == "POST":
        return _save(request, None)
    name, spec = "", EMPTY_GRAPH
    if row_id(request.GET.get("from_task")):
        sig = get_signature(request, row_id(request.GET["from_task"]))
        name, spec = f"Copy of {sig.title}", graph_definitions.spec_of_task(sig)
    return _editor(request, None, name, spec)


@login_required
@require_http_methods(["GET", "POST"])
def graph_edit(request: HttpRequest, pk: int) -> HttpResponse:
    definition = _definition(request, pk)
    if request.method == "POST":
        return _save(request, definition)
    return _editor(request, definition, definition.name, definition.spec)


def _editor(request: HttpRequest, definition: GraphDefinition | None, name: str, spec: dict) -> HttpResponse:
    context = {
        "definition": definition,
        "editor": {
            "name": name, "spec": spec, "id": definition.pk if definition else None,
            "save_url": reverse("graph_edit", args=[definition.pk]) if definition else reverse("graph_new"),
            "validate_url": reverse("graph_validate"), "params_url": reverse("graph_params"),
            "tasks": [{"name": t.name, "description": t.description.split("\n")[0]} for t in all_tasks()],
            "templates": conditions.TEMPLATES, "ops": conditions.OPS,
        },
    }
    return render(request, "tasks_app/graph_editor.html", context)


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError({"body": f"not valid JSON: {exc}"}) from exc
    except RecursionError:
        raise SpecError({"body": "not valid JSON: nested too deeply to read"}) from None
    if not isinstance(data, dict):
        raise SpecError({"body": "must be a JSON object"})
    return data


def _errors(exc: OrchestratorError) -> JsonResponse:
    errors = exc.errors if isinstance(exc, SpecError) else {"spec": str(exc)}
    return JsonResponse({"valid": False, "errors": errors}, status=413 if isinstance(exc, PayloadTooLarge) else 400)


def _save(request: HttpRequest, definition: GraphDefinition | None) -> JsonResponse:
    try:
        data = _body(request)
        definition = graph_definitions.save(owner=definition.owner if definition else request.user,
                                            name=str(data.get("name", "")), spec=data.get("spec"),
                                            definition=definition)
    except OrchestratorError as exc:
        return _errors(exc)
    urls = {"edit_url": reverse("graph_edit", args=[definition.pk]),
            "run_url": reverse("graph_run", args=[definition.pk])}
    return JsonResponse({"id": definition.pk, "name": definition.name, **urls}, status=200)


@login_required
@require_POST
def graph_validate(request: HttpRequest) -> JsonResponse:
    """``{"spec": ...}`` → ``{"valid": true, "errors": {}}``, or 400 with the errors by path."""
    try:
        graph_definitions.check(_body(request).get("spec"), request.user)
    except OrchestratorError as exc:
        return _errors(exc)
    return JsonResponse({"valid": True, "errors": {}})


@login_required
@require_POST
def graph_run(request: HttpRequest, pk: int) -> HttpResponse:
    definition = _definition(request, pk)
    try:
        sig = graph_definitions.run(definition, owner=request.user, actor=actor(request))
    except OrchestratorError as exc:
        messages.error(request, f"Refused — {definition.name}: {refusal(exc)}.")
        return redirect("graph_edit", pk=definition.pk)
    messages.success(request, f"#{sig.pk} {sig.title} submitted from the graph “{definition.name}”.")
    return redirect("task_detail", pk=sig.pk)


@login_required
@require_POST
def graph_delete(request: HttpRequest, pk: int) -> HttpResponse:
    definition = _definition(request, pk)
    definition.delete()
    messages.success(request, f"Graph “{definition.name}” deleted.")
    return redirect("graph_definition_list")


# A node's arguments: the execute page's generated form -----------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def graph_params(request: HttpRequest) -> HttpResponse:
    """GET: the form of a task's parameters, filled from ``kwargs`` (JSON). POST: the form's values
    cleaned into ``{"kwargs": ...}``, or ``{"errors": {field: [...]}}`` with 400."""
    data = request.POST if request.method == "POST" else request.GET
    taskdef = get_task(data.get("task", ""))
    if taskdef is None:
        return JsonResponse({"errors": {"task": ["unknown task"]}}, status=400)
    if request.method == "POST":
        form = ParamsForm(taskdef, request.POST)
        if not form.is_valid():
            return JsonResponse({"errors": form.errors}, status=400)
        return JsonResponse({"kwargs": form.kwargs()})
    form = ParamsForm(taskdef, initial=_initial(taskdef, _kwargs(data.get("kwargs"))))
    return render(request, "tasks_app/_graph_params.html", {"taskdef": taskdef, "params": form})


def _kwargs(raw: str | None) -> dict:
    try:
        value = json.loads(raw or "{}")
    except (json.JSONDecodeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _initial(taskdef: TaskDef, kwargs: dict) -> dict[str, Any]:
    """Form initial values for a node's kwargs: typed fields take the value, the rest go to ``extra``."""
    fields = ParamsForm(taskdef).fields
    initial: dict[str, Any] = {}
    extra = {k: v for k, v in kwargs.items() if PARAM_PREFIX + k not in fields}
    for name, value in kwargs.items():
        field = fields.get(PARAM_PREFIX + name)
        if field is None:
            continue
        if isinstance(value, bool):
            initial[PARAM_PREFIX + name] = "true" if value else "false"
        elif isinstance(field, JSONValueField):
            initial[PARAM_PREFIX + name] = json.dumps(value)
        else:
            initial[PARAM_PREFIX + name] = value
    if extra:
        initial["extra"] = json.dumps(extra)
    return initial
