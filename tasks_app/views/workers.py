"""The workers page `/workers/` (staff): worker processes, what they run, the queues; refreshed by HTMX."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ..services import workers as worker_service

REFRESH_SECONDS = 2  # heartbeat ages move every second; no live message says a worker died
# Worker states in the colours of the task statuses the pages already show.
BADGES = {"busy": "running", "idle": "queued", "lost": "failed", "suspended": "paused"}


@login_required
@require_GET
def workers(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("The workers page is for staff.")
    found = worker_service.workers()
    for worker in found:
        worker.badge = BADGES.get(worker.state, "pending")
    try:
        queues, redis_error = worker_service.queues(), None
    except worker_service.REDIS_DOWN as exc:
        queues, redis_error = [], str(exc)
    context = {
        "workers": found,
        "alive": sum(1 for w in found if not w.lost),
        "lost": sum(1 for w in found if w.lost),
        "queues": queues,
        "redis_error": redis_error,
        "refresh": REFRESH_SECONDS,
    }
    template = "tasks_app/workers.html#overview" if request.htmx else "tasks_app/workers.html"
    return render(request, template, context)
