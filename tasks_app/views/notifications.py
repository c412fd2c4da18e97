"""Notifications `/notifications/`: the list (mark read), the header bell, and preferences.

The notifications service (another module) creates the rows and delivers them; these views only
list them, mark them read and edit the person's preferences.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..forms import PreferencesForm
from ..models import Notification, NotificationPreference
from .common import row_id

PAGE_SIZE = 30


def unread_count(user) -> int:
    return Notification.objects.filter(owner=user, read_at__isnull=True).count()


@login_required
@require_GET
def notification_list(request: HttpRequest) -> HttpResponse:
    rows = Notification.objects.filter(owner=request.user).select_related("signature")
    if request.GET.get("unread"):
        rows = rows.filter(read_at__isnull=True)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "tasks_app/notifications.html", {"page": page, "unread": unread_count(request.user)})


@login_required
@require_GET
def notification_bell(request: HttpRequest) -> HttpResponse:
    """The header bell with the unread count (refreshed when a notification arrives)."""
    return render(request, "base.html#bell", {"unread_notifications": unread_count(request.user)})


@login_required
@require_POST
def notification_read(request: HttpRequest) -> HttpResponse:
    """Mark the chosen notifications read, or all of them."""
    rows = Notification.objects.filter(owner=request.user, read_at__isnull=True)
    if request.POST.get("all") != "yes":
        rows = rows.filter(pk__in=[row_id(i) for i in request.POST.getlist("ids") if row_id(i)])
    count = rows.update(read_at=timezone.now())
    messages.success(request, f"{count} {'notification' if count == 1 else 'notifications'} marked read.")
    return redirect("notification_list")


@login_required
@require_http_methods(["GET", "POST"])
def notification_preferences(request: HttpRequest) -> HttpResponse:
    preference, _ = NotificationPreference.objects.get_or_create(user=request.user)
    form = PreferencesForm(request.POST or None, instance=preference)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Notification preferences saved.")
        return redirect("notification_preferences")
    return render(request, "tasks_app/notification_preferences.html", {"form": form},
                  status=400 if form.errors else 200)
