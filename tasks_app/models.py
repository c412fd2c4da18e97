"""The orchestrator's state. The database is the source of truth; Redis only carries work.

A Signature is any node of a workflow tree: a single task, or a chain, swarm or graph whose
members are Signatures too (``parent``). Callbacks are Signatures attached to another one
(``callback_of``). Every tree has one top-level Signature (``root`` is null on it and points to
it from every other node), so a whole workflow is one indexed query.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    """Created, not started."""
    QUEUED = "queued", "Queued"
    """An RQ job waits for a worker."""
    RUNNING = "running", "Running"
    """A worker runs it, or a container has members in flight."""
    PAUSED = "paused", "Paused"
    """Held; continues on resume."""
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    """Stopped at an approval request; no worker is held."""
    COMPLETED = "completed", "Completed"
    """Finished successfully."""
    FAILED = "failed", "Failed"
    """Finished with an error after its last attempt."""
    INTERRUPTED = "interrupted", "Interrupted"
    """Stopped hard; resumable best-effort."""
    SKIPPED = "skipped", "Skipped"
    """Never ran: a branch not taken, a callback that could not fire, a member stopped by a limit."""


TERMINAL = (Status.COMPLETED, Status.FAILED, Status.INTERRUPTED, Status.SKIPPED)
FINISHED = (Status.COMPLETED, Status.FAILED, Status.SKIPPED)
ACTIVE = (Status.QUEUED, Status.RUNNING, Status.WAITING_APPROVAL)
IN_FLIGHT = (Status.QUEUED, Status.RUNNING)


class Kind(models.TextChoices):
    TASK = "task", "Task"
    """One call of a registered task."""
    CHAIN = "chain", "Chain"
    """Members run in order, each receiving the previous result."""
    SWARM = "swarm", "Swarm"
    """Members run in parallel under a concurrency limit."""
    GRAPH = "graph", "Graph"
    """Members are nodes routed by conditional edges."""


CONTAINERS = (Kind.CHAIN, Kind.SWARM, Kind.GRAPH)


class Priority(models.TextChoices):
    HIGH = "high", "High"
    """Read first by every worker."""
    MEDIUM = "medium", "Medium"
    """The default."""
    LOW = "low", "Low"
    """Read when nothing else waits."""


PRIORITY_RANK = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}


class CallbackOn(models.TextChoices):
    SUCCESS = "success", "On success"
    """Fires once when the signature completes; receives its result as ``input``."""
    ERROR = "error", "On error"
    """Fires once when the signature fails; receives ``error``."""
    TASK_SUCCESS = "task_success", "On member success"
    """Fired by a swarm for each member that completes."""
    TASK_ERROR = "task_error", "On member error"
    """Fired by a swarm for each member that fails."""
    FINISH = "finish", "On finish"
    """Fires once when the signature ends, whatever the outcome (for cleanup); receives ``input`` or ``error``."""
    TASK_FINISH = "task_finish", "On member finish"
    """Fired by a swarm for each member that ends, completed or failed."""


# Top-level signatures: not a member of a container, not a callback. The same two terms as
# ``SignatureQuerySet.top_level``, so a query built with it can use the partial indexes below.
TOP_LEVEL = Q(parent__isnull=True, callback_of__isnull=True)


VIEW_ALL_TASKS = "tasks_app.view_signature"
CONTROL_ALL_TASKS = "tasks_app.change_signature"


def sees_all_tasks(user) -> bool:
    """Other users' tasks are shown to staff holding the model's view (or change) permission, as in the
    admin; superusers hold every permission. Others are not asked: no permission query per request."""
    return user.is_superuser or (user.is_staff and (user.has_perm(VIEW_ALL_TASKS) or user.has_perm(CONTROL_ALL_TASKS)))


def controls_all_tasks(user) -> bool:
    """Other users' tasks obey staff holding the model's change permission; ``is_staff`` alone grants nothing."""
    return user.is_superuser or (user.is_staff and user.has_perm(CONTROL_ALL_TASKS))


def may_control(user, sig: Signature) -> bool:
    return sig.owner_id == user.pk or controls_all_tasks(user)


class SignatureQuerySet(models.QuerySet):
    def top_level(self) -> SignatureQuerySet:
        return self.filter(parent__isnull=True, callback_of__isnull=True)

    def visible_to(self, user) -> SignatureQuerySet:
        return self if sees_all_tasks(user) else self.filter(owner=user)

    def controllable_by(self, user) -> SignatureQuerySet:
        return self if controls_all_tasks(user) else self.filter(owner=user)

    def live(self) -> SignatureQuerySet:
        return self.filter(delete_after__isnull=True)

    def tree(self, root_id: int) -> SignatureQuerySet:
        return self.filter(Q(pk=root_id) | Q(root_id=root_id))

    def locked(self) -> SignatureQuerySet:
        """Rows locked for a transition, without ``spec``: a container's holds every member's spec
        (200 KB for a swarm of 1,000), which nothing on a member's way needs."""
        return self.select_for_update().defer("spec")


class Signature(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signatures")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TASK)
    name = models.CharField(max_length=200, blank=True)
    task_name = models.CharField(max_length=200, blank=True, db_index=True)
    kwargs = models.JSONField(default=dict, blank=True)
    # Keyword arguments received from upstream when fired: ``input`` or ``error``.
    inbound = models.JSONField(default=dict, blank=True)
    spec = models.JSONField(default=dict, blank=True)
    # Container settings: max_concurrency, stop_after_n_failures, max_tasks, closed,
    # task_on_success / task_on_error / task_on_finish specs, graph edges.
    config = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.MEDIUM)
    # 0 high, 1 medium, 2 low, kept by the database: a swarm's next members are the first entries of
    # its (parent, status, priority_rank, position) index, where ordering by a CASE sorted every
    # pending member at each member's end.
    priority_rank = models.GeneratedField(
        expression=models.Case(
            *[models.When(priority=p, then=models.Value(rank)) for p, rank in PRIORITY_RANK.items()],
            default=models.Value(PRIORITY_RANK[Priority.MEDIUM]),
        ),
        output_field=models.PositiveSmallIntegerField(),
        db_persist=True,
    )
    retries = models.PositiveIntegerField(default=0)
    retry_backoff = models.FloatField(default=1.0)
    timeout = models.FloatField(null=True, blank=True)
    category = models.CharField(max_length=100, blank=True, db_index=True)
    tags = models.JSONField(default=list, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)

    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="members")
    position = models.PositiveIntegerField(default=0)
    node_key = models.CharField(max_length=100, blank=True)
    callback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="callbacks"
    )
    callback_on = models.CharField(max_length=16, choices=CallbackOn.choices, blank=True)
    # The swarm member whose end fired this per-member callback (task_success / task_error / task_finish).
    trigger = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    root = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="descendants")
    # The schedule that created this run, and the tick it ran for (null for "run now"): unique together,
    # so a tick claimed twice (two schedulers, a restart) cannot write a second run.
    schedule = models.ForeignKey("Schedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    scheduled_for = models.DateTimeField(null=True, blank=True)

    progress = models.FloatField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    checkpoint = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    marked_at = models.DateTimeField(null=True, blank=True)
    delete_after = models.DateTimeField(null=True, blank=True, db_index=True)

    objects = SignatureQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["parent", "status", "priority_rank", "position"], name="sig_members_due_idx"),
            models.Index(fields=["status", "updated_at"]),
            # The pages at 100,000 signatures (bench/pages.py). The task list and the dashboard read a
            # person's top-level signatures: these partial indexes hold only those rows, with the trash
            # apart (delete_after). The first two follow the list's order (created_at, id), without and
            # with a status: page 1 reads 25 entries, the dashboard's running work (started_at) is an
            # index-only scan. The third is for counting (the list's count, the counts by status): few
            # distinct keys, so PostgreSQL stores it deduplicated, a few pages that its planner prefers
            # to reading the table. parent and callback_of (null in every entry) are listed so that
            # SQLite sees the indexes as covering: its planner counts the columns of a partial index's
            # condition as missing and would read the table for each row.
            models.Index(
                fields=["owner", "delete_after", "created_at", "id", "parent", "callback_of"],
                condition=TOP_LEVEL,
                name="sig_top_owner_created_idx",
            ),
            models.Index(
                fields=["owner", "status", "delete_after", "created_at", "id", "started_at", "parent", "callback_of"],
                condition=TOP_LEVEL,
                name="sig_top_owner_status_idx",
            ),
            models.Index(
                fields=["owner", "status", "delete_after", "parent", "callback_of"],
                condition=TOP_LEVEL,
                name="sig_top_owner_counts_idx",
            ),
            # Any level, by status and end (it replaces an index on owner and status): the dashboard's
            # throughput and durations read only the entries of their time window, recent failures 10.
            models.Index(fields=["owner", "status", "finished_at"], name="sig_owner_status_finished_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="unique_idempotency_key_per_owner",
            ),
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"],
                condition=Q(scheduled_for__isnull=False),
                name="unique_run_per_schedule_tick",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    @property
    def title(self) -> str:
        return self.name or self.task_name or self.kind

    @property
    def root_id_or_self(self) -> int:
        return self.root_id or self.pk

    @property
    def is_container(self) -> bool:
        return self.kind in CONTAINERS

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def deletion(self) -> dict | None:
        if self.delete_after is None:
            return None
        return {"status": "marked_for_deletion", "marked_at": self.marked_at, "delete_after": self.delete_after}


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    """Its RQ job waits for a worker."""
    RUNNING = "running", "Running"
    """A work horse runs it."""
    COMPLETED = "completed", "Completed"
    """The task returned."""
    FAILED = "failed", "Failed"
    """The task raised or timed out."""
    PAUSED = "paused", "Paused"
    """Stopped at a checkpoint by a pause."""
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    """Ended at an approval request."""
    INTERRUPTED = "interrupted", "Interrupted"
    """Killed or dropped by an interrupt."""
    LOST = "lost", "Lost"
    """Its worker or its RQ job disappeared; the reconciler queued another run."""
    HANDED_BACK = "handed_back", "Handed back"
    """Its worker stopped (SIGTERM) before it ended; another run was queued at once."""


RUN_ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


class Run(models.Model):
    """One execution of a task signature: an attempt, or the continuation after a pause."""

    signature = models.ForeignKey(Signature, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField()
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    queue = models.CharField(max_length=40, blank=True)
    job_id = models.CharField(max_length=64, blank=True)
    worker_name = models.CharField(max_length=200, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)

    # What the API and the admin show of a run.
    PUBLIC_FIELDS = (
        "number", "attempt", "status", "queue", "worker_name", "queued_at", "started_at", "finished_at",
        "duration_ms", "error",
    )

    class Meta:
        ordering = ["signature", "number"]
        constraints = [models.UniqueConstraint(fields=["signature", "number"], name="unique_run_number")]
        # started_at and finished_at: a /metrics scrape reads the runs since the last one.
        indexes = [models.Index(fields=["status", "queued_at"]), models.Index(fields=["started_at"]),
                   models.Index(fields=["finished_at"])]

    def __str__(self) -> str:
        return f"run {self.number} of #{self.signature_id}"

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    """Not started."""
    RUNNING = "running", "Running"
    """In progress."""
    COMPLETED = "completed", "Completed"
    """Done."""
    FAILED = "failed", "Failed"
    """Raised."""
    SKIPPED = "skipped", "Skipped"
    """Bypassed."""
    PAUSED = "paused", "Paused"
    """Held by a pause."""
    APPROVAL = "approval", "Approval"
    """Waits for a human decision."""


class Step(models.Model):
    """A declared step of a task, with its substeps; kept across pause and resume."""

    signature = models.ForeignKey(Signature, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    progress = models.FloatField(default=0)
    weight = models.FloatField(default=1)
    substeps = models.JSONField(default=list, blank=True)  # [{"name": ..., "done": bool}]
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["signature", "order"]
        constraints = [models.UniqueConstraint(fields=["signature", "order"], name="unique_step_order")]

    def __str__(self) -> str:
        return f"{self.order}. {self.name}"

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None


class LogEntry(models.Model):
    signature = models.ForeignKey(Signature, on_delete=models.CASCADE, related_name="logs")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="logs")
    at = models.DateTimeField(default=timezone.now)
    level = models.PositiveSmallIntegerField(default=20)
    logger = models.CharField(max_length=200, blank=True)
    message = models.TextField()

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["signature", "at"]), models.Index(fields=["signature", "level"])]
        verbose_name_plural = "log entries"

    def __str__(self) -> str:
        return self.message[:80]

    @property
    def levelname(self) -> str:
        import logging

        return logging.getLevelName(self.level)


class Event(models.Model):
    """The timeline and the audit trail. Kept after a cancel: the signature link goes, the id stays."""

    signature = models.ForeignKey(Signature, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    signature_ref = models.BigIntegerField(db_index=True)
    root_ref = models.BigIntegerField(null=True, blank=True, db_index=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    type = models.CharField(max_length=40)
    at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=150, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.type} #{self.signature_ref}"


class WorkerProcess(models.Model):
    """A worker's heartbeat, written by the worker itself: the reconciler's view of who is alive."""

    name = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class ResumeReport(models.Model):
    """What one auto-resume pass changed: resumed, skipped and failed items."""

    at = models.DateTimeField(default=timezone.now)
    trigger = models.CharField(max_length=100)
    dry_run = models.BooleanField(default=False)
    resumed = models.JSONField(default=list, blank=True)
    skipped = models.JSONField(default=list, blank=True)
    failures = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"resume report {self.at:%Y-%m-%d %H:%M:%S}: {len(self.resumed)} resumed"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    """Waits for a human decision."""
    APPROVED = "approved", "Approved"
    """A human (or the timeout default) approved."""
    REJECTED = "rejected", "Rejected"
    """A human (or the timeout default) rejected."""


class Approval(models.Model):
    """A human decision a task asked for; the run ended meanwhile and no worker is held."""

    signature = models.ForeignKey(Signature, on_delete=models.CASCADE, related_name="approvals")
    attempt = models.PositiveIntegerField(default=1)
    title = models.CharField(max_length=200)
    details = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    default = models.CharField(max_length=10, default="reject")  # approve | reject | pause, at timeout
    timeout_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["signature", "attempt", "title"], name="unique_approval_per_attempt")
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.status})"

    @property
    def approved(self) -> bool | None:
        return None if self.status == ApprovalStatus.PENDING else self.status == ApprovalStatus.APPROVED


NOTIFIABLE_EVENTS = ["task_started", "step_completed", "approval_needed", "task_completed", "task_failed", "resume_report"]


class Notification(models.Model):
    """One message to one user about an event of their tasks (in-app, browser, email, webhook)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    signature = models.ForeignKey(
        Signature, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=40)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    read_at = models.DateTimeField(null=True, blank=True)
    deliveries = models.JSONField(default=dict, blank=True)  # channel -> "sent" | "failed: ..." | "queued"
    # The webhook's last claimed attempt, and when the next one is due (null: none pending). Kept here,
    # not only in RQ's scheduler, so a Redis flush loses no retry (notifications.reschedule_due_deliveries).
    webhook_attempt = models.PositiveSmallIntegerField(default=0)
    webhook_due_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "read_at"])]

    def __str__(self) -> str:
        return self.title


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class NotificationPreference(models.Model):
    """Which events reach a user, and through which channels."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference")
    events = models.JSONField(default=list, blank=True)  # subset of NOTIFIABLE_EVENTS; empty means the defaults
    in_app = models.BooleanField(default=True)
    browser = models.BooleanField(default=True)
    email = models.BooleanField(default=False)
    email_long_task_seconds = models.PositiveIntegerField(default=600)
    webhook_url = models.URLField(blank=True, max_length=500)
    webhook_secret = models.CharField(max_length=100, default=new_webhook_secret)  # HMAC key of the signature

    def __str__(self) -> str:
        return f"notification preferences of {self.user}"


class GraphDefinition(models.Model):
    """A graph spec saved from the visual editor, to open, edit and run again."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="graph_definitions")
    name = models.CharField(max_length=200)
    spec = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.name


class CatchUp(models.TextChoices):
    SKIP = "skip", "Skip missed ticks"
    """Ticks missed while no scheduler ran are dropped; the next run is the next tick from now."""
    ONCE = "once", "Run once"
    """Ticks missed while no scheduler ran become one run, then the schedule goes on from now."""


class Schedule(models.Model):
    """A spec run on a clock: a cron expression in a time zone, or a fixed interval in seconds.

    ``next_run_at`` is the claim: a scheduler fires a tick by moving it forward with a conditional
    update, so several schedulers (and a restart) fire each tick once."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=200)
    spec = models.JSONField(default=dict)
    cron = models.CharField(max_length=200, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    interval = models.PositiveIntegerField(null=True, blank=True)  # seconds
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    max_active = models.PositiveIntegerField(null=True, blank=True)  # null: no limit
    catch_up = models.CharField(max_length=8, choices=CatchUp.choices, default=CatchUp.SKIP)
    paused = models.BooleanField(default=False)
    next_run_at = models.DateTimeField(null=True, blank=True)  # null: paused or past its end
    last_run_at = models.DateTimeField(null=True, blank=True)
    skipped_ticks = models.PositiveIntegerField(default=0)  # ticks passed over for max_active
    last_error = models.TextField(blank=True)  # why the last tick wrote no run (a spec no longer valid)
    created_at = models.DateTimeField(auto_now_add=True)  # the field ``timezone`` hides the module here
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["paused", "next_run_at"], name="schedule_due_idx")]

    def __str__(self) -> str:
        return self.name


class SavedWorkflow(models.Model):
    """One version of a named spec (a task, chain, swarm or graph) that any spec uses as a node,
    ``{"workflow": NAME, "kwargs": {...}}``. Saving a name again adds a version: a run records the
    version it was built from, and a version never changes once written."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_workflows")
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices)
    description = models.TextField(blank=True)
    spec = models.JSONField(default=dict)  # as written; resolved and validated again at each submit
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name", "version"], name="unique_saved_workflow_version")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
