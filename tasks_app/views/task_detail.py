"""The task detail `/tasks/{id}/`: the live progress view, controls, metadata, members, callbacks."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from ..forms import DecisionForm, DeleteForm, PriorityForm
from ..models import Signature, StepStatus
from ..services import approvals, deletion, lifecycle, progress
from ..services.errors import OrchestratorError, SpecError
from .common import actor, get_controllable, get_signature, refusal, with_messages

PARTIALS = {"header", "progress", "info", "members"}
MEMBERS_PER_PAGE = 50
LOG_TAIL = 50


def allowed_actions(sig: Signature) -> set[str]:
    """The controls the current status allows (the services still have the final word)."""
    allowed = {"cancel"}
    checks = {
        "pause": lifecycle.PAUSABLE, "resume": lifecycle.RESUMABLE, "interrupt": lifecycle.INTERRUPTIBLE,
        "retry": lifecycle.RETRYABLE, "rerun": lifecycle.RERUNNABLE,
    }
    allowed |= {action for action, statuses in checks.items() if sig.status in statuses}
    if sig.status in lifecycle.STARTABLE and sig.parent_id is None and sig.callback_of_id is None:
        allowed.add("start")
    if lifecycle.can_skip(sig):
        allowed.add("skip")
    if sig.delete_after is None:
        allowed.add("delete")
    elif sig.delete_after > timezone.now():
        allowed.add("restore")
    else:
        allowed.discard("rerun")
    return allowed


def substep_states(step: dict) -> list[dict]:
    """Each substep with its own state: done ones completed, the first open one shares the step's state."""
    states, current_taken = [], step["status"] not in (StepStatus.RUNNING, StepStatus.PAUSED, StepStatus.APPROVAL)
    for sub in step["substeps"]:
        if sub["done"]:
            state = StepStatus.COMPLETED
        elif not current_taken:
            state, current_taken = step["status"], True
        else:
            state = StepStatus.PENDING
        states.append({"name": sub["name"], "state": state})
    return states


def progress_context(sig: Signature) -> dict:
    data = progress.payload(sig)
    for step in data["steps"]:
        step["substep_states"] = substep_states(step)
    return data


def detail_context(request: HttpRequest, sig: Signature) -> dict:
    members = sig.members.order_by("position", "pk") if sig.is_container else Signature.objects.none()
    return {
        "sig": sig,
        "progress": progress_context(sig),
        "allowed": allowed_actions(sig),
        "approval": approvals.pending_for(sig),
        "up": sig.parent or sig.callback_of,
        "runs": sig.runs.order_by("-number")[:20],
        "callbacks": sig.callbacks.order_by("pk"),
        "members": Paginator(members, MEMBERS_PER_PAGE).get_page(request.GET.get("page")) if sig.is_container else None,
        "logs": list(_log_tail(sig)),
        "priority_form": PriorityForm(initial={"priority": sig.priority}),
        "delete_form": DeleteForm(),
        "decision_form": DecisionForm(),
    }


def _log_tail(sig: Signature):
    from ..services import logs

    tail = logs.for_tree(sig).order_by("-at", "-id")[:LOG_TAIL]
    return reversed(list(tail))


@login_required
@require_GET
def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
    sig = get_signature(request, pk)
    context = detail_context(request, sig)
    partial = request.GET.get("partial")
    if request.htmx and partial in PARTIALS:
        return render(request, f"tasks_app/task_detail.html#{partial}", context)
    return render(request, "tasks_app/task_detail.html", context)


# Actions ----------------------------------------------------------------------------------------


def _comment(request: HttpRequest) -> str:
    form = DecisionForm(request.POST)
    return form.cleaned_data["comment"] if form.is_valid() else ""


def _delete(request: HttpRequest, sig: Signature) -> str:
    form = DeleteForm(request.POST)
    ttl = form.cleaned_data["ttl"] if form.is_valid() else None
    sig = deletion.delete(sig, ttl=ttl, actor=actor(request))
    return f"moved to the trash; restorable until {timezone.localtime(sig.delete_after):%Y-%m-%d %H:%M}"


def _priority(request: HttpRequest, sig: Signature) -> str:
    form = PriorityForm(request.POST)
    if not form.is_valid():
        raise SpecError({"priority": "choose high, medium or low"})
    sig = lifecycle.set_priority(sig, form.cleaned_data["priority"], actor=actor(request))
    return f"priority is now {sig.priority}"


def _cancel(request: HttpRequest, sig: Signature) -> str:
    if request.POST.get("confirm") != "yes":
        raise SpecError({"confirm": "cancelling deletes the task and everything below it: confirm it in the dialog"})
    lifecycle.cancel(sig, confirm=True, actor=actor(request))
    return "cancelled and deleted"


def _decide(approve: bool) -> Callable[[HttpRequest, Signature], str]:
    def decide(request: HttpRequest, sig: Signature) -> str:
        approvals.decide(sig, approve=approve, comment=_comment(request), actor=actor(request))
        return "approved" if approve else "rejected"

    return decide


def _simple(service: Callable[..., object], done: str) -> Callable[[HttpRequest, Signature], str]:
    def act(request: HttpRequest, sig: Signature) -> str:
        service(sig, actor=actor(request))
        return done

    return act


ACTIONS: dict[str, Callable[[HttpRequest, Signature], str]] = {
    "start": _simple(lifecycle.start, "started"),
    "pause": _simple(lifecycle.pause, "paused"),
    "resume": _simple(lifecycle.resume, "resumed"),
    "interrupt": _simple(lifecycle.interrupt, "interrupted"),
    "retry": _simple(lifecycle.retry, "retry queued (from the failed step)"),
    "retry_from_start": _simple(functools.partial(lifecycle.retry, from_start=True), "retry queued (from the start)"),
    "skip": _simple(lifecycle.skip, "failure skipped; it goes on"),
    "rerun": _simple(lifecycle.rerun, "rerun started"),
    "restore": _simple(deletion.restore, "restored from the trash"),
    "delete": _delete,
    "priority": _priority,
    "cancel": _cancel,
    "approve": _decide(True),
    "reject": _decide(False),
}


@login_required
@require_POST
def task_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Run one control through its service; a refusal becomes a message, never an error page."""
    if action not in ACTIONS:
        raise Http404("unknown action")
    sig = get_controllable(request, pk)
    label = f"#{sig.pk} {sig.title}"
    try:
        messages.success(request, f"{label}: {ACTIONS[action](request, sig)}.")
    except Signature.DoesNotExist:
        messages.error(request, f"{label} no longer exists.")
        return _to(request, reverse("task_list"))
    except OrchestratorError as exc:
        messages.error(request, f"Refused — {label}: {refusal(exc)}.")
    else:
        if action == "cancel":
            return _to(request, reverse("task_list"))
    if request.htmx:
        sig.refresh_from_db()
        response = render(request, "tasks_app/task_detail.html#header", detail_context(request, sig))
        return trigger_client_event(with_messages(request, response), "task-changed")
    return redirect("task_detail", pk=sig.pk)


def _to(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
