"""RQ entry points: each takes ids and calls one service."""

from __future__ import annotations

from django.conf import settings

from .services import execution
from .services import reconcile as reconciler


def execute(signature_id: int, number: int) -> None:
    execution.execute(signature_id, number)


def approval_timeout(approval_id: int) -> None:
    from .services import approvals

    approvals.expire(approval_id)


def reconcile() -> int | None:
    """Periodic auto-resume pass (RQ's cron scheduler, every 60 s); returns the report's id."""
    if not settings.ORCHESTRATOR["AUTO_RESUME"]:
        return None
    report = reconciler.run_pass(trigger="periodic")
    return report.pk if report is not None else None


def purge() -> int:
    """Periodic purge of signatures whose deletion window has passed (every 300 s)."""
    from .services import deletion

    return deletion.purge()


def fire_schedules() -> int:
    """Periodic pass over due schedules (RQ's cron, every ORCHESTRATOR_SCHEDULE_TICK s); runs written."""
    from .services import schedules

    return schedules.fire_due()


def deliver_webhook(notification_id: int, attempt: int = 1) -> str:
    """POST one notification to its owner's webhook; a failed attempt schedules the next one."""
    from .services import notifications

    return notifications.deliver_webhook(notification_id, attempt=attempt)
