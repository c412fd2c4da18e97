"""The DRF API (CONTRACT.md §5): each view validates its input and calls one service.

Ownership: every query starts from ``Signature.objects.visible_to(user)``, so another user's
signature answers 404; holders of ``tasks_app.view_signature`` see everyone's, and changing another
user's needs ``tasks_app.change_signature`` (403 otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Event, ResumeReport, Signature, may_control, sees_all_tasks
from ..registry import all_tasks
from ..services import approvals, deletion, events, execution, lifecycle, metrics, swarms, tree
from ..services import logs as task_logs
from ..services import progress as task_progress
from ..services.conditions import TEMPLATES
from . import schema
from .content import CSVRenderer, FormatNegotiation, JSONBodyParser, TextRenderer
from .errors import InvalidInput
from .filters import TaskFilter
from .pagination import CursorParams, Pagination, cursor_page
from .serializers import (
    BulkAddResultSerializer,
    BulkAddSerializer,
    CancelledSerializer,
    ConfirmSerializer,
    DecisionSerializer,
    DeleteParamsSerializer,
    EventSerializer,
    GraphTemplateSerializer,
    LogEntrySerializer,
    LogParamsSerializer,
    MetricsParamsSerializer,
    ProgressSerializer,
    RegisteredTaskSerializer,
    ResumeReportSerializer,
    RetrySerializer,
    SignatureDetailSerializer,
    SignatureListSerializer,
    SkipSerializer,
    SubmitOptionsSerializer,
    TaskUpdateSerializer,
)

RECENT_REPORTS = 500  # how far back a non-staff user's resume reports are looked for

ACTION_RESPONSES = {200: SignatureDetailSerializer, 404: schema.NOT_FOUND, 409: schema.CONFLICT}


class ApiView:
    """What every view of this API shares: size-limited JSON bodies and strict ``?format=``."""

    parser_classes = [JSONBodyParser]
    content_negotiation_class = FormatNegotiation


def actor(request: Request) -> str:
    return events.actor_name(request.user)


def json_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput({"body": "must be a JSON object"})
    return dict(data)


def valid(serializer_class: type, data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@extend_schema_view(
    list=extend_schema(summary="Top-level signatures, or a container's members with ?parent="),
    retrieve=extend_schema(
        summary="A signature's detail", responses={200: SignatureDetailSerializer, 404: schema.NOT_FOUND}
    ),
)
class TaskViewSet(ApiView, viewsets.GenericViewSet):
    """Signatures: tasks, chains, swarms and graphs, with their lifecycle actions."""

    serializer_class = SignatureDetailSerializer
    filterset_class = TaskFilter
    pagination_class = Pagination
    lookup_value_regex = "[0-9]+"

    def get_queryset(self) -> QuerySet[Signature]:
        if getattr(self, "swagger_fake_view", False):
            return Signature.objects.none()
        queryset = Signature.objects.visible_to(self.request.user).select_related("owner")
        if self.action != "list":
            return queryset
        members = Signature.objects.filter(parent=OuterRef("pk")).order_by().values("parent").annotate(n=Count("pk"))
        return queryset.annotate(
            members_count=Coalesce(Subquery(members.values("n"), output_field=IntegerField()), 0),
        )

    def get_object(self) -> Signature:
        """The signature, if visible (404 otherwise); changing another user's also needs the change permission."""
        sig = super().get_object()
        if self.request.method not in SAFE_METHODS and not may_control(self.request.user, sig):
            raise PermissionDenied("you may view this task but not control it (needs tasks_app.change_signature)")
        return sig

    def get_serializer_class(self) -> type:
        return SignatureListSerializer if self.action == "list" else SignatureDetailSerializer

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        # The list's filters (top level, trash apart) must not hide a member or a trashed detail.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def detail_response(self, sig: Signature, code: int = status.HTTP_200_OK) -> Response:
        fresh = Signature.objects.select_related("owner").get(pk=sig.pk)
        return Response(SignatureDetailSerializer(fresh, context=self.get_serializer_context()).data, status=code)

    def apply(self, service: Callable[..., Signature]) -> Response:
        return self.detail_response(service(self.get_object(), actor=actor(self.request)))

    # CRUD --------------------------------------------------------------------------------------

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(SignatureListSerializer(page, many=True).data)

    @extend_schema(
        summary="Create a signature from a spec",
        request={"application/json": schema.SUBMIT},
        examples=schema.SUBMIT_EXAMPLES,
        responses={
            201: SignatureDetailSerializer,
            200: OpenApiResponse(SignatureDetailSerializer, description="The idempotency key was seen before."),
            400: schema.BAD_INPUT,
            413: schema.TOO_LARGE,
        },
    )
    def create(self, request: Request) -> Response:
        spec = json_object(request.data)
        options = valid(SubmitOptionsSerializer, {k: spec.pop(k) for k in ("run", "idempotency_key") if k in spec})
        key = options.get("idempotency_key")
        existing = key and Signature.objects.filter(owner=request.user, idempotency_key=key).first()
        if existing:
            return self.detail_response(existing)
        try:
            sig = execution.submit(
                spec, owner=request.user, run=options["run"], idempotency_key=key, actor=actor(request)
            )
        except IntegrityError:
            if not key:
                raise
            # A concurrent request with the same key created it first.
            return self.detail_response(Signature.objects.get(owner=request.user, idempotency_key=key))
        return self.detail_response(sig, status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        return self.detail_response(self.get_object())

    @extend_schema(
        summary="Change priority (also while queued), name, category or tags",
        request=TaskUpdateSerializer,
        responses={200: SignatureDetailSerializer, 400: schema.BAD_INPUT, 404: schema.NOT_FOUND},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        sig = self.get_object()
        changes = dict(valid(TaskUpdateSerializer, json_object(request.data)))
        if "priority" in changes:
            sig = lifecycle.set_priority(sig, changes.pop("priority"), actor=actor(request))
        if changes:
            relabel(sig, changes, actor=actor(request))
        return self.detail_response(sig)

    @extend_schema(
        summary="Mark for deletion (soft delete; restorable until delete_after; running work continues)",
        parameters=[DeleteParamsSerializer],
        responses={200: SignatureDetailSerializer, 400: schema.BAD_INPUT, 404: schema.NOT_FOUND, 409: schema.CONFLICT},
    )
    def destroy(self, request: Request, pk: str) -> Response:
        ttl = valid(DeleteParamsSerializer, request.query_params).get("ttl")
        return self.detail_response(deletion.delete(self.get_object(), ttl=ttl, actor=actor(request)))

    # Lifecycle actions -------------------------------------------------------------------------

    @extend_schema(
        summary="Pause: hold queued work, stop running work at its next checkpoint",
        request=None,
        responses=ACTION_RESPONSES,
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self.apply(lifecycle.pause)

    @extend_schema(summary="Start a stored signature (created with run: false)", request=None,
                   responses=ACTION_RESPONSES)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str) -> Response:
        return self.apply(lifecycle.start)

    @extend_schema(summary="Resume paused or interrupted work", request=None, responses=ACTION_RESPONSES)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self.apply(lifecycle.resume)

    @extend_schema(summary="Interrupt: stop hard, keep everything", request=None, responses=ACTION_RESPONSES)
    @action(detail=True, methods=["post"])
    def interrupt(self, request: Request, pk: str) -> Response:
        return self.apply(lifecycle.interrupt)

    @extend_schema(
        summary="Retry a failed or interrupted signature (a container: its failed members)",
        description="A task resumes from its failed step with its completed steps and last checkpoint, unless "
        "from_start; kwargs replaces a task's arguments (400 naming the field, nothing changed).",
        request=RetrySerializer,
        responses={**ACTION_RESPONSES, 400: schema.BAD_INPUT},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        body = valid(RetrySerializer, json_object(request.data))
        sig = self.get_object()
        return self.detail_response(lifecycle.retry(sig, actor=actor(request), **body))

    @extend_schema(
        summary="Skip a failure: a task's failed step, or a failed member of a chain or graph",
        description="A failed task: its failed step becomes skipped and it runs on from the next step. A failed "
        "member of a chain or graph: it becomes skipped and its container goes on as if it had returned result.",
        request=SkipSerializer,
        responses={**ACTION_RESPONSES, 400: schema.BAD_INPUT},
    )
    @action(detail=True, methods=["post"])
    def skip(self, request: Request, pk: str) -> Response:
        body = valid(SkipSerializer, json_object(request.data))
        sig = self.get_object()
        return self.detail_response(lifecycle.skip(sig, result=body["result"], actor=actor(request)))

    @extend_schema(summary="Run a finished signature again from scratch", request=None, responses=ACTION_RESPONSES)
    @action(detail=True, methods=["post"])
    def rerun(self, request: Request, pk: str) -> Response:
        return self.apply(lifecycle.rerun)

    @extend_schema(summary="Restore a signature marked for deletion", request=None, responses=ACTION_RESPONSES)
    @action(detail=True, methods=["post"])
    def restore(self, request: Request, pk: str) -> Response:
        return self.apply(deletion.restore)

    @extend_schema(
        summary="Cancel: stop and delete the whole tree (irreversible; an audit event remains)",
        request=ConfirmSerializer,
        responses={200: CancelledSerializer, 400: schema.BAD_INPUT, 404: schema.NOT_FOUND},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        confirm = json_object(request.data).get("confirm") is True
        audit = lifecycle.cancel(self.get_object(), confirm=confirm, actor=actor(request))
        return Response({"detail": "cancelled", "audit": EventSerializer(audit).data})

    @extend_schema(
        summary="Approve the pending approval",
        request=DecisionSerializer,
        responses={**ACTION_RESPONSES, 400: schema.BAD_INPUT},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        return self.decide(request, approve=True)

    @extend_schema(
        summary="Reject the pending approval",
        request=DecisionSerializer,
        responses={**ACTION_RESPONSES, 400: schema.BAD_INPUT},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        return self.decide(request, approve=False)

    def decide(self, request: Request, *, approve: bool) -> Response:
        comment = valid(DecisionSerializer, json_object(request.data))["comment"]
        sig = self.get_object()
        approvals.decide(sig, approve=approve, comment=comment, actor=actor(request))
        return self.detail_response(sig)

    # Swarms ------------------------------------------------------------------------------------

    @extend_schema(
        summary="Add members to a swarm in bulk (validated first; atomic unless atomic=false)",
        request=BulkAddSerializer,
        responses={
            201: BulkAddResultSerializer,
            400: schema.BAD_INPUT,
            404: schema.NOT_FOUND,
            409: schema.CONFLICT,
            413: schema.TOO_LARGE,
        },
    )
    @action(detail=True, methods=["post"], url_path="tasks")
    def add_tasks(self, request: Request, pk: str) -> Response:
        params = valid(BulkAddSerializer, json_object(request.data))
        result = swarms.add_tasks(
            self.get_object(),
            params["tasks"],
            run=params["run"],
            atomic=params["atomic"],
            batch_size=params["batch_size"],
            actor=actor(request),
        )
        rejected = [{"index": index, "errors": errors} for index, errors in sorted(result.rejected.items())]
        return Response(
            {"added": [member.pk for member in result.added], "rejected": rejected}, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Close a swarm: it completes when its members are done", request=None, responses=ACTION_RESPONSES
    )
    @action(detail=True, methods=["post"])
    def close(self, request: Request, pk: str) -> Response:
        return self.apply(swarms.close)

    # Watching ----------------------------------------------------------------------------------

    @extend_schema(
        summary="The progress view: steps, substeps, percent and ETA",
        responses={200: ProgressSerializer, 404: schema.NOT_FOUND},
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def progress(self, request: Request, pk: str) -> Response:
        return Response(ProgressSerializer(task_progress.payload(self.get_object())).data)

    @extend_schema(
        summary="Logs of the signature and its descendants",
        parameters=[
            LogParamsSerializer,
            CursorParams,
            OpenApiParameter(
                "format",
                enum=["json", "csv", "text"],
                default="json",
                description="json: a page in id order (follow with ?after=); csv, text: the whole file.",
            ),
        ],
        responses={
            (200, "application/json"): LogEntrySerializer(many=True),
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "text/plain"): OpenApiTypes.STR,
            400: schema.BAD_INPUT,
            404: schema.NOT_FOUND,
        },
    )
    @action(
        detail=True,
        methods=["get"],
        pagination_class=None,
        filter_backends=[],
        renderer_classes=[JSONRenderer, BrowsableAPIRenderer, CSVRenderer, TextRenderer],
    )
    def logs(self, request: Request, pk: str) -> Response | StreamingHttpResponse:
        sig = self.get_object()
        params = valid(LogParamsSerializer, request.query_params)
        try:
            min_level = task_logs.parse_level(params.get("level"))
        except ValueError as exc:
            raise InvalidInput({"level": str(exc)}) from exc
        entries = task_logs.for_tree(sig, min_level=min_level, q=params.get("q", ""))
        fmt = request.accepted_renderer.format
        if fmt in ("csv", "text"):
            chunks, _ = task_logs.export_stream(entries, fmt)
            filename = f"task-{sig.pk}-logs.{'csv' if fmt == 'csv' else 'txt'}"
            # A plain response, streamed: a workflow's whole log need not fit in memory.
            content_type = f"{request.accepted_renderer.media_type}; charset=utf-8"
            return StreamingHttpResponse(
                chunks, content_type=content_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
            )
        return cursor_page(request, entries, LogEntrySerializer)

    @extend_schema(
        summary="The timeline of the signature's tree: [{type, at, actor, data}]",
        parameters=[CursorParams],
        responses={200: EventSerializer(many=True), 400: schema.BAD_INPUT, 404: schema.NOT_FOUND},
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def events(self, request: Request, pk: str) -> Response:
        return cursor_page(request, timeline(self.get_object()), EventSerializer)


def relabel(sig: Signature, changes: dict[str, Any], *, actor: str) -> None:
    """Name, category and tags: plain labels with no transition behind them, so one update and its event."""
    with transaction.atomic():
        Signature.objects.filter(pk=sig.pk).update(**changes, updated_at=timezone.now())
        events.record(sig, "updated", actor=actor, **changes)


def timeline(sig: Signature) -> QuerySet[Event]:
    """Events of the signature's tree; they outlive a cancel, so they are found by reference, not by link."""
    if sig.parent_id is None and sig.callback_of_id is None:
        return Event.objects.filter(root_ref=sig.pk)
    return Event.objects.filter(signature_ref__in=tree.descendant_ids(sig))


# Read-only views ------------------------------------------------------------------------------


class RegistryView(ApiView, APIView):
    """The tasks a spec can name."""

    @extend_schema(summary="Registered tasks with their parameters", responses=RegisteredTaskSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(RegisteredTaskSerializer(all_tasks(), many=True).data)


class GraphTemplatesView(ApiView, APIView):
    """Conditions a graph edge can use by name: ``{"template": NAME, "params": {...}}``."""

    @extend_schema(summary="Named edge conditions for the graph editor", responses=GraphTemplateSerializer(many=True))
    def get(self, request: Request) -> Response:
        templates = [{"name": name, **template} for name, template in TEMPLATES.items()]
        return Response(GraphTemplateSerializer(templates, many=True).data)


class MetricsView(ApiView, APIView):
    """Dashboard numbers over the signatures the user can see: the same as the web dashboard's."""

    @extend_schema(
        summary="Counts by status, throughput, failure rate and duration percentiles by task",
        parameters=[MetricsParamsSerializer],
        responses={200: schema.METRICS, 400: schema.BAD_INPUT},
    )
    def get(self, request: Request) -> Response:
        params = valid(MetricsParamsSerializer, request.query_params)
        return Response(
            metrics_payload(Signature.objects.visible_to(request.user), params["range"], params.get("since"))
        )


def metrics_payload(signatures: QuerySet[Signature], range_key: str, since: datetime | None) -> dict[str, Any]:
    """``metrics.summary`` with an explicit start when ``?since=`` is given, and the overall failure rate."""
    if since is None:
        data = metrics.summary(signatures, range_key)
    else:
        now = timezone.now()
        data = {
            "range": None,
            "since": since.isoformat(),
            "counts": metrics.counts_by_status(signatures),
            "throughput": metrics.throughput(signatures, since, now),
            "tasks": metrics.by_task(signatures, since),
        }
    finished = sum(row["finished"] for row in data["tasks"])
    failed = sum(row["failed"] for row in data["tasks"])
    return {
        **data,
        "finished": finished,
        "failed": failed,
        "failure_rate": round(failed / finished, 4) if finished else None,
    }


@extend_schema(summary="Auto-resume reports (non-staff: only the items about their own tasks)")
class ResumeReportListView(ApiView, generics.ListAPIView):
    """What each auto-resume pass resumed, skipped or failed to resume."""

    serializer_class = ResumeReportSerializer
    pagination_class = Pagination
    filter_backends: list = []

    def get_queryset(self) -> QuerySet[ResumeReport] | list[ResumeReport]:
        user = self.request.user
        if getattr(self, "swagger_fake_view", False) or sees_all_tasks(user):
            return ResumeReport.objects.all()
        return reports_about(user)


def reports_about(user) -> list[ResumeReport]:
    """Recent reports that mention the user's tasks, each trimmed to those items (others' titles stay hidden)."""
    recent = list(ResumeReport.objects.all()[:RECENT_REPORTS])
    sections = ("resumed", "skipped", "failures")
    mentioned = {
        item.get("task_id") for r in recent for key in sections for item in getattr(r, key) if isinstance(item, dict)
    }
    ids = [task_id for task_id in mentioned if isinstance(task_id, int)]
    mine = set(Signature.objects.filter(owner=user, pk__in=ids).values_list("pk", flat=True))
    visible = []
    for report in recent:
        for key in sections:
            setattr(report, key, [i for i in getattr(report, key) if isinstance(i, dict) and i.get("task_id") in mine])
        if any(getattr(report, key) for key in sections):
            visible.append(report)
    return visible
