"""OpenAPI descriptions of what serializers do not validate: the spec, checked whole by ``specs.validate``."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, inline_serializer
from rest_framework import serializers

from ..services import metrics
from .serializers import ErrorSerializer

_SPEC_LIST = {"type": "array", "items": {"type": "object", "description": "a spec"}}

SPEC = {
    "type": "object",
    "description": (
        "Any signature, recursively: a task (`task`), a `chain` (`steps`), a `swarm` (`tasks`) or a `graph` "
        "(`nodes`, `edges`). Every bad field is reported by its path, e.g. `steps[1].kwargs.value`."
    ),
    "properties": {
        "kind": {"type": "string", "enum": ["task", "chain", "swarm", "graph"], "default": "task"},
        "task": {"type": "string", "description": "A registered task name (kind task)."},
        "kwargs": {
            "type": "object",
            "additionalProperties": True,
            "description": "Keyword arguments; on a container they reach every member.",
        },
        "name": {"type": "string", "maxLength": 200},
        "priority": {"type": "string", "enum": ["high", "medium", "low"]},
        "retries": {"type": "integer", "minimum": 0},
        "retry_backoff": {"type": "number", "minimum": 0},
        "timeout": {"type": "number", "nullable": True},
        "category": {"type": "string", "maxLength": 100},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 50}},
        "on_success": _SPEC_LIST,
        "on_error": _SPEC_LIST,
        "on_finish": {**_SPEC_LIST, "description": "Fire once when it ends, whatever the outcome (cleanup)."},
        "steps": {**_SPEC_LIST, "description": "Chain: at least two specs, run in order."},
        "tasks": {**_SPEC_LIST, "description": "Swarm: members run in parallel."},
        "max_concurrency": {"type": "integer", "minimum": 1, "default": 10},
        "stop_after_n_failures": {"type": "integer", "nullable": True},
        "max_tasks": {"type": "integer", "nullable": True},
        "closed": {"type": "boolean", "default": True, "description": "Swarm: false keeps it open for more members."},
        "task_on_success": _SPEC_LIST,
        "task_on_error": _SPEC_LIST,
        "task_on_finish": {**_SPEC_LIST, "description": "Swarm: fire once for each member that ends."},
        "nodes": {
            "type": "object",
            "additionalProperties": {"type": "object", "description": "a spec"},
            "description": "Graph: named nodes.",
        },
        "edges": {
            "type": "array",
            "description": "Graph: must be acyclic.",
            "items": {
                "type": "object",
                "required": ["from", "to"],
                "properties": {
                    "from": {"type": "string"},
                    "to": {"type": "string"},
                    "when": {"type": "object", "description": "A condition; see GET /api/graph-templates/."},
                },
            },
        },
    },
}

SUBMIT = {
    **SPEC,
    "properties": {
        **SPEC["properties"],
        "run": {"type": "boolean", "default": True, "description": "Start at once, or leave it pending."},
        "idempotency_key": {
            "type": "string",
            "maxLength": 200,
            "description": "The same key again returns the signature it created (200).",
        },
    },
}

SUBMIT_EXAMPLES = [
    OpenApiExample("task", value={"task": "examples.echo", "kwargs": {"value": 1}}, request_only=True),
    OpenApiExample(
        "chain",
        value={"kind": "chain", "steps": [{"task": "examples.add", "kwargs": {"a": 1}}, {"task": "examples.double"}]},
        request_only=True,
    ),
    OpenApiExample(
        "swarm",
        value={
            "kind": "swarm",
            "max_concurrency": 2,
            "tasks": [{"task": "examples.sleep", "kwargs": {"seconds": 2}}] * 3,
        },
        request_only=True,
    ),
    OpenApiExample(
        "graph",
        value={
            "kind": "graph",
            "nodes": {
                "c": {"task": "examples.classify", "kwargs": {"value": 70}},
                "hi": {"task": "examples.noop"},
                "lo": {"task": "examples.noop"},
            },
            "edges": [
                {"from": "c", "to": "hi", "when": {"template": "label_is", "params": {"value": "high"}}},
                {"from": "c", "to": "lo", "when": {"path": "label", "op": "eq", "value": "low"}},
            ],
        },
        request_only=True,
    ),
]

BAD_INPUT = OpenApiResponse(ErrorSerializer, description="Bad input; `errors` names each bad field.")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such signature, or not yours.")
CONFLICT = OpenApiResponse(ErrorSerializer, description="The current status forbids this action.")
TOO_LARGE = OpenApiResponse(ErrorSerializer, description="The body exceeds the size limit.")


def _count() -> serializers.IntegerField:
    return serializers.IntegerField()


METRICS = inline_serializer(
    "Metrics",
    {
        "range": serializers.CharField(allow_null=True, help_text="24h, 7d or 30d; null with ?since=."),
        "since": serializers.DateTimeField(),
        "counts": serializers.DictField(
            child=_count(), help_text="Top-level signatures by status, and marked_for_deletion."
        ),
        "throughput": inline_serializer(
            "Throughput",
            {
                "bucket": serializers.ChoiceField(choices=["hour", "day"]),
                "points": inline_serializer(
                    "ThroughputPoint",
                    {
                        "at": serializers.DateTimeField(),
                        "completed": _count(),
                        "failed": _count(),
                    },
                    many=True,
                ),
            },
        ),
        "finished": serializers.IntegerField(help_text="Tasks that completed or failed since `since`."),
        "failed": _count(),
        "failure_rate": serializers.FloatField(
            allow_null=True, help_text="failed / finished; null when none finished."
        ),
        "tasks": inline_serializer(
            "TaskMetrics",
            {
                "task": serializers.CharField(),
                "finished": _count(),
                "failed": _count(),
                "failure_rate": serializers.FloatField(),
                **{
                    f"p{p}_ms": serializers.IntegerField(
                        allow_null=True, help_text=f"{p}th percentile of durations (ms)."
                    )
                    for p in metrics.PERCENTILES
                },
            },
            many=True,
        ),
    },
)


# Answers that no view declares because every view can give them -----------------------------------

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_COMMON = {
    "403": "Not signed in (or not allowed).",
    "401": "Bad credentials.",
    "429": "Too many requests: the rate limit is reached; `Retry-After` says when to try again.",
}


def document_common_errors(result: dict, generator, request, public: bool) -> dict:
    """A ``POSTPROCESSING_HOOKS`` entry: the error answers of authentication, throttling, bad query
    parameters, the body size limit and out-of-range pages, on every operation they apply to."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, description in _answers(operation).items():
                responses.setdefault(code, {"description": description, "content": _ERROR})
    return result


def _answers(operation: dict) -> dict[str, str]:
    answers = {"429": _COMMON["429"]}
    if {} not in operation.get("security", []):
        answers.update({"401": _COMMON["401"], "403": _COMMON["403"]})
    params = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
    if params or "requestBody" in operation:
        answers["400"] = "Bad input; `errors` names each bad field."
    if "requestBody" in operation:
        answers["413"] = "The body exceeds the size limit."
    if "page" in params:
        answers["404"] = "No such page."
    return answers
