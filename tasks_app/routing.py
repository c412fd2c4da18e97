"""WebSocket routes (CONTRACT.md §6); ``orchestrator_site/asgi.py`` mounts them behind auth and origin checks.

The trailing slash is optional, so ``/ws/tasks`` and ``/ws/tasks/12`` work as well.
"""

from __future__ import annotations

from django.urls import re_path

from . import consumers

websocket_urlpatterns = [
    re_path(r"^ws/tasks/?$", consumers.TasksConsumer.as_asgi(), name="ws-tasks"),
    re_path(r"^ws/tasks/(?P<task_id>[0-9]{1,18})/?$", consumers.TaskConsumer.as_asgi(), name="ws-task"),
]
