"""Serializers of the API: signatures (list and detail), request bodies, and the read-only views."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import (
    Approval,
    ApprovalStatus,
    CallbackOn,
    Event,
    Kind,
    LogEntry,
    Priority,
    ResumeReport,
    Run,
    RunStatus,
    Signature,
    Status,
)
from ..services import approvals, metrics
from ..services import progress as task_progress
from .digits import AsciiIntegerField

MAX_CHILDREN = 1000  # members listed inline in a detail; ``GET /api/tasks/?parent=ID`` pages through all
MAX_SINCE_DAYS = 366  # how far back ``GET /api/metrics/?since=`` may reach
MAX_TTL = 100 * 365 * 86400  # seconds; a longer restore window overflows the dates a database stores


# Signatures -----------------------------------------------------------------------------------


class DeletionSerializer(serializers.Serializer):
    status = serializers.CharField()
    marked_at = serializers.DateTimeField()
    delete_after = serializers.DateTimeField()


class ChildSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Status.choices)
    kind = serializers.ChoiceField(choices=Kind.choices)
    name = serializers.CharField()
    task = serializers.CharField(source="task_name")
    node = serializers.CharField(source="node_key", help_text="The node's name in a graph; empty elsewhere.")
    progress = serializers.FloatField()


class CallbackSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    on = serializers.CharField(
        source="callback_on", help_text="success, error, finish, task_success, task_error or task_finish."
    )
    status = serializers.ChoiceField(choices=Status.choices)
    task = serializers.CharField(source="task_name")
    trigger = serializers.IntegerField(
        source="trigger_id", allow_null=True, help_text="The swarm member whose end fired this callback."
    )


class RunSerializer(serializers.ModelSerializer):
    class Meta:
        model = Run
        fields = Run.PUBLIC_FIELDS
        read_only_fields = fields

    # Not an enum in the schema: two enums both named "status" would collide (ENUM_NAME_OVERRIDES).
    status = serializers.CharField(help_text=f"One of {', '.join(RunStatus.values)}.")
    duration_ms = serializers.IntegerField(allow_null=True)
    error = serializers.JSONField(allow_null=True)


class ApprovalSerializer(serializers.ModelSerializer):
    status = serializers.CharField(help_text=f"One of {', '.join(ApprovalStatus.values)}.")  # see RunSerializer

    class Meta:
        model = Approval
        fields = ["id", "title", "details", "status", "default", "timeout_at", "created_at"]
        read_only_fields = fields


class SignatureListSerializer(serializers.ModelSerializer):
    """The light row of a list: no results, errors, kwargs or members."""

    task = serializers.CharField(source="task_name")
    node = serializers.CharField(source="node_key")
    owner = serializers.CharField(source="owner.username")
    title = serializers.CharField()
    deletion = DeletionSerializer(allow_null=True)
    members_count = serializers.IntegerField(help_text="How many members a container has (0 for a task).")

    class Meta:
        model = Signature
        fields = [
            "id",
            "kind",
            "name",
            "title",
            "task",
            "status",
            "priority",
            "progress",
            "category",
            "tags",
            "owner",
            "attempts",
            "parent",
            "position",
            "node",
            "created_at",
            "started_at",
            "finished_at",
            "members_count",
            "deletion",
            "schedule",
            "scheduled_for",
        ]
        read_only_fields = fields


class SignatureDetailSerializer(serializers.ModelSerializer):
    """A signature with its members (ids and statuses in order), callbacks, runs and container config."""

    task = serializers.CharField(source="task_name")
    node = serializers.CharField(source="node_key")
    owner = serializers.CharField(source="owner.username")
    title = serializers.CharField()
    kwargs = serializers.JSONField()
    result = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    root = serializers.IntegerField(source="root_id", allow_null=True)
    callback_of = serializers.IntegerField(source="callback_of_id", allow_null=True)
    callback_on = serializers.ChoiceField(
        choices=CallbackOn.choices, allow_blank=True, help_text="What fires a callback; empty on anything else."
    )
    deletion = DeletionSerializer(allow_null=True)
    progress = serializers.SerializerMethodField(help_text="Percent done, as GET /progress says it (a container's "
                                                 "from its members: ended ones, failed too, count 100).")
    children = serializers.SerializerMethodField(help_text=f"Members in order (at most {MAX_CHILDREN}).")
    children_count = serializers.SerializerMethodField()
    member_counts = serializers.SerializerMethodField(help_text="Members by status (containers).")
    callbacks = serializers.SerializerMethodField()
    runs = serializers.SerializerMethodField(help_text="Executions of a task: attempts and continuations.")
    workflow = serializers.SerializerMethodField(
        help_text="The saved workflow this signature was built from ({name, version}), resolved at submit; else null."
    )
    approval = serializers.SerializerMethodField(help_text="The approval waiting for a decision, if any.")
    config = serializers.SerializerMethodField(
        help_text="Container settings: max_concurrency, closed, stopped, stop_after_n_failures, max_tasks, "
        "task_on_success, task_on_error, task_on_finish (swarms); edges and edge_states (graphs). Null for a task."
    )

    class Meta:
        model = Signature
        fields = [
            "id",
            "kind",
            "name",
            "title",
            "task",
            "kwargs",
            "status",
            "priority",
            "progress",
            "result",
            "error",
            "attempts",
            "retries",
            "timeout",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
            "parent",
            "position",
            "node",
            "root",
            "callback_of",
            "callback_on",
            "children",
            "children_count",
            "member_counts",
            "callbacks",
            "workflow",
            "runs",
            "approval",
            "config",
            "category",
            "tags",
            "owner",
            "idempotency_key",
            "deletion",
            "schedule",
            "scheduled_for",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.FloatField())
    def get_progress(self, sig: Signature) -> float:
        return round(task_progress.overall_percent(sig), 1)

    @extend_schema_field(ChildSerializer(many=True))
    def get_children(self, sig: Signature) -> list[dict]:
        members = sig.members.order_by("position").only(
            "pk", "parent", "status", "kind", "name", "task_name", "node_key", "progress"
        )
        return ChildSerializer(members[:MAX_CHILDREN], many=True).data

    def get_children_count(self, sig: Signature) -> int:
        return sig.members.count() if sig.is_container else 0

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_member_counts(self, sig: Signature) -> dict[str, int]:
        if not sig.is_container:
            return {}
        rows = sig.members.order_by().values("status").annotate(n=Count("pk"))
        return {row["status"]: row["n"] for row in rows}

    @extend_schema_field(CallbackSerializer(many=True))
    def get_callbacks(self, sig: Signature) -> list[dict]:
        callbacks = sig.callbacks.order_by("pk").only(
            "pk", "callback_of", "callback_on", "status", "task_name", "trigger_id"
        )
        return CallbackSerializer(callbacks[:MAX_CHILDREN], many=True).data

    @extend_schema_field(RunSerializer(many=True))
    def get_runs(self, sig: Signature) -> list[dict]:
        return RunSerializer(sig.runs.order_by("number"), many=True).data if sig.kind == Kind.TASK else []

    @extend_schema_field(ApprovalSerializer(allow_null=True))
    def get_approval(self, sig: Signature) -> dict | None:
        approval = approvals.pending_for(sig) if sig.status == Status.WAITING_APPROVAL else None
        return ApprovalSerializer(approval).data if approval else None

    @extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
    def get_config(self, sig: Signature) -> dict | None:
        return sig.config if sig.is_container else None

    @extend_schema_field({"type": "object", "nullable": True, "properties": {
        "name": {"type": "string"}, "version": {"type": "integer"}}})
    def get_workflow(self, sig: Signature) -> dict | None:
        return (sig.spec or {}).get("saved_workflow") if "spec" not in sig.get_deferred_fields() else None


# Request bodies --------------------------------------------------------------------------------


class SubmitOptionsSerializer(serializers.Serializer):
    """The two keys a create request adds to the spec."""

    run = serializers.BooleanField(default=True, help_text="Start at once (default) or leave pending.")
    idempotency_key = serializers.CharField(
        max_length=200,
        required=False,
        allow_null=True,
        allow_blank=False,
        help_text="Sending the same key again returns the signature it created (200) instead of a new one.",
    )


class TaskUpdateSerializer(serializers.Serializer):
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    category = serializers.CharField(max_length=100, allow_blank=True, required=False)
    tags = serializers.ListField(
        child=serializers.CharField(max_length=50, allow_blank=False), max_length=100, required=False
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {key: "cannot be changed; use priority, name, category or tags" for key in sorted(unknown)}
            )
        return attrs


class DeleteParamsSerializer(serializers.Serializer):
    ttl = AsciiIntegerField(
        min_value=0,
        max_value=MAX_TTL,
        required=False,
        help_text="Seconds the signature stays restorable (default: the configured TTL).",
    )


class ConfirmSerializer(serializers.Serializer):
    confirm = serializers.BooleanField(help_text="Must be true: cancel deletes the signature and everything below it.")


class DecisionSerializer(serializers.Serializer):
    comment = serializers.CharField(max_length=2000, allow_blank=True, default="")


class ActionBodySerializer(serializers.Serializer):
    """An action's optional body: unknown fields are refused (a typo must not retry with old arguments)."""

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({key: f"unknown field; use {', '.join(self.fields)}" for key in unknown})
        return attrs


class RetrySerializer(ActionBodySerializer):
    kwargs = serializers.JSONField(
        required=False, help_text="New arguments for a task, replacing the old ones (validated as a spec's)."
    )
    from_start = serializers.BooleanField(
        default=False, help_text="Redo completed steps too (default: resume from the failed step and checkpoint)."
    )


class SkipSerializer(ActionBodySerializer):
    result = serializers.JSONField(
        required=False, allow_null=True, default=None,
        help_text="A failed member of a chain or graph: the result its container goes on with (default null).",
    )


class BulkAddSerializer(serializers.Serializer):
    tasks = serializers.JSONField(help_text="A list of specs.")
    run = serializers.BooleanField(default=True)
    atomic = serializers.BooleanField(
        default=True, help_text="All or nothing (default); false adds the valid specs and reports the rest."
    )
    batch_size = AsciiIntegerField(min_value=1, max_value=10_000, default=1000)


class RejectedSpecSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    errors = serializers.DictField(child=serializers.CharField())


class BulkAddResultSerializer(serializers.Serializer):
    added = serializers.ListField(child=serializers.IntegerField())
    rejected = RejectedSpecSerializer(many=True)


class LogParamsSerializer(serializers.Serializer):
    level = serializers.CharField(required=False, allow_blank=True, help_text="Minimum level, e.g. WARNING.")
    q = serializers.CharField(required=False, allow_blank=True, max_length=500, help_text="Words in the message.")


class MetricsParamsSerializer(serializers.Serializer):
    range = serializers.ChoiceField(
        choices=list(metrics.RANGES), default=metrics.DEFAULT_RANGE, help_text="The window, as on the dashboard."
    )
    since = serializers.DateTimeField(
        required=False,
        help_text=f"An explicit start of the window instead of range, at most {MAX_SINCE_DAYS} days ago.",
    )

    def validate_since(self, value: datetime) -> datetime:
        # The throughput has a point per day of the window: an old start would mean a huge answer.
        if value < timezone.now() - timedelta(days=MAX_SINCE_DAYS):
            raise serializers.ValidationError(f"must be at most {MAX_SINCE_DAYS} days ago")
        return value


# Read-only views -------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        help_text="On a 400: each bad field (or spec path) and its problem.",
    )


class EventSerializer(serializers.ModelSerializer):
    task_id = serializers.IntegerField(source="signature_ref")

    class Meta:
        model = Event
        fields = ["id", "type", "at", "actor", "task_id", "data"]
        read_only_fields = fields


class CancelledSerializer(serializers.Serializer):
    detail = serializers.CharField()
    audit = EventSerializer()


class LogEntrySerializer(serializers.ModelSerializer):
    task_id = serializers.IntegerField(source="signature_id")
    level = serializers.CharField(source="levelname")

    class Meta:
        model = LogEntry
        fields = ["id", "task_id", "at", "level", "logger", "message"]
        read_only_fields = fields


class SubstepSerializer(serializers.Serializer):
    name = serializers.CharField()
    done = serializers.BooleanField()


class StepSerializer(serializers.Serializer):
    order = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    duration_ms = serializers.IntegerField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    substeps = SubstepSerializer(many=True)
    task_id = serializers.IntegerField(required=False, help_text="Containers: the member behind this step.")
    kind = serializers.CharField(required=False)
    task = serializers.CharField(required=False)
    member_status = serializers.CharField(required=False)


class ProgressSerializer(serializers.Serializer):
    task_id = serializers.IntegerField()
    title = serializers.CharField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    current_step = serializers.IntegerField()
    current_step_name = serializers.CharField(allow_null=True)
    total_steps = serializers.IntegerField()
    done_steps = serializers.IntegerField(help_text="Steps done; of a container, members ended (failed ones too).")
    failed_steps = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    eta_seconds = serializers.FloatField(allow_null=True, help_text="Seconds left, in tenths; null without a basis.")
    steps = StepSerializer(many=True)


class TaskParamSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField(help_text="keyword, or var_keyword for **kwargs.")
    required = serializers.BooleanField()
    default = serializers.JSONField(allow_null=True)
    type = serializers.CharField()


class RegisteredTaskSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    category = serializers.CharField()
    priority = serializers.CharField()
    retries = serializers.IntegerField()
    retry_backoff = serializers.FloatField()
    timeout = serializers.FloatField(allow_null=True)
    steps = serializers.ListField(child=serializers.CharField())
    params = TaskParamSerializer(many=True)


class GraphTemplateSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    params = serializers.DictField(child=serializers.DictField(), help_text="Parameter name → {type, required}.")


class ResumeReportSerializer(serializers.ModelSerializer):
    class Meta:
        model = ResumeReport
        fields = ["id", "at", "trigger", "dry_run", "resumed", "skipped", "failures"]
        read_only_fields = fields
