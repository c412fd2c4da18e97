"""Workers and queues over HTTP (CONTRACT.md §8), for staff: what ``services.workers`` reads.

``urlpatterns`` is included under ``/api/`` by ``api/urls.py``.
"""

from __future__ import annotations

from dataclasses import asdict

from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..services import workers
from .content import FormatNegotiation, JSONBodyParser
from .serializers import ErrorSerializer


class RedisUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "Redis is unreachable: the queues cannot be read now."
    default_code = "redis_unavailable"


class TaskRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    task = serializers.CharField()
    run = serializers.IntegerField(help_text="The run's number within its task.")
    started_at = serializers.DateTimeField(allow_null=True)
    url = serializers.SerializerMethodField()

    def get_url(self, item: dict) -> str:
        return f"/tasks/{item['id']}/"


class NextRunSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    status = serializers.CharField()
    worker = serializers.CharField(help_text="Empty while the new run waits in its queue.")


class AutoResumeSerializer(TaskRefSerializer):
    at = serializers.DateTimeField(allow_null=True, help_text="When the run was ended as lost or handed back.")
    outcome = serializers.ChoiceField(choices=["waiting", "resumed", "handed_back", "gave_up", "ended"])
    detail = serializers.CharField()
    next_run = NextRunSerializer(allow_null=True)


class WorkerSerializer(serializers.Serializer):
    name = serializers.CharField()
    host = serializers.CharField()
    pid = serializers.IntegerField(allow_null=True)
    state = serializers.CharField(help_text="RQ's state (idle, busy, suspended, ...), or `lost` when its heartbeat "
                                            "stopped or its process is gone.")
    started_at = serializers.DateTimeField(allow_null=True)
    heartbeat = serializers.DateTimeField(allow_null=True)
    heartbeat_age = serializers.FloatField(allow_null=True, help_text="Seconds since the last heartbeat.")
    concurrency = serializers.IntegerField(allow_null=True, help_text="Slots of the process; null when unknown.")
    slots_in_use = serializers.IntegerField()
    queues = serializers.ListField(child=serializers.CharField())
    finished_jobs = serializers.IntegerField(allow_null=True)
    failed_jobs = serializers.IntegerField(allow_null=True)
    current_tasks = TaskRefSerializer(many=True)
    auto_resume = AutoResumeSerializer(many=True, help_text="A lost worker: what auto-resume did about its runs.")


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    priority = serializers.CharField(allow_null=True)
    depth = serializers.IntegerField(help_text="Jobs waiting.")
    oldest_age = serializers.FloatField(allow_null=True, help_text="Seconds the job at the head has waited.")
    started = serializers.IntegerField()
    scheduled = serializers.IntegerField()
    failed = serializers.IntegerField()


class StaffApiView(APIView):
    parser_classes = [JSONBodyParser]
    content_negotiation_class = FormatNegotiation
    permission_classes = [IsAdminUser]


class WorkerListView(StaffApiView):
    """Every worker process, live ones first; a lost one with what auto-resume did about its runs."""

    @extend_schema(summary="Worker processes (staff)", responses=WorkerSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(WorkerSerializer([asdict(w) for w in workers.workers()], many=True).data)


class QueueListView(StaffApiView):
    """The orchestrator's queues in the order workers read them."""

    @extend_schema(
        summary="Queue depths (staff)",
        responses={200: QueueSerializer(many=True), 503: OpenApiResponse(ErrorSerializer, "Redis is unreachable.")},
    )
    def get(self, request: Request) -> Response:
        try:
            found = workers.queues()
        except workers.REDIS_DOWN as exc:
            raise RedisUnavailable() from exc
        return Response(QueueSerializer([asdict(q) for q in found], many=True).data)


urlpatterns = [
    path("workers/", WorkerListView.as_view(), name="workers"),
    path("queues/", QueueListView.as_view(), name="queues"),
]
