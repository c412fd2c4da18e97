"""The Django admin: signatures with every lifecycle action, a form to run a registered task, and
read-only views of what the machine writes (runs, steps, events, logs, resume reports, workers).

Every change goes through a service; the admin never writes a status. Deleting a signature is a
soft delete or a confirmed cancel, never Django's own delete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from . import cli
from .forms import DepthSafeJSONField
from .models import (
    CONTAINERS,
    Approval,
    Event,
    Kind,
    LogEntry,
    Priority,
    ResumeReport,
    Run,
    Schedule,
    Signature,
    Status,
    Step,
    WorkerProcess,
)
from .registry import all_tasks
from .services import deletion, events, execution, lifecycle, logs, progress, schedules, swarms, tree
from .services.errors import InvalidTransition, PayloadTooLarge, SpecError

LATEST_ROWS = 50
LISTED_MEMBERS = 100


def pretty_json(value: Any) -> str:
    if value in (None, {}, []):
        return "-"
    return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', json.dumps(value, indent=2, default=str))


def signature_link(pk: int | None, label: str = "") -> str:
    if pk is None:
        return "-"
    url = reverse("admin:tasks_app_signature_change", args=[pk])
    return format_html('<a href="{}">#{} {}</a>', url, pk, label)


# List filters ---------------------------------------------------------------------------------


class DeletionFilter(admin.SimpleListFilter):
    title = "deletion"
    parameter_name = "deletion"

    def lookups(self, request, model_admin):
        return [("live", "Live"), ("marked", "Marked for deletion")]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.live()
        if self.value() == "marked":
            return queryset.filter(delete_after__isnull=False)
        return queryset


class PlaceFilter(admin.SimpleListFilter):
    title = "place in the tree"
    parameter_name = "place"

    def lookups(self, request, model_admin):
        return [("top", "Top-level"), ("member", "Member"), ("callback", "Callback")]

    def queryset(self, request, queryset):
        if self.value() == "top":
            return queryset.top_level()
        if self.value() == "member":
            return queryset.filter(parent__isnull=False)
        if self.value() == "callback":
            return queryset.filter(callback_of__isnull=False)
        return queryset


class MinimumLevelFilter(admin.SimpleListFilter):
    title = "minimum level"
    parameter_name = "min_level"

    def lookups(self, request, model_admin):
        return [(str(n), name) for name, n in logs.LEVELS.items() if name != "WARN"]

    def queryset(self, request, queryset):
        return queryset.filter(level__gte=int(self.value())) if self.value() else queryset


# Inlines: read-only, newest rows only where a task can write thousands ------------------------


class LatestFormSet(BaseInlineFormSet):
    """Only the newest rows: a busy task has thousands of logs and the page must stay fast."""

    def get_queryset(self) -> QuerySet:
        if not hasattr(self, "_latest"):
            rows = super().get_queryset()
            newest = list(rows.order_by("-pk").values_list("pk", flat=True)[:LATEST_ROWS])
            self._latest = rows.filter(pk__in=newest)
        return self._latest


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class RunInline(ReadOnlyInline):
    model = Run
    fields = readonly_fields = Run.PUBLIC_FIELDS


class StepInline(ReadOnlyInline):
    model = Step
    fields = readonly_fields = ("order", "name", "status", "progress", "substeps", "started_at", "finished_at")


class EventInline(ReadOnlyInline):
    model = Event
    fk_name = "signature"
    formset = LatestFormSet
    verbose_name_plural = f"events (latest {LATEST_ROWS})"
    fields = readonly_fields = ("at", "type", "actor", "data")


class LogInline(ReadOnlyInline):
    model = LogEntry
    formset = LatestFormSet
    verbose_name_plural = f"logs (latest {LATEST_ROWS}; the full log is linked above)"
    fields = readonly_fields = ("at", "levelname", "logger", "message")


# Running a registered task --------------------------------------------------------------------


class RunTaskForm(forms.Form):
    task = forms.ChoiceField(help_text="A registered task; see the list below.")
    kwargs = DepthSafeJSONField(
        initial=dict, required=False, label="Arguments (JSON)", widget=forms.Textarea(attrs={"rows": 6, "cols": 80})
    )
    priority = forms.ChoiceField(required=False, choices=[("", "The task's default"), *Priority.choices])
    name = forms.CharField(required=False, max_length=200, label="Title")
    owner = forms.ModelChoiceField(
        queryset=get_user_model().objects.order_by("pk"), required=False, help_text="Default: you."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["task"].choices = [(t.name, t.name) for t in all_tasks()]

    def clean_kwargs(self) -> dict:
        value = self.cleaned_data["kwargs"]
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value

    def spec(self) -> dict:
        data = self.cleaned_data
        spec = {"task": data["task"], "kwargs": data["kwargs"]}
        return spec | {key: data[key] for key in ("priority", "name") if data[key]}

    def add_spec_errors(self, errors: dict[str, str]) -> None:
        """Show each bad field of the spec next to the form field it came from."""
        for where, problem in errors.items():
            field = where.split(".")[0]
            if field in ("task", "priority", "name"):
                self.add_error(field, problem)
            elif field == "kwargs":
                self.add_error("kwargs", f"{where.removeprefix('kwargs.')}: {problem}")
            else:
                self.add_error(None, f"{where}: {problem}")


# Signatures -----------------------------------------------------------------------------------


def service_action(name: str, description: str, verb: str, call: Callable[..., Any]):
    """An admin action that calls one service per selected signature and reports each refusal."""

    def action(modeladmin: SignatureAdmin, request: HttpRequest, queryset: QuerySet) -> None:
        modeladmin.apply(request, queryset, verb, call)

    action.__name__ = name
    return admin.action(description=description, permissions=["change"])(action)


def _cancel(sig: Signature, *, actor: str) -> None:
    lifecycle.cancel(sig, confirm=True, actor=actor)


def _approve(sig: Signature, *, actor: str) -> None:
    from .services import approvals

    approvals.decide(sig, approve=True, comment="from the admin", actor=actor)


def _reject(sig: Signature, *, actor: str) -> None:
    from .services import approvals

    approvals.decide(sig, approve=False, comment="from the admin", actor=actor)


# action name: (description, past tense for messages, service taking (signature, *, actor))
LIFECYCLE = {
    "start_selected": ("Start", "started", lifecycle.start),
    "pause_selected": ("Pause", "paused", lifecycle.pause),
    "resume_selected": ("Resume", "resumed", lifecycle.resume),
    "interrupt_selected": ("Interrupt (stop hard)", "interrupted", lifecycle.interrupt),
    "retry_selected": ("Retry", "retried", lifecycle.retry),
    "skip_selected": ("Skip the failure", "skipped", lifecycle.skip),
    "rerun_selected": ("Rerun", "rerun", lifecycle.rerun),
    "soft_delete_selected": ("Delete (restorable)", "marked for deletion", deletion.delete),
    "restore_selected": ("Restore", "restored", deletion.restore),
    "approve_selected": ("Approve", "approved", _approve),
    "reject_selected": ("Reject", "rejected", _reject),
    "close_selected": ("Close swarm", "closed", swarms.close),
}
EDITABLE = ("name", "priority", "category", "tags")
SECTIONS = {
    "State": "status_label progress_percent attempts deletion_state created_at started_at finished_at updated_at",
    "Progress": "progress_view log_links",
    "Definition": "kind task_name owner kwargs_json inbound_json config_json retries retry_backoff timeout "
    "idempotency_key",
    "Tree": "parent root callback_of callback_on trigger position node_key members_list callbacks_list",
    "Outcome": "result_json error_json checkpoint_json",
}


@admin.register(Signature)
class SignatureAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "title",
        "kind",
        "task_name",
        "status_label",
        "priority",
        "progress_percent",
        "owner",
        "created_at",
        "deletion_state",
    )
    list_display_links = ("id", "title")
    list_filter = ("status", "kind", "task_name", "priority", "category", DeletionFilter, PlaceFilter)
    search_fields = ("name", "task_name", "id__exact")
    list_select_related = ("owner",)
    list_per_page = 50
    show_full_result_count = False
    actions = [*(service_action(name, *spec) for name, spec in LIFECYCLE.items()), "cancel_selected"]
    inlines = [StepInline, RunInline, EventInline, LogInline]
    formfield_overrides = {models.JSONField: {"form_class": DepthSafeJSONField}}
    fieldsets = [
        (None, {"fields": EDITABLE}),
        *((title, {"fields": names.split()}) for title, names in SECTIONS.items()),
    ]
    readonly_fields = [name for names in SECTIONS.values() for name in names.split()]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # soft delete and cancel are actions; Django's delete would skip the services

    def view_on_site(self, obj: Signature) -> str:
        return f"/tasks/{obj.pk}/"

    def get_urls(self):
        act = path(
            "<path:object_id>/act/<str:action>/",
            self.admin_site.admin_view(self.act_view),
            name="tasks_app_signature_act",
        )
        return [act, *super().get_urls()]

    # Columns and read-only fields ------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: Signature) -> str:
        return cli.status_label(obj.status)

    @admin.display(description="progress", ordering="progress")
    def progress_percent(self, obj: Signature) -> str:
        return f"{100 if obj.status == Status.COMPLETED else obj.progress:.0f}%"

    @admin.display(description="deletion", ordering="delete_after")
    def deletion_state(self, obj: Signature) -> str:
        if obj.delete_after is None:
            return "live"
        return f"marked; purged after {cli.local_time(obj.delete_after)}"

    @admin.display(description="progress view")
    def progress_view(self, obj: Signature) -> str:
        view = cli.progress_view(progress.payload(obj), obj, hints=False)
        return format_html('<pre style="margin:0;line-height:1.3">{}</pre>', view)

    @admin.display(description="logs")
    def log_links(self, obj: Signature) -> str:
        entries = reverse("admin:tasks_app_logentry_changelist") + f"?signature__id__exact={obj.pk}"
        return format_html(
            '<a href="/api/tasks/{}/logs?format=text">full log of the tree (API, text)</a> · '
            '<a href="{}">this signature\'s entries in the admin</a>',
            obj.pk,
            entries,
        )

    @admin.display(description="members")
    def members_list(self, obj: Signature) -> str:
        if obj.kind not in CONTAINERS:
            return "-"
        members = obj.members.order_by("position")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (m.position + 1, signature_link(m.pk, m.title), m.kind, cli.status_label(m.status))
                for m in members[:LISTED_MEMBERS]
            ),
        )
        total = members.count()
        more = reverse("admin:tasks_app_signature_changelist") + f"?parent__id__exact={obj.pk}"
        tail = format_html(' <a href="{}">all {} members</a>', more, total) if total > LISTED_MEMBERS else ""
        return format_html("<table>{}</table>{}", rows, tail)

    @admin.display(description="callbacks")
    def callbacks_list(self, obj: Signature) -> str:
        callbacks = obj.callbacks.order_by("pk")[:LISTED_MEMBERS]
        if not callbacks:
            return "-"
        return format_html(
            "<table>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((c.callback_on, signature_link(c.pk, c.title), cli.status_label(c.status)) for c in callbacks),
            ),
        )

    @admin.display(description="kwargs")
    def kwargs_json(self, obj: Signature) -> str:
        return pretty_json(obj.kwargs)

    @admin.display(description="inbound")
    def inbound_json(self, obj: Signature) -> str:
        return pretty_json(obj.inbound)

    @admin.display(description="config")
    def config_json(self, obj: Signature) -> str:
        return pretty_json(obj.config)

    @admin.display(description="result")
    def result_json(self, obj: Signature) -> str:
        return pretty_json(obj.result)

    @admin.display(description="error")
    def error_json(self, obj: Signature) -> str:
        return pretty_json(obj.error)

    @admin.display(description="checkpoint")
    def checkpoint_json(self, obj: Signature) -> str:
        return pretty_json(obj.checkpoint)

    # Saving: only the user's own fields, priority through its service ------------------------

    def save_model(self, request, obj: Signature, form, change: bool) -> None:
        own = [f for f in ("name", "category", "tags") if f in form.changed_data]
        if own:
            Signature.objects.filter(pk=obj.pk).update(**{f: getattr(obj, f) for f in own})
        if "priority" in form.changed_data:
            lifecycle.set_priority(obj, obj.priority, actor=events.actor_name(request.user))

    # Actions ---------------------------------------------------------------------------------

    def apply(self, request: HttpRequest, queryset: QuerySet, verb: str, call: Callable[..., Any]) -> None:
        actor = events.actor_name(request.user)
        done, refused = [], []
        for sig in queryset.order_by("pk"):
            try:
                call(sig, actor=actor)
            except (InvalidTransition, SpecError) as exc:
                refused.append(f"#{sig.pk} {sig.title}: {exc}")
            except Signature.DoesNotExist:
                refused.append(f"#{sig.pk} {sig.title}: it no longer exists (cancelled with its parent)")
            else:
                done.append(f"#{sig.pk}")
        if done:
            self.message_user(request, f"{verb.capitalize()}: {', '.join(done)}.", messages.SUCCESS)
        for line in refused:
            self.message_user(request, f"Not {verb}: {line}", messages.WARNING)

    @admin.action(description="Cancel (stop and delete for good)…", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> TemplateResponse | None:
        if request.POST.get("post") == "yes":
            self.apply(request, queryset, "cancelled", _cancel)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Cancel: are you sure?",
            "opts": self.model._meta,
            "queryset": queryset,
            "doomed": [self.doomed(sig) for sig in queryset.order_by("pk")],
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/tasks_app/signature/cancel_confirmation.html", context)

    def doomed(self, sig: Signature) -> dict:
        """What cancelling ``sig`` deletes: its tree and the rows hanging from it."""
        ids = tree.descendant_ids(sig)
        return {
            "signature": sig,
            "below": len(ids) - 1,
            "runs": Run.objects.filter(signature_id__in=ids).count(),
            "steps": Step.objects.filter(signature_id__in=ids).count(),
            "logs": LogEntry.objects.filter(signature_id__in=ids).count(),
            "events": Event.objects.filter(signature_id__in=ids).count(),
        }

    def act_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """The change page's buttons: one action on one signature, then back to its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        entry = self.get_actions(request).get(action)
        if entry is None:
            raise Http404(f"no action {action!r}")
        response = entry[0](self, request, self.get_queryset(request).filter(pk=object_id))
        if response is not None:
            return response
        if Signature.objects.filter(pk=object_id).exists():
            return HttpResponseRedirect(reverse("admin:tasks_app_signature_change", args=[object_id]))
        return HttpResponseRedirect(reverse("admin:tasks_app_signature_changelist"))

    def object_actions(self, sig: Signature) -> list[tuple[str, str]]:
        """(action, label) of the buttons that make sense for the signature's status."""
        open_swarm = sig.kind == Kind.SWARM and not sig.config.get("closed") and not sig.is_terminal
        shown = {
            "start_selected": sig.status in lifecycle.STARTABLE and sig.parent_id is None
            and sig.callback_of_id is None,
            "pause_selected": sig.status in lifecycle.PAUSABLE,
            "resume_selected": sig.status in lifecycle.RESUMABLE,
            "interrupt_selected": sig.status in lifecycle.INTERRUPTIBLE,
            "retry_selected": sig.status in lifecycle.RETRYABLE,
            "skip_selected": lifecycle.can_skip(sig),
            "rerun_selected": sig.status in lifecycle.RERUNNABLE,
            "approve_selected": sig.status == Status.WAITING_APPROVAL,
            "reject_selected": sig.status == Status.WAITING_APPROVAL,
            "close_selected": open_swarm,
            "soft_delete_selected": sig.delete_after is None,
            "restore_selected": sig.delete_after is not None,
        }
        buttons = [(name, LIFECYCLE[name][0]) for name, show in shown.items() if show]
        return [*buttons, ("cancel_selected", "Cancel…")]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        sig = Signature.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra = {"object_actions": self.object_actions(sig)} if sig else {}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    # Adding is running a registered task -----------------------------------------------------

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = RunTaskForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            sig = self.run_task(request, form)
            if sig is not None:
                self.message_user(request, f"Submitted #{sig.pk} {sig.title} ({sig.status}).", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:tasks_app_signature_change", args=[sig.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Run a task",
            "opts": self.model._meta,
            "form": form,
            "tasks": all_tasks(),
        }
        return TemplateResponse(request, "admin/tasks_app/signature/run_task.html", context)

    def run_task(self, request: HttpRequest, form: RunTaskForm) -> Signature | None:
        owner = form.cleaned_data["owner"] or request.user
        try:
            return execution.submit(form.spec(), owner=owner, actor=events.actor_name(request.user))
        except SpecError as exc:
            form.add_spec_errors(exc.errors)
        except PayloadTooLarge as exc:
            form.add_error("kwargs", str(exc))
        return None


# What the machine writes: read-only -----------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False
    list_per_page = 100

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class StaffDeletableAdmin(ReadOnlyAdmin):
    """Rows nothing depends on (stale heartbeats, old reports): staff with the permission may delete."""

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_staff and admin.ModelAdmin.has_delete_permission(self, request, obj)


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "signature_ref",
        "number",
        "attempt",
        "status",
        "queue",
        "worker_name",
        "queued_at",
        "started_at",
        "finished_at",
        "duration_ms",
    )
    list_filter = ("status", "queue")
    search_fields = ("signature__id__exact", "signature__task_name", "job_id", "worker_name")
    list_select_related = ("signature",)
    date_hierarchy = "queued_at"

    @admin.display(description="signature", ordering="signature")
    def signature_ref(self, obj: Run) -> str:
        return signature_link(obj.signature_id, obj.signature.title)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("at", "type", "signature_ref", "root_ref", "actor", "owner")
    list_filter = ("type",)
    search_fields = ("type", "actor", "signature_ref__exact", "root_ref__exact")
    list_select_related = ("owner",)
    date_hierarchy = "at"
    ordering = ("-at", "-id")


@admin.register(LogEntry)
class LogEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "signature_ref", "levelname", "logger", "short_message")
    list_filter = (MinimumLevelFilter,)
    search_fields = ("message", "logger", "signature__id__exact")
    list_select_related = ("signature",)
    ordering = ("-at", "-id")

    @admin.display(description="signature", ordering="signature")
    def signature_ref(self, obj: LogEntry) -> str:
        return signature_link(obj.signature_id, obj.signature.title)

    @admin.display(description="message")
    def short_message(self, obj: LogEntry) -> str:
        return obj.message[:200]


@admin.register(ResumeReport)
class ResumeReportAdmin(StaffDeletableAdmin):
    list_display = ("at", "trigger", "dry_run", "resumed_count", "skipped_count", "failures_count")
    list_filter = ("trigger", "dry_run")
    search_fields = ("trigger",)
    date_hierarchy = "at"
    fields = readonly_fields = ("at", "trigger", "dry_run", "resumed_items", "skipped_items", "failure_items")

    @admin.display(description="resumed")
    def resumed_count(self, obj: ResumeReport) -> int:
        return len(obj.resumed)

    @admin.display(description="skipped")
    def skipped_count(self, obj: ResumeReport) -> int:
        return len(obj.skipped)

    @admin.display(description="failures")
    def failures_count(self, obj: ResumeReport) -> int:
        return len(obj.failures)

    @admin.display(description="resumed")
    def resumed_items(self, obj: ResumeReport) -> str:
        return pretty_json(obj.resumed)

    @admin.display(description="skipped")
    def skipped_items(self, obj: ResumeReport) -> str:
        return pretty_json(obj.skipped)

    @admin.display(description="failures")
    def failure_items(self, obj: ResumeReport) -> str:
        return pretty_json(obj.failures)


@admin.register(WorkerProcess)
class WorkerProcessAdmin(StaffDeletableAdmin):
    list_display = ("name", "hostname", "pid", "started_at", "last_heartbeat", "alive")
    list_filter = ("hostname",)
    search_fields = ("name", "hostname")

    @admin.display(description="alive", boolean=True)
    def alive(self, obj: WorkerProcess) -> bool:
        timeout = timezone.timedelta(seconds=settings.ORCHESTRATOR["HEARTBEAT_TIMEOUT"])
        return timezone.now() - obj.last_heartbeat < timeout


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    """Decisions are made with the Approve / Reject actions on the signature, through the service."""

    list_display = ("created_at", "signature_ref", "title", "status", "attempt", "decided_at", "decided_by")
    list_filter = ("status",)
    search_fields = ("title", "decided_by", "signature__id__exact")
    list_select_related = ("signature",)

    @admin.display(description="signature", ordering="signature")
    def signature_ref(self, obj: Approval) -> str:
        return signature_link(obj.signature_id, obj.signature.title)


# Schedules -------------------------------------------------------------------------------------


class ScheduleForm(forms.ModelForm):
    """The service checks the whole schedule (cron or interval, zone, spec); its errors land on their fields."""

    spec = DepthSafeJSONField()

    class Meta:
        model = Schedule
        fields = ("owner", "name", "spec", "cron", "timezone", "interval", "start_at", "end_at", "max_active",
                  "catch_up")

    def clean(self) -> dict:
        data = super().clean()
        if not self.errors:
            try:
                schedules.validate({k: v for k, v in data.items() if k != "owner"}, owner=data["owner"])
            except SpecError as exc:
                for field, problem in schedules.field_errors(exc).items():
                    self.add_error(field if field in self.fields else None, problem)
        return data


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = ("name", "owner", "clock", "paused", "next_run_at", "last_run_at", "skipped_ticks")
    list_filter = ("paused",)
    search_fields = ("name", "owner__username")
    list_select_related = ("owner",)
    readonly_fields = ("paused", "next_run_at", "last_run_at", "skipped_ticks", "last_error")
    actions = ["pause_selected", "resume_selected", "run_selected"]

    @admin.display(description="clock")
    def clock(self, obj: Schedule) -> str:
        return f"{obj.cron} ({obj.timezone})" if obj.cron else f"every {obj.interval} s"

    def save_model(self, request, obj: Schedule, form, change: bool) -> None:
        data = {k: v for k, v in form.cleaned_data.items() if k != "owner"}
        who = events.actor_name(request.user)
        if change:
            saved = schedules.update(Schedule.objects.get(pk=obj.pk), data, actor=who)
            Schedule.objects.filter(pk=obj.pk).update(owner=form.cleaned_data["owner"])
        else:
            saved = schedules.create(data, owner=form.cleaned_data["owner"], actor=who)
        obj.pk = saved.pk

    def delete_model(self, request, obj: Schedule) -> None:
        schedules.delete(obj, actor=events.actor_name(request.user))

    @admin.action(description="Pause", permissions=["change"])
    def pause_selected(self, request, queryset: QuerySet) -> None:
        for schedule in queryset:
            schedules.pause(schedule, actor=events.actor_name(request.user))
        self.message_user(request, f"{len(queryset)} schedule(s) paused.")

    @admin.action(description="Resume", permissions=["change"])
    def resume_selected(self, request, queryset: QuerySet) -> None:
        for schedule in queryset:
            schedules.resume(schedule, actor=events.actor_name(request.user))
        self.message_user(request, f"{len(queryset)} schedule(s) resumed.")

    @admin.action(description="Run now", permissions=["change"])
    def run_selected(self, request, queryset: QuerySet) -> None:
        for schedule in queryset:
            try:
                run = schedules.run_now(schedule, actor=events.actor_name(request.user))
            except (SpecError, PayloadTooLarge) as exc:
                self.message_user(request, f"{schedule}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{schedule}: run #{run.pk} started.")
