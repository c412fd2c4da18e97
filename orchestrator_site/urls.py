from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path

from tasks_app.auth import AdminLoginForm, LoginForm
from tasks_app.views import health, prometheus

# Both sign-in forms say when a lock-out (tasks_app/services/login_limits.py) refused the password.
admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("metrics", prometheus.metrics, name="prometheus_metrics"),
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/", include("tasks_app.api.urls")),
    path("accounts/login/", LoginView.as_view(authentication_form=LoginForm), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("tasks_app.urls")),
]

# JSON under /api/, Django's pages elsewhere.
handler404 = "tasks_app.api.errors.page_not_found"
handler500 = "tasks_app.api.errors.server_error"
