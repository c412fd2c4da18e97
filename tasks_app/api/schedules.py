"""``/api/schedules/``: specs run on a clock (CONTRACT.md §8). Each view validates and calls one
service of ``services.schedules``; another user's schedule answers 404, as tasks do, and changing it
needs ``tasks_app.change_signature`` (the permission that controls their runs)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response

from ..models import CatchUp, Schedule, Signature, controls_all_tasks
from ..services import schedules
from . import schema
from .digits import AsciiIntegerField
from .pagination import Pagination
from .serializers import SignatureDetailSerializer, SignatureListSerializer
from .views import ApiView, actor, json_object


class ScheduleInputSerializer(serializers.Serializer):
    """What a client may send; the service checks the whole (cron or interval, zone, spec) and names each field."""

    name = serializers.CharField(max_length=200)
    spec = serializers.JSONField(help_text="Any spec POST /api/tasks/ takes: task, chain, swarm, graph, workflow.")
    cron = serializers.CharField(max_length=200, allow_blank=True, required=False,
                                 help_text="5 fields (minute hour day month weekday), or 6 with seconds last.")
    timezone = serializers.CharField(max_length=64, required=False, help_text="IANA zone of the cron (UTC).")
    interval = AsciiIntegerField(allow_null=True, required=False, help_text="Seconds between runs, instead of cron.")
    start_at = serializers.DateTimeField(allow_null=True, required=False)
    end_at = serializers.DateTimeField(allow_null=True, required=False)
    max_active = AsciiIntegerField(allow_null=True, required=False,
                                   help_text="Skip a tick while this many runs are still active (null: no limit).")
    catch_up = serializers.ChoiceField(choices=CatchUp.choices, required=False,
                                       help_text="Ticks missed while no scheduler ran: skip them, or run once.")

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - set(self.fields) - set(ScheduleSerializer.Meta.read_only_fields))
        if unknown:
            raise serializers.ValidationError({key: "unknown field" for key in unknown})
        return attrs


class ScheduleSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")
    active_runs = serializers.SerializerMethodField(help_text="Runs of this schedule not ended yet.")

    class Meta:
        model = Schedule
        fields = ["id", "name", "owner", "spec", "cron", "timezone", "interval", "start_at", "end_at", "max_active",
                  "catch_up", "paused", "next_run_at", "last_run_at", "skipped_ticks", "last_error", "active_runs",
                  "created_at", "updated_at"]
        read_only_fields = fields

    def get_active_runs(self, schedule: Schedule) -> int:
        return schedules.active_runs(schedule)


RESPONSES = {200: ScheduleSerializer, 404: schema.NOT_FOUND}


@extend_schema_view(
    list=extend_schema(summary="Schedules: your own (staff holding the task permissions: everyone's)"),
    retrieve=extend_schema(summary="A schedule", responses=RESPONSES),
)
class ScheduleViewSet(ApiView, viewsets.GenericViewSet):
    """Schedules and their actions: pause, resume, run now, and their runs."""

    serializer_class = ScheduleSerializer
    pagination_class = Pagination
    lookup_value_regex = "[0-9]+"

    def get_queryset(self) -> QuerySet[Schedule]:
        if getattr(self, "swagger_fake_view", False):
            return Schedule.objects.none()
        return schedules.visible_to(self.request.user)

    def get_object(self) -> Schedule:
        schedule = super().get_object()
        mine = schedule.owner_id == self.request.user.pk
        if self.request.method not in SAFE_METHODS and not (mine or controls_all_tasks(self.request.user)):
            raise PermissionDenied("you may view this schedule but not change it (needs tasks_app.change_signature)")
        return schedule

    def answer(self, schedule: Schedule, code: int = status.HTTP_200_OK) -> Response:
        return Response(ScheduleSerializer(schedules.visible_to(self.request.user).get(pk=schedule.pk)).data,
                        status=code)

    def fields(self, request: Request, *, partial: bool) -> dict[str, Any]:
        serializer = ScheduleInputSerializer(data=json_object(request.data), partial=partial)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ScheduleSerializer(page, many=True).data)

    @extend_schema(summary="Create a schedule", request=ScheduleInputSerializer,
                   responses={201: ScheduleSerializer, 400: schema.BAD_INPUT})
    def create(self, request: Request) -> Response:
        schedule = schedules.create(self.fields(request, partial=False), owner=request.user, actor=actor(request))
        return self.answer(schedule, status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        return self.answer(self.get_object())

    @extend_schema(summary="Edit a schedule (its next run is computed again)", request=ScheduleInputSerializer,
                   responses={**RESPONSES, 400: schema.BAD_INPUT})
    def partial_update(self, request: Request, pk: str) -> Response:
        schedule = self.get_object()
        return self.answer(schedules.update(schedule, self.fields(request, partial=True), actor=actor(request)))

    @extend_schema(summary="Delete a schedule (its runs stay)", responses={204: None, 404: schema.NOT_FOUND})
    def destroy(self, request: Request, pk: str) -> Response:
        schedules.delete(self.get_object(), actor=actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Pause: no tick fires until resume", request=None, responses=RESPONSES)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self.answer(schedules.pause(self.get_object(), actor=actor(request)))

    @extend_schema(summary="Resume: tick again from now (no catch-up of the paused time)", request=None,
                   responses=RESPONSES)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self.answer(schedules.resume(self.get_object(), actor=actor(request)))

    @extend_schema(summary="Run now: one run at once, linked to the schedule", request=None,
                   responses={201: SignatureDetailSerializer, 400: schema.BAD_INPUT, 404: schema.NOT_FOUND})
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str) -> Response:
        sig = schedules.run_now(self.get_object(), actor=actor(request))
        fresh = Signature.objects.select_related("owner").get(pk=sig.pk)
        return Response(SignatureDetailSerializer(fresh).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="The schedule's runs, newest first",
                   responses={200: OpenApiResponse(SignatureListSerializer(many=True)), 404: schema.NOT_FOUND})
    @action(detail=True, methods=["get"])
    def runs(self, request: Request, pk: str) -> Response:
        members = Signature.objects.filter(parent=OuterRef("pk")).order_by().values("parent").annotate(n=Count("pk"))
        rows = self.get_object().runs.select_related("owner").order_by("-created_at", "-id").annotate(
            members_count=Coalesce(Subquery(members.values("n"), output_field=IntegerField()), 0),
        )
        return self.get_paginated_response(SignatureListSerializer(self.paginate_queryset(rows), many=True).data)
