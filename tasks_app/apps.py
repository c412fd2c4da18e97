from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class TasksAppConfig(AppConfig):
    name = "tasks_app"
    verbose_name = "Orchestrator"

    def ready(self) -> None:
        # The example tasks are always registered; every installed app's tasks.py is found too.
        from . import examples  # noqa: F401

        autodiscover_modules("tasks")
