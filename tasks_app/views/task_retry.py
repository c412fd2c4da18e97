"""Edit and retry `/tasks/{id}/retry/edit/`: the failed task's arguments in the *New task* form,
prefilled with the old ones; retrying with them resumes from the failed step or starts over."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from ..forms import ParamsForm
from ..models import Kind, Signature
from ..registry import get_task
from ..services import lifecycle
from ..services.errors import OrchestratorError, SpecError
from .common import actor, get_controllable, refusal
from .task_new import _attach


class RetryOptionsForm(forms.Form):
    from_start = forms.BooleanField(
        required=False, label="Start over",
        help_text="Redo the steps already completed (otherwise it resumes from the failed step and its checkpoint).",
    )


@login_required
@require_http_methods(["GET", "POST"])
def task_retry(request: HttpRequest, pk: int) -> HttpResponse:
    sig = get_controllable(request, pk)
    taskdef = get_task(sig.task_name) if sig.kind == Kind.TASK else None
    if taskdef is None:
        raise Http404("only a registered task's arguments can be edited")
    if request.method == "GET":
        params = ParamsForm(taskdef, initial=ParamsForm.initial_for(taskdef, sig.kwargs))
        return _page(request, sig, params, RetryOptionsForm())
    params, options = ParamsForm(taskdef, request.POST), RetryOptionsForm(request.POST)
    if params.is_valid() and options.is_valid():
        try:
            lifecycle.retry(sig, kwargs=params.kwargs(), from_start=options.cleaned_data["from_start"],
                            actor=actor(request))
        except SpecError as exc:
            for path, problem in exc.errors.items():
                _attach(path, problem, params, params)
        except OrchestratorError as exc:
            params.add_error(None, refusal(exc))
        else:
            messages.success(request, f"#{sig.pk} {sig.title}: retry queued with the new arguments.")
            return redirect("task_detail", pk=sig.pk)
    return _page(request, sig, params, options, status=400)


def _page(request: HttpRequest, sig: Signature, params: ParamsForm, options: RetryOptionsForm,
          status: int = 200) -> HttpResponse:
    context = {"sig": sig, "params": params, "options": options, "taskdef": params.taskdef,
               "allowed": sig.status in lifecycle.RETRYABLE}
    return render(request, "tasks_app/task_retry.html", context, status=status)
