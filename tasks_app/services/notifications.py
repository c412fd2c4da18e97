"""Notifications: events of a user's tasks become messages in the app, on the desktop, by email and webhook.

``on_event`` runs inside the transaction that recorded the event and writes the Notification row, so a
rolled-back transition notifies nobody; delivery (the WebSocket message, email, the webhook job) waits
for the commit. Start, step and end notifications come from top-level signatures only (a swarm of
10 000 members sends one "completed", not 10 000); approval requests notify at any level, because a
person has to act on them.

The snapshots a WebSocket client receives on connect live here too: what a watcher is shown first.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import datetime, timedelta

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.mail import get_connection, send_mail
from django.db import transaction
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from ..models import (
    TERMINAL,
    Event,
    Notification,
    NotificationPreference,
    ResumeReport,
    Signature,
    Status,
    StepStatus,
)
from ..registry import get_task
from . import live, progress, transport, webhooks

log = logging.getLogger(__name__)

DEFAULT_EVENTS = ("task_started", "step_completed", "approval_needed", "task_completed", "task_failed", "resume_report")
EVENT_KINDS = {
    "running": "task_started",  # a task's run was claimed (the first one only)
    "started": "task_started",  # a container started
    "step_completed": "step_completed",
    "approval_needed": "approval_needed",
    "completed": "task_completed",
    "failed": "task_failed",
}
RESTART_MARKERS = ("created", "rerun", "retried")  # a "running" after one of these is a new start
WEBHOOK_JOB = "tasks_app.jobs.deliver_webhook"
WEBHOOK_QUEUE = "orchestrator-webhooks"  # read by every worker after the task queues
EMAIL_TIMEOUT = 10
WEBHOOK_BACKOFF = (10, 60, 300)  # seconds before the 2nd, 3rd and 4th attempt
WEBHOOK_ATTEMPTS = len(WEBHOOK_BACKOFF) + 1
WEBHOOK_LEASE = 60  # seconds past the deadline before an attempt whose worker died counts as failed
RESCHEDULE_BATCH = 500
SNAPSHOT_ACTIVE = 50
SNAPSHOT_RECENT = 20


# Preferences ----------------------------------------------------------------------------------


def preference_for(user_id: int) -> NotificationPreference:
    """The user's preferences, or the defaults (unsaved) when they never changed them."""
    return NotificationPreference.objects.filter(user_id=user_id).first() or NotificationPreference(user_id=user_id)


def wanted_events(pref: NotificationPreference) -> set[str]:
    return set(pref.events) if pref.events else set(DEFAULT_EVENTS)


def display_name(sig: Signature) -> str:
    """What a person calls the task: its name, else its ``title`` argument (given or default), else the task's name."""
    if sig.name:
        return sig.name
    title = sig.kwargs.get("title") if isinstance(sig.kwargs, dict) else None
    if title is None and sig.task_name:
        taskdef = get_task(sig.task_name)
        title = next((p["default"] for p in taskdef.params if p["name"] == "title"), None) if taskdef else None
    return title.strip() if isinstance(title, str) and title.strip() else sig.title


# From events to notifications -----------------------------------------------------------------


def on_event(event: Event) -> Notification | None:
    """Called by ``events.record`` in the transition's transaction; never breaks the transition."""
    kind = EVENT_KINDS.get(event.type)
    sig = event.signature
    if kind is None or sig is None or not _reaches_owner(kind, sig):
        return None
    try:
        with transaction.atomic():
            if event.type == "running" and not _first_start(sig, event):
                return None
            return _notify(kind, sig, event)
    except Exception:  # a notification must never undo the transition that caused it
        log.exception("notification for event %s of #%s not created", event.type, sig.pk)
        return None


def _reaches_owner(kind: str, sig: Signature) -> bool:
    return kind == "approval_needed" or (sig.parent_id is None and sig.callback_of_id is None)


def _first_start(sig: Signature, event: Event) -> bool:
    """True for the first run claimed since the task was created, rerun or retried by a person."""
    since = (
        Event.objects.filter(signature_ref=sig.pk, type__in=RESTART_MARKERS, pk__lt=event.pk)
        .order_by("-pk").values_list("pk", flat=True).first()
    ) or 0
    return not Event.objects.filter(signature_ref=sig.pk, type="running", pk__gt=since, pk__lt=event.pk).exists()


def _notify(kind: str, sig: Signature, event: Event) -> Notification | None:
    pref = preference_for(sig.owner_id)
    if kind not in wanted_events(pref):
        return None
    if kind == "step_completed":
        batched = _batch_step(sig, event.data)
        if batched is not None:
            return batched
    title, body = TEXTS[kind](sig, event.data)
    return create(sig.owner_id, kind, title, body, pref=pref, signature=sig)


def _batch_step(sig: Signature, data: dict) -> Notification | None:
    """The task's unread step notification, brought up to this step in place: a 50-step task keeps
    one line in the bell (and one desktop notification, replaced: its tag is the row's id). Once
    read, the next step starts a new one. Only the socket hears of an update; email and webhook
    had the first of the batch."""
    notice = (Notification.objects.select_for_update()
              .filter(owner_id=sig.owner_id, signature=sig, event="step_completed", read_at__isnull=True)
              .order_by("-pk").first())
    if notice is None:
        return None
    title, notice.body = _step_completed(sig, data)
    notice.title = title[:200]
    notice.created_at = timezone.now()  # the newest news: first in the list again
    notice.save(update_fields=["title", "body", "created_at"])
    transaction.on_commit(lambda: _push_update(notice.pk))
    return notice


def _push_update(notification_id: int) -> None:
    notification = Notification.objects.filter(pk=notification_id).first()
    if notification is not None:
        _push(notification)


def _started(sig: Signature, data: dict) -> tuple[str, str]:
    return f"Your {display_name(sig)} task has started", f"Task #{sig.pk} ({sig.task_name or sig.kind}) is running."


def _step_completed(sig: Signature, data: dict) -> tuple[str, str]:
    took = f" in {_duration(data['duration_ms'] / 1000)}" if data.get("duration_ms") is not None else ""
    title = f"Step {data.get('order')} complete: {data.get('name')}"
    done = sig.steps.filter(status__in=(StepStatus.COMPLETED, StepStatus.SKIPPED)).count()
    taskdef = get_task(sig.task_name) if sig.task_name else None
    total = max(sig.steps.count(), len(taskdef.steps) if taskdef else 0)  # rows appear as steps start
    return title, f"{display_name(sig)} (#{sig.pk}) finished it{took}; {done} of {total} steps done."


def _approval_needed(sig: Signature, data: dict) -> tuple[str, str]:
    details = f"{data['details']}\n" if data.get("details") else ""
    return (f"⚠️ Approval required: {data.get('title') or display_name(sig)}",
            f"{details}Task #{sig.pk} {display_name(sig)} waits for your decision.")


def _completed(sig: Signature, data: dict) -> tuple[str, str]:
    took = f" in {_duration(_run_seconds(sig))}" if _run_seconds(sig) is not None else ""
    return f"✅ {display_name(sig)} is ready!", f"Task #{sig.pk} completed{took}."


def _failed(sig: Signature, data: dict) -> tuple[str, str]:
    error = data.get("error") or sig.error or {}
    reason = f"{error.get('type', 'Error')}: {error.get('message', '')}".strip(": ")
    where = failed_step(sig)
    title = f"❌ Task failed at Step {where[0]}: {where[1]}" if where else f"❌ {display_name(sig)} failed"
    return title, f"{display_name(sig)} (#{sig.pk}): {reason}"


TEXTS = {
    "task_started": _started,
    "step_completed": _step_completed,
    "approval_needed": _approval_needed,
    "task_completed": _completed,
    "task_failed": _failed,
}


def failed_step(sig: Signature) -> tuple[int, str] | None:
    """(number, name) of the step, or the container's member, where the signature failed."""
    if sig.is_container:
        member = sig.members.filter(status=Status.FAILED).order_by("position").first()
        return (member.position + 1, member.node_key or display_name(member)) if member else None
    step = sig.steps.filter(status=StepStatus.FAILED).order_by("order").first()
    return (step.order, step.name) if step else None


def _run_seconds(sig: Signature) -> float | None:
    if sig.started_at and sig.finished_at:
        return (sig.finished_at - sig.started_at).total_seconds()
    return None


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def on_resume_report(report: ResumeReport) -> list[Notification]:
    """Tell each owner which of their tasks an auto-resume pass resumed, or failed to resume."""
    if report.dry_run:
        return []
    try:
        return _resume_notices(report)
    except Exception:  # the pass is done and reported; a notification failure must not undo it
        log.exception("resume report %s: notifications not created", report.pk)
        return []


def _resume_notices(report: ResumeReport) -> list[Notification]:
    items = [(item, "resumed") for item in report.resumed] + [(item, "could not resume") for item in report.failures]
    signatures = Signature.objects.in_bulk([item["task_id"] for item, _ in items])
    by_owner: dict[int, list] = defaultdict(list)
    seen = set()
    for item, outcome in items:  # a lost run and its re-enqueued job are one task resumed
        sig = signatures.get(item["task_id"])
        if sig is not None and (sig.pk, outcome) not in seen:
            seen.add((sig.pk, outcome))
            by_owner[sig.owner_id].append((sig, item, outcome))
    created = [_resume_notice(owner_id, lines) for owner_id, lines in by_owner.items()]
    return [n for n in created if n is not None]


def _resume_notice(owner_id: int, lines: list[tuple[Signature, dict, str]]) -> Notification | None:
    pref = preference_for(owner_id)
    if "resume_report" not in wanted_events(pref):
        return None
    resumed = sum(1 for _, _, outcome in lines if outcome == "resumed")
    if len(lines) == resumed == 1:
        title = f"🔄 Your {display_name(lines[0][0])} task resumed automatically"
    else:
        title = f"🔄 {resumed} of your tasks resumed automatically"
    if len(lines) > resumed:
        title += f"; {len(lines) - resumed} could not be resumed"
    body = "\n".join(f"#{sig.pk} {display_name(sig)}: {outcome} ({item.get('reason', '')})"
                     + (f" {item['error']}" if item.get("error") else "") for sig, item, outcome in lines[:50])
    return create(owner_id, "resume_report", title, body, pref=pref, signature=lines[0][0] if len(lines) == 1 else None)


# Creating and delivering ----------------------------------------------------------------------


def create(owner_id: int, kind: str, title: str, body: str, *, pref: NotificationPreference,
           signature: Signature | None = None) -> Notification | None:
    """Write the row now; deliver through the chosen channels after commit."""
    channels = _channels(kind, signature, pref)
    if not channels:
        return None
    notification = Notification.objects.create(
        owner_id=owner_id, signature=signature, event=kind, title=title[:200], body=body,
        deliveries={channel: "sent" if channel == "in_app" else "queued" for channel in channels},
        read_at=None if "in_app" in channels else timezone.now(),
        webhook_due_at=timezone.now() if "webhook" in channels else None,
    )
    transaction.on_commit(lambda: deliver(notification.pk))
    return notification


def _channels(kind: str, sig: Signature | None, pref: NotificationPreference) -> list[str]:
    channels = [name for name, on in (("in_app", pref.in_app), ("browser", pref.browser)) if on]
    if pref.email and _worth_an_email(kind, sig, pref):
        channels.append("email")
    if pref.webhook_url:
        channels.append("webhook")
    return channels


def _worth_an_email(kind: str, sig: Signature | None, pref: NotificationPreference) -> bool:
    """Failures always; completions of tasks that ran longer than the user's threshold."""
    if kind == "task_failed":
        return True
    seconds = _run_seconds(sig) if sig is not None and kind == "task_completed" else None
    return seconds is not None and seconds >= pref.email_long_task_seconds


def deliver(notification_id: int) -> None:
    """After commit: the WebSocket message, the email, and the webhook job (retried on its own)."""
    notification = Notification.objects.filter(pk=notification_id).select_related("owner").first()
    if notification is None:
        return  # its task was cancelled meanwhile
    outcomes = {}
    channels = notification.deliveries
    if "in_app" in channels or "browser" in channels:
        sent = _push(notification)
        if "browser" in channels:
            outcomes["browser"] = sent
    if "email" in channels:
        outcomes["email"] = _send_email(notification)
    if outcomes:
        record_outcomes(notification.pk, outcomes)
    if "webhook" in channels:
        enqueue_webhook(notification.pk, 1)


def message(notification: Notification, *, desktop: bool) -> dict:
    """The ``notification`` WebSocket message (CONTRACT.md §6); ``desktop`` asks the page to show one."""
    return {
        "type": "notification", "task_id": notification.signature_id, "id": notification.pk,
        "event": notification.event, "title": notification.title, "body": notification.body,
        "created_at": notification.created_at.isoformat(), "desktop": desktop,
    }


def _push(notification: Notification) -> str:
    if get_channel_layer() is None:
        return "failed: no channel layer"
    content = message(notification, desktop="browser" in notification.deliveries)
    try:
        live.deliver([([live.user_group(notification.owner_id)], content)])
    except Exception as exc:  # the row stays; the page shows it on its next load
        return f"failed: {exc}"[:300]
    return "sent"


def _send_email(notification: Notification) -> str:
    address = notification.owner.email
    if not address:
        return "skipped: no email address"
    link = f"\n\nTask: /tasks/{notification.signature_id}/" if notification.signature_id else ""
    # A bounded wait: this runs in the work horse after the task ended, and must let it exit.
    connection = get_connection(timeout=getattr(settings, "EMAIL_TIMEOUT", None) or EMAIL_TIMEOUT)
    try:
        send_mail(notification.title, f"{notification.body}{link}", None, [address], connection=connection)
    except Exception as exc:
        return f"failed: {exc}"[:300]
    return "sent"


def record_outcomes(notification_id: int, outcomes: dict[str, str]) -> None:
    with transaction.atomic():
        notification = Notification.objects.select_for_update().filter(pk=notification_id).first()
        if notification is not None:
            notification.deliveries = {**notification.deliveries, **outcomes}
            notification.save(update_fields=["deliveries"])


# Webhooks (an RQ job on their own low-priority queue, retried with backoff; never inside a task's run) --
#
# The database holds each delivery's last claimed attempt and the due time of the next one, so a
# retry that RQ's scheduler lost with Redis is enqueued again by ``reschedule_due_deliveries``; a
# job claims its attempt with a guarded update first, so a duplicate job delivers nothing.


def deliver_webhook(notification_id: int, attempt: int = 1) -> str:
    """POST the notification to the owner's webhook; on failure schedule the next attempt."""
    if not _claim(notification_id, attempt):
        gone = not Notification.objects.filter(pk=notification_id).exists()
        return "gone" if gone else "skipped: attempt already made"
    notification = Notification.objects.filter(pk=notification_id).select_related("owner").first()
    if notification is None:
        return "gone"  # its task was cancelled meanwhile
    pref = preference_for(notification.owner_id)
    due_at = None
    if not pref.webhook_url:
        outcome = "skipped: no webhook URL"
    else:
        try:
            post_json(pref.webhook_url, webhook_body(notification), secret=pref.webhook_secret,
                      delivery=f"{notification_id}-{attempt}")
            outcome = "sent"
        except webhooks.WebhookFailure as failure:
            outcome, due_at = _after_failure(notification_id, attempt, failure)
    _record_webhook(notification_id, outcome, due_at)
    return outcome


def _claim(notification_id: int, attempt: int) -> bool:
    """This job's attempt, unless another job made it (or a later one) already; leased for the deadline."""
    lease = timezone.now() + timedelta(seconds=settings.ORCHESTRATOR_WEBHOOK_DEADLINE + WEBHOOK_LEASE)
    claimed = Notification.objects.filter(pk=notification_id, webhook_attempt__lt=attempt)
    return claimed.update(webhook_attempt=attempt, webhook_due_at=lease) == 1


def _after_failure(notification_id: int, attempt: int, failure: webhooks.WebhookFailure) -> tuple[str, datetime | None]:
    if failure.permanent:
        return f"failed: {failure.reason}", None
    if attempt >= WEBHOOK_ATTEMPTS:
        return f"failed after {attempt} attempts: {failure.reason}", None
    delay = WEBHOOK_BACKOFF[attempt - 1]
    enqueue_webhook(notification_id, attempt + 1, delay=delay)
    due_at = timezone.now() + timedelta(seconds=delay)
    return f"retrying in {delay} s (attempt {attempt} failed: {failure.reason})", due_at


def _record_webhook(notification_id: int, outcome: str, due_at: datetime | None) -> None:
    with transaction.atomic():
        record_outcomes(notification_id, {"webhook": outcome[:500]})
        Notification.objects.filter(pk=notification_id).update(webhook_due_at=due_at)


def enqueue_webhook(notification_id: int, attempt: int, *, delay: float = 0) -> None:
    """The attempt's job on the webhook queue after commit, under an id the reschedule pass can look up."""

    def send() -> None:
        queue = transport.get_queue(WEBHOOK_QUEUE)
        options = dict(job_id=webhook_job_id(notification_id, attempt),
                       job_timeout=int(settings.ORCHESTRATOR_WEBHOOK_DEADLINE) + 30, result_ttl=600, failure_ttl=3600)
        if delay > 0:
            queue.enqueue_in(timedelta(seconds=delay), WEBHOOK_JOB, notification_id, attempt, **options)
        else:
            queue.enqueue(WEBHOOK_JOB, notification_id, attempt, **options)

    transport.after_commit(send, f"webhook attempt {attempt} of notification {notification_id}")


def webhook_job_id(notification_id: int, attempt: int) -> str:
    """Not ``orch-...``: workers take jobs with that prefix for task runs (tasks_app/worker.py, slots.py)."""
    return f"webhook-{notification_id}-{attempt}"


def reschedule_due_deliveries() -> int:
    """Enqueue each webhook attempt that is due and has no job (its scheduled job was lost with Redis).

    Rows are claimed with ``skip_locked``, so two passes at once split them; a job the two passes
    both enqueued anyway still delivers once (``_claim``). Returns how many attempts were enqueued.
    """
    now = timezone.now()
    with transaction.atomic():
        due = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(webhook_due_at__lte=now, webhook_attempt__lt=WEBHOOK_ATTEMPTS)
            .order_by("webhook_due_at").values_list("pk", "webhook_attempt")[:RESCHEDULE_BATCH]
        )
        lost = [(pk, done + 1) for pk, done in due if not _has_job(pk, done + 1)]
        recheck_at = now + timedelta(seconds=settings.ORCHESTRATOR_WEBHOOK_DEADLINE + WEBHOOK_LEASE)
        Notification.objects.filter(pk__in=[pk for pk, _ in lost]).update(webhook_due_at=recheck_at)
        for pk, attempt in lost:
            enqueue_webhook(pk, attempt)
    return len(lost)


def _has_job(notification_id: int, attempt: int) -> bool:
    queue = transport.get_queue(WEBHOOK_QUEUE)
    try:
        job = Job.fetch(
            webhook_job_id(notification_id, attempt), connection=queue.connection, serializer=queue.serializer
        )
    except NoSuchJobError:
        return False
    return job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED,
                                             JobStatus.STARTED)


def webhook_body(notification: Notification) -> dict:
    """Slack-compatible (``text``) with the structured fields next to it for other consumers."""
    text = f"*{notification.title}*\n{notification.body}" if notification.body else notification.title
    return {
        "text": text, "title": notification.title, "body": notification.body, "event": notification.event,
        "task_id": notification.signature_id, "notification_id": notification.pk,
        "user": notification.owner.get_username(), "created_at": notification.created_at.isoformat(),
    }


def post_json(url: str, payload: dict, *, secret: str, delivery: str = "") -> None:
    """Signed POST to an allowed destination within the deadline; ``webhooks.WebhookFailure`` otherwise."""
    headers = {"X-Orchestrator-Delivery": delivery} if delivery else {}
    webhooks.post(url, json.dumps(payload).encode(), secret=secret, headers=headers)


# What a WebSocket client is shown on connect ----------------------------------------------------


def watchable(user, task_id: int) -> Signature | None:
    """The signature if this user may watch it (their own; staff any), else None."""
    return Signature.objects.visible_to(user).filter(pk=task_id).first()


def snapshot_for_task(sig: Signature) -> dict:
    return {"type": "snapshot", "task_id": sig.pk, "task": progress.payload(sig)}


def snapshot_for_user(user) -> dict:
    """The user's unfinished top-level tasks and the most recent finished ones, newest first."""
    mine = Signature.objects.filter(owner=user).top_level().live()
    active = list(mine.exclude(status__in=TERMINAL)[:SNAPSHOT_ACTIVE])
    recent = list(mine.filter(status__in=TERMINAL)[:SNAPSHOT_RECENT])
    tasks = sorted(active + recent, key=lambda s: (s.created_at, s.pk), reverse=True)
    unread = Notification.objects.filter(owner=user, read_at__isnull=True).count()
    return {"type": "snapshot", "task_id": None, "tasks": [progress.payload(s) for s in tasks],
            "unread_notifications": unread}
