"""Web routes of the UI (CONTRACT.md §7). The API lives under /api/ (tasks_app.api)."""

from __future__ import annotations

from django.urls import path

from .views import (
    dashboard,
    graph,
    graph_definitions,
    notifications,
    schedules,
    task_detail,
    task_list,
    task_logs,
    task_new,
    task_retry,
    workers,
)

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("dashboard/metrics.json", dashboard.dashboard_metrics, name="dashboard_metrics"),
    path("tasks/", task_list.task_list, name="task_list"),
    path("tasks/bulk/", task_list.task_bulk, name="task_bulk"),
    path("tasks/new/", task_new.task_new, name="task_new"),
    path("tasks/<int:pk>/", task_detail.task_detail, name="task_detail"),
    path("tasks/<int:pk>/logs/", task_logs.task_logs, name="task_logs"),
    path("tasks/<int:pk>/logs/export/", task_logs.task_logs_export, name="task_logs_export"),
    path("tasks/<int:pk>/graph.json", graph.task_graph, name="task_graph"),
    path("tasks/<int:pk>/timeline.json", graph.task_timeline, name="task_timeline"),
    path("tasks/<int:pk>/graph/table/", graph.task_graph_table, name="task_graph_table"),
    path("tasks/<int:pk>/graph/node/<int:node>/", graph.task_graph_node, name="task_graph_node"),
    path("tasks/<int:pk>/retry/edit/", task_retry.task_retry, name="task_retry"),
    path("tasks/<int:pk>/<slug:action>/", task_detail.task_action, name="task_action"),
    path("graphs/", graph_definitions.graph_definition_list, name="graph_definition_list"),
    path("graphs/new/", graph_definitions.graph_new, name="graph_new"),
    path("graphs/validate/", graph_definitions.graph_validate, name="graph_validate"),
    path("graphs/params/", graph_definitions.graph_params, name="graph_params"),
    path("graphs/<int:pk>/edit/", graph_definitions.graph_edit, name="graph_edit"),
    path("graphs/<int:pk>/run/", graph_definitions.graph_run, name="graph_run"),
    path("graphs/<int:pk>/delete/", graph_definitions.graph_delete, name="graph_delete"),
    path("workers/", workers.workers, name="workers"),
    path("schedules/", schedules.schedule_list, name="schedule_list"),
    path("schedules/<int:pk>/edit/", schedules.schedule_edit, name="schedule_edit"),
    path("schedules/<int:pk>/<slug:action>/", schedules.schedule_action, name="schedule_action"),
    path("notifications/", notifications.notification_list, name="notification_list"),
    path("notifications/bell/", notifications.notification_bell, name="notification_bell"),
    path("notifications/read/", notifications.notification_read, name="notification_read"),
    path("notifications/preferences/", notifications.notification_preferences, name="notification_preferences"),
]
