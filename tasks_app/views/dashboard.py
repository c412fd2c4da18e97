"""The dashboard `/`: counts, throughput, failure rate and durations as charts, failures, running work."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ..services import metrics
from .common import visible

PARTIALS = {"counts", "running", "failures"}


def _range(request: HttpRequest) -> str:
    value = request.GET.get("range", metrics.DEFAULT_RANGE)
    return value if value in metrics.RANGES else metrics.DEFAULT_RANGE


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    signatures = visible(request)
    context = {
        "range": _range(request),
        "ranges": list(metrics.RANGES),
        "counts": metrics.counts_by_status(signatures),
        "running": metrics.running(signatures),
        "failures": metrics.recent_failures(signatures),
    }
    partial = request.GET.get("partial")
    if request.htmx and partial in PARTIALS:
        return render(request, f"tasks_app/dashboard.html#{partial}", context)
    return render(request, "tasks_app/dashboard.html", context)


@login_required
@require_GET
def dashboard_metrics(request: HttpRequest) -> JsonResponse:
    """The charts' data (the same numbers as the API's metrics)."""
    return JsonResponse(metrics.summary(visible(request), _range(request)))
