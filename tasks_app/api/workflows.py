"""``/api/workflows/``: saved workflows (CONTRACT.md §8), named and versioned specs that any spec uses
as a node, ``{"workflow": NAME, "kwargs": {...}}``. Each view validates and calls ``services.workflows``.

A user's saved workflows are their own: a reference resolves among the submitting user's, so the
list, the detail and the delete show and touch only those (another user's name answers 404).
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from ..models import SavedWorkflow
from ..services import workflows
from . import schema
from .digits import AsciiIntegerField
from .pagination import Pagination
from .serializers import ErrorSerializer
from .views import ApiView, actor, json_object


class SaveWorkflowSerializer(serializers.Serializer):
    """What a client sends; the service checks the name and the whole spec, naming each field."""

    name = serializers.JSONField(help_text=f"{workflows.NAME_RULE}; saving a name again adds a version.")
    spec = serializers.JSONField(help_text="A task, chain, swarm or graph spec (it may use other saved workflows).")
    description = serializers.JSONField(required=False, default="", help_text="Free text, at most 2000 characters.")

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({key: "unknown field; use name, spec, description" for key in unknown})
        return attrs


class VersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = SavedWorkflow
        fields = ["version", "kind", "created_at", "created_by"]
        read_only_fields = fields


class SavedWorkflowSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")
    reference = serializers.SerializerMethodField(help_text="The node that uses this version in any spec.")

    class Meta:
        model = SavedWorkflow
        fields = ["id", "name", "version", "kind", "description", "spec", "owner", "created_at", "created_by",
                  "reference"]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "additionalProperties": True})
    def get_reference(self, saved: SavedWorkflow) -> dict:
        return {"workflow": saved.name, "version": saved.version, "kwargs": {}}


class SavedWorkflowListSerializer(SavedWorkflowSerializer):
    versions = serializers.IntegerField(help_text="How many versions the name has.")

    class Meta(SavedWorkflowSerializer.Meta):
        fields = [*SavedWorkflowSerializer.Meta.fields, "versions"]
        read_only_fields = fields


class SavedWorkflowDetailSerializer(SavedWorkflowSerializer):
    versions = serializers.SerializerMethodField(help_text="Every version of the name, newest first.")

    class Meta(SavedWorkflowSerializer.Meta):
        fields = [*SavedWorkflowSerializer.Meta.fields, "versions"]
        read_only_fields = fields

    @extend_schema_field(VersionSerializer(many=True))
    def get_versions(self, saved: SavedWorkflow) -> list[dict]:
        rows = SavedWorkflow.objects.filter(owner_id=saved.owner_id, name=saved.name).order_by("-version")
        return VersionSerializer(rows, many=True).data


class VersionParams(serializers.Serializer):
    version = AsciiIntegerField(min_value=1, required=False, help_text="A version (default: the latest).")


NAME_NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No saved workflow of yours by that name.")


@extend_schema_view(
    list=extend_schema(summary="Your saved workflows, each name at its latest version"),
    retrieve=extend_schema(summary="A saved workflow: its latest version, or ?version=N",
                           parameters=[VersionParams],
                           responses={200: SavedWorkflowDetailSerializer, 404: NAME_NOT_FOUND}),
)
class SavedWorkflowViewSet(ApiView, viewsets.GenericViewSet):
    """Saved workflows: save a version, list them, read one, delete a name."""

    serializer_class = SavedWorkflowDetailSerializer
    pagination_class = Pagination
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"

    def get_queryset(self) -> QuerySet[SavedWorkflow]:
        if getattr(self, "swagger_fake_view", False):
            return SavedWorkflow.objects.none()
        return workflows.latest_versions(self.request.user).select_related("owner")

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(SavedWorkflowListSerializer(page, many=True).data)

    @extend_schema(
        summary="Save a spec under a name: version 1, or the next version of the name",
        request=SaveWorkflowSerializer,
        responses={201: SavedWorkflowDetailSerializer,
                   200: OpenApiResponse(SavedWorkflowDetailSerializer,
                                        description="The same spec as the latest version: nothing new was saved."),
                   400: schema.BAD_INPUT, 413: schema.TOO_LARGE},
    )
    def create(self, request: Request) -> Response:
        serializer = SaveWorkflowSerializer(data=json_object(request.data))
        serializer.is_valid(raise_exception=True)
        saved, new = workflows.save(owner=request.user, actor=actor(request), **serializer.validated_data)
        code = status.HTTP_201_CREATED if new else status.HTTP_200_OK
        return Response(SavedWorkflowDetailSerializer(saved).data, status=code)

    def retrieve(self, request: Request, name: str) -> Response:
        params = VersionParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        saved = workflows.find(request.user, name, params.validated_data.get("version"))
        if saved is None:
            raise NotFound(f"you have no saved workflow {name!r}" + (
                f" with a version {params.validated_data['version']}" if "version" in params.validated_data else ""))
        return Response(SavedWorkflowDetailSerializer(saved).data)

    @extend_schema(summary="Delete every version of a name (runs built from it keep their record)",
                   responses={204: None, 404: NAME_NOT_FOUND})
    def destroy(self, request: Request, name: str) -> Response:
        if not workflows.delete(owner=request.user, name=name):
            raise NotFound(f"you have no saved workflow {name!r}")
        return Response(status=status.HTTP_204_NO_CONTENT)
