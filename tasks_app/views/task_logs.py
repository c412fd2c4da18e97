"""Logs `/tasks/{id}/logs/`: level filter, full-text search, a live tail, and exports."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ..forms import LogFilterForm
from ..models import LogEntry, Signature
from ..services import logs
from .common import get_signature

PAGE_SIZE = 200
FORMATS = {"json": "json", "csv": "csv", "text": "txt"}


def _scope(request: HttpRequest, sig: Signature, data: dict) -> Signature:
    """The task itself, or the top of its workflow when the whole workflow is asked for."""
    if data.get("scope") == "workflow" and sig.root_id:
        return get_signature(request, sig.root_id)
    return sig


def _entries(request: HttpRequest, sig: Signature) -> tuple[LogFilterForm, Signature, QuerySet[LogEntry], int]:
    """The filter form, the signature whose tree is shown, its matching entries and the minimum level."""
    form = LogFilterForm(request.GET or None)
    data = form.cleaned_data if form.is_valid() else {}
    scope = _scope(request, sig, data)
    min_level = logs.parse_level(data.get("level"))
    return form, scope, logs.for_tree(scope, min_level=min_level, q=data.get("q", "")), min_level


@login_required
@require_GET
def task_logs(request: HttpRequest, pk: int) -> HttpResponse:
    sig = get_signature(request, pk)
    form, scope, entries, min_level = _entries(request, sig)
    paginator = Paginator(entries, PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page") or paginator.num_pages)
    context = {"sig": sig, "scope": scope, "form": form, "page": page, "formats": FORMATS, "min_level": min_level}
    template = "tasks_app/task_logs.html#entries" if request.htmx else "tasks_app/task_logs.html"
    return render(request, template, context)


@login_required
@require_GET
def task_logs_export(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    """The filtered logs as a JSON, CSV or text download."""
    sig = get_signature(request, pk)
    fmt = request.GET.get("format", "text")
    if fmt not in FORMATS:
        fmt = "text"
    _, scope, entries, _ = _entries(request, sig)
    chunks, content_type = logs.export_stream(entries, fmt)
    response = StreamingHttpResponse(chunks, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="task-{scope.pk}-logs.{FORMATS[fmt]}"'
    return response
