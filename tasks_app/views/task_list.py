"""The task list `/tasks/`: filters kept in the URL, sortable columns, pages, bulk actions."""

from __future__ import annotations

from datetime import date, datetime, time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from ..forms import SORTS, TRASH, TaskFilterForm
from ..models import Signature
from ..services.errors import OrchestratorError
from .common import refusal, row_id, visible
from .task_detail import ACTIONS

PAGE_SIZE = 25
DEFAULT_SORT = "-created"


def filtered(signatures: QuerySet[Signature], data: dict) -> QuerySet[Signature]:
    """Top-level signatures matching the cleaned filters; the trash only when asked for."""
    qs = signatures.top_level()
    status = data.get("status")
    qs = qs.filter(delete_after__isnull=False) if status == TRASH else qs.live()
    if status and status != TRASH:
        qs = qs.filter(status=status)
    for field, lookup in (("kind", "kind"), ("task", "task_name"), ("category", "category__iexact")):
        if data.get(field):
            qs = qs.filter(**{lookup: data[field]})
    if data.get("tag"):
        qs = qs.filter(tags__contains=[data["tag"]]) if _json_contains() else _with_tag(qs, data["tag"])
    if data.get("created_after"):
        qs = qs.filter(created_at__gte=_day_start(data["created_after"]))
    if data.get("created_before") and data["created_before"] < date.max:  # the day after 9999-12-31 is no date
        qs = qs.filter(created_at__lt=_day_start(data["created_before"] + timezone.timedelta(days=1)))
    if data.get("q"):
        q = data["q"]
        text = Q(name__icontains=q) | Q(task_name__icontains=q) | Q(category__icontains=q)
        qs = qs.filter(text | Q(pk=row_id(q))) if row_id(q) else qs.filter(text)
    return qs


def _json_contains() -> bool:
    from django.db import connection

    return connection.features.supports_json_field_contains


def _with_tag(qs: QuerySet[Signature], tag: str) -> QuerySet[Signature]:
    """Databases without JSON containment: narrow with a text match, then check exactly."""
    ids = [pk for pk, tags in qs.filter(tags__icontains=tag).values_list("pk", "tags") if tag in (tags or [])]
    return qs.filter(pk__in=ids)


def _day_start(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def ordered(qs: QuerySet[Signature], sort: str) -> QuerySet[Signature]:
    field = SORTS.get(sort.lstrip("-"), "created_at")
    direction = "-" if sort.startswith("-") else ""
    return qs.order_by(f"{direction}{field}", f"{direction}pk")


@login_required
@require_GET
def task_list(request: HttpRequest) -> HttpResponse:
    form = TaskFilterForm(request.GET or None)
    data = form.cleaned_data if form.is_valid() else {}
    sort = data.get("sort") or DEFAULT_SORT
    page = Paginator(ordered(filtered(visible(request), data), sort), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "sort": sort, "trash": data.get("status") == TRASH,
               "next": request.get_full_path()}
    template = "tasks_app/task_list.html#results" if request.htmx else "tasks_app/task_list.html"
    return render(request, template, context)


# Bulk actions -----------------------------------------------------------------------------------


# What each bulk action did, in words; the actions themselves are the detail page's controls.
BULK = {
    "start": "started",
    "pause": "paused",
    "resume": "resumed",
    "interrupt": "interrupted",
    "retry": "retried",
    "rerun": "rerun",
    "delete": "moved to the trash",
    "restore": "restored",
    "cancel": "cancelled",
}


def _selected(request: HttpRequest) -> list[Signature]:
    ids = [row_id(i) for i in request.POST.getlist("ids") if row_id(i)]
    return list(Signature.objects.controllable_by(request.user).filter(pk__in=ids).order_by("pk"))


@login_required
@require_POST
def task_bulk(request: HttpRequest) -> HttpResponse:
    """Apply one action to each selected signature; report what was done and what was refused."""
    back = request.POST.get("next", "")
    back = back if url_has_allowed_host_and_scheme(back, {request.get_host()}) else "/tasks/"
    action = request.POST.get("action", "")
    if action not in BULK:
        messages.error(request, "Choose an action.")
        return redirect(back)
    selected = _selected(request)
    if not selected:
        messages.warning(request, "Select at least one task.")
        return redirect(back)
    if action == "cancel" and request.POST.get("confirm") != "yes":
        messages.error(request, "Cancelling deletes the selected tasks for good: confirm it in the dialog.")
        return redirect(back)
    _apply(request, action, selected)
    return redirect(back)


def _apply(request: HttpRequest, action: str, selected: list[Signature]) -> None:
    call = ACTIONS[action]
    done, refused = [], []
    for sig in selected:
        try:
            call(request, sig)
            done.append(f"#{sig.pk}")
        except Signature.DoesNotExist:
            refused.append(f"#{sig.pk} {sig.title}: it no longer exists")
        except OrchestratorError as exc:
            refused.append(f"#{sig.pk} {sig.title}: {refusal(exc)}")
    if done:
        noun = "task" if len(done) == 1 else "tasks"
        messages.success(request, f"{len(done)} {noun} {BULK[action]}: {', '.join(done)}.")
    for text in refused:
        messages.error(request, f"Refused — {text}")
