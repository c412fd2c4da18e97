"""Execute a task `/tasks/new/`: a form built from a registered task's parameters, or a JSON spec."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from ..forms import PARAM_PREFIX, SPEC_EXAMPLE, ParamsForm, SpecForm, TaskChoiceForm
from ..registry import all_tasks, get_task
from ..services import execution
from ..services.errors import OrchestratorError, PayloadTooLarge, SpecError
from .common import actor

OPTION_FIELDS = {"name", "priority", "category", "tags"}


@login_required
@require_http_methods(["GET", "POST"])
def task_new(request: HttpRequest) -> HttpResponse:
    mode = "spec" if (request.POST or request.GET).get("mode") == "spec" else "task"
    if request.method == "POST":
        return _submit_spec(request) if mode == "spec" else _submit_task(request)
    choice = TaskChoiceForm(initial={"task": request.GET.get("task", "")})
    taskdef = get_task(request.GET.get("task", ""))
    context = _context(mode, choice, ParamsForm(taskdef) if taskdef else None, _spec_form())
    if request.htmx and request.GET.get("partial") == "params":
        return render(request, "tasks_app/task_new.html#params", context)
    return render(request, "tasks_app/task_new.html", context)


def _spec_form(data=None) -> SpecForm:
    return SpecForm(data, initial={"spec": json.dumps(SPEC_EXAMPLE, indent=2)})


def _context(mode: str, choice: TaskChoiceForm, params: ParamsForm | None, spec: SpecForm) -> dict:
    descriptions = {t.name: t.description for t in all_tasks()}
    return {"mode": mode, "choice": choice, "params": params, "spec_form": spec, "descriptions": descriptions,
            "taskdef": params.taskdef if params else None}


def _submit_task(request: HttpRequest) -> HttpResponse:
    choice = TaskChoiceForm(request.POST)
    taskdef = get_task(request.POST.get("task", ""))
    params = ParamsForm(taskdef, request.POST) if taskdef else None
    if choice.is_valid() and params is not None and params.is_valid():
        response = _submit(request, choice.apply(params.spec()), choice, params)
        if response is not None:
            return response
    return render(request, "tasks_app/task_new.html", _context("task", choice, params, _spec_form()), status=400)


def _submit_spec(request: HttpRequest) -> HttpResponse:
    form = _spec_form(request.POST)
    if form.is_valid():
        response = _submit(request, form.apply(form.cleaned_data["spec"]), form, form)
        if response is not None:
            return response
    return render(request, "tasks_app/task_new.html", _context("spec", TaskChoiceForm(), None, form), status=400)


def _submit(request: HttpRequest, spec: dict, options: Form, fields: Form) -> HttpResponse | None:
    """Submit through the service; errors are attached to the fields they name, None is returned."""
    try:
        sig = execution.submit(spec, owner=request.user, actor=actor(request))
    except SpecError as exc:
        for path, problem in exc.errors.items():
            _attach(path, problem, options, fields)
        return None
    except (PayloadTooLarge, OrchestratorError) as exc:
        fields.add_error(None, str(exc))
        return None
    messages.success(request, f"#{sig.pk} {sig.title} submitted.")
    return redirect("task_detail", pk=sig.pk)


def _attach(path: str, problem: str, options: Form, fields: Form) -> None:
    """A spec error next to the field it names: an option, a parameter, or else the spec itself."""
    if path in OPTION_FIELDS and path in options.fields:
        options.add_error(path, problem)
        return
    name = PARAM_PREFIX + path.removeprefix("kwargs.")
    if path.startswith("kwargs.") and name in fields.fields:
        fields.add_error(name, problem)
        return
    target = "spec" if "spec" in fields.fields else ("extra" if "extra" in fields.fields else None)
    fields.add_error(target, f"{path}: {problem}")
