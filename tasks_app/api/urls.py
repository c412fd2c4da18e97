"""Routes under ``/api/``: the list and detail keep their trailing slash, actions have none
(``/api/tasks/{id}/pause``), exactly as CONTRACT.md §5 writes them."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DynamicRoute, SimpleRouter

from . import live, schedules, token, views, workers, workflows

app_name = "api"


class Router(SimpleRouter):
    routes = [
        *(route for route in SimpleRouter.routes if not (isinstance(route, DynamicRoute) and route.detail)),
        DynamicRoute(url=r"^{prefix}/{lookup}/{url_path}$", name="{basename}-{url_name}", detail=True, initkwargs={}),
    ]


router = Router()
router.register("tasks", views.TaskViewSet, basename="task")
router.register("schedules", schedules.ScheduleViewSet, basename="schedule")
router.register("workflows", workflows.SavedWorkflowViewSet, basename="workflow")

urlpatterns = [
    *router.urls,
    path("registry/", views.RegistryView.as_view(), name="registry"),
    path("graph-templates/", views.GraphTemplatesView.as_view(), name="graph-templates"),
    path("metrics/", views.MetricsView.as_view(), name="metrics"),
    path("resume-reports/", views.ResumeReportListView.as_view(), name="resume-reports"),
    *live.urlpatterns,
    *workers.urlpatterns,
    path("auth/token/", token.TokenView.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
