"""The *Schedules* page `/schedules/`: a person's schedules with their next run (shown in the
browser's zone by static/tasks_app/schedules.js) and last runs, a form to create or edit one, and
pause, resume, run now and delete as HTMX actions. Every change is a ``services.schedules`` call."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from ..forms import DepthSafeJSONField
from ..models import CatchUp, Schedule, controls_all_tasks
from ..services import schedules
from ..services.errors import OrchestratorError, SpecError
from .common import actor, refusal, with_messages

PAGE_SIZE = 50
LAST_RUNS = 5
LOCAL_TIME = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
EXAMPLE_SPEC = '{"task": "examples.echo", "kwargs": {"value": 1}}'


class ScheduleForm(forms.Form):
    """Start and end are wall-clock times in the schedule's zone; the service checks the whole."""

    name = forms.CharField(max_length=200)
    spec = DepthSafeJSONField(widget=forms.Textarea(attrs={"rows": 4, "class": "mono", "placeholder": EXAMPLE_SPEC}),
                              help_text="Any spec the API takes: a task, chain, swarm, graph or saved workflow.")
    cron = forms.CharField(max_length=200, required=False, help_text="e.g. 0 9 * * 1-5 (or leave empty and "
                           "give an interval)", widget=forms.TextInput(attrs={"class": "mono"}))
    timezone = forms.CharField(max_length=64, required=False, initial="UTC", label="Time zone",
                               widget=forms.TextInput(attrs={"data-default-zone": ""}))
    interval = forms.IntegerField(required=False, min_value=1, label="Interval (seconds)")
    start_at = forms.DateTimeField(required=False, label="Start", widget=LOCAL_TIME)
    end_at = forms.DateTimeField(required=False, label="End", widget=LOCAL_TIME)
    max_active = forms.IntegerField(required=False, min_value=1, label="Max active runs",
                                    help_text="Skip a tick while this many runs are still active.")
    catch_up = forms.ChoiceField(choices=CatchUp.choices, initial=CatchUp.SKIP, label="Missed ticks")

    def __init__(self, *args, owner, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner  # whose saved workflows the spec may name

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        data["cron"] = data.get("cron") or ""
        try:
            zone = schedules.zone(data.get("timezone") or "UTC")
            for field in ("start_at", "end_at"):
                if data.get(field):
                    data[field] = timezone.make_aware(timezone.make_naive(data[field]), zone)
            self.fields_data = schedules.validate(data, owner=self.owner)
        except SpecError as exc:
            for field, problem in schedules.field_errors(exc).items():
                self.add_error(field if field in self.fields else None, problem)
        return data

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleForm:
        zone = schedules.zone(schedule.timezone)
        initial = {f: getattr(schedule, f) for f in schedules.FIELDS}
        for field in ("start_at", "end_at"):
            if initial[field]:
                initial[field] = timezone.make_naive(initial[field], zone).strftime("%Y-%m-%dT%H:%M")
        return cls(initial=initial, owner=schedule.owner)


def _controllable(request: HttpRequest, pk: int) -> Schedule:
    schedule = get_object_or_404(schedules.visible_to(request.user), pk=pk)
    if schedule.owner_id != request.user.pk and not controls_all_tasks(request.user):
        raise PermissionDenied("Changing another user's schedule needs the change permission.")
    return schedule


def _rows(request: HttpRequest):
    page = Paginator(schedules.visible_to(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    for schedule in page:
        schedule.last_runs = list(schedule.runs.order_by("-created_at", "-id")[:LAST_RUNS])
    return page


@login_required
@require_http_methods(["GET", "POST"])
def schedule_list(request: HttpRequest) -> HttpResponse:
    """The list; POST creates a schedule from the form below it."""
    form = ScheduleForm(request.POST or None, owner=request.user)
    if request.method == "POST" and form.is_valid():
        schedule = schedules.create(form.fields_data, owner=request.user, actor=actor(request))
        messages.success(request, f"Schedule “{schedule.name}” created.")
        return redirect("schedule_list")
    if request.htmx and request.method == "GET":
        return render(request, "tasks_app/schedules.html#rows", {"page": _rows(request)})
    status = 400 if request.method == "POST" else 200
    return render(request, "tasks_app/schedules.html", {"page": _rows(request), "form": form}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def schedule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    schedule = _controllable(request, pk)
    form = ScheduleForm(request.POST, owner=schedule.owner) if request.method == "POST" else ScheduleForm.of(schedule)
    if request.method == "POST" and form.is_valid():
        schedules.update(schedule, form.fields_data, actor=actor(request))
        messages.success(request, f"Schedule “{schedule.name}” saved.")
        return redirect("schedule_list")
    status = 400 if request.method == "POST" else 200
    return render(request, "tasks_app/schedules_edit.html", {"schedule": schedule, "form": form}, status=status)


ACTIONS = {
    "pause": (schedules.pause, "paused"),
    "resume": (schedules.resume, "resumed"),
    "run": (schedules.run_now, "run now"),
    "delete": (schedules.delete, "deleted"),
}


@login_required
@require_POST
def schedule_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    if action not in ACTIONS:
        raise Http404("no such action")
    schedule = _controllable(request, pk)
    service, done = ACTIONS[action]
    try:
        service(schedule, actor=actor(request))
    except OrchestratorError as exc:
        messages.error(request, f"“{schedule.name}”: {refusal(exc)}")
    else:
        messages.success(request, f"Schedule “{schedule.name}” {done}.")
    if request.htmx:
        return with_messages(request, render(request, "tasks_app/schedules.html#rows", {"page": _rows(request)}))
    return redirect("schedule_list")

