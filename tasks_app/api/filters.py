"""Filters of ``GET /api/tasks/``: top-level signatures (or one container's members), trash apart."""

from __future__ import annotations

import json
from datetime import UTC

from django import forms
from django.db import connections
from django.db.models import Q, QuerySet
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField

from ..models import Kind, Signature, Status
from .digits import AsciiIntegerFormField

MARKED = "marked_for_deletion"


class StatusFilter(filters.BaseInFilter, filters.ChoiceFilter):
    """One status or several, comma-separated (``?status=queued,running``)."""


MAX_ID = 2**63 - 1  # the largest primary key a database stores; a larger number finds nothing


class IdFilter(filters.NumberFilter):
    field_class = AsciiIntegerFormField

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, min_value=1, max_value=MAX_ID, **kwargs)


class UtcDateTimeField(IsoDateTimeField):
    """ISO 8601, taken to UTC: Python accepts offsets up to ±24 h, PostgreSQL only up to ±15:59."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None or value.tzinfo is None:
            return value
        try:
            return value.astimezone(UTC)
        except OverflowError:  # year 1 east of Greenwich, year 9999 west of it
            raise forms.ValidationError("This date and time is out of range.", code="invalid") from None


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class TaskFilter(filters.FilterSet):
    status = StatusFilter(
        choices=[*Status.choices, (MARKED, "Marked for deletion")],
        method="filter_status",
        help_text=f"Execution status, or several comma-separated; {MARKED} lists the trash.",
    )
    kind = filters.ChoiceFilter(choices=Kind.choices)
    task = filters.CharFilter(field_name="task_name", help_text="Registered task name, e.g. examples.echo.")
    category = filters.CharFilter()
    tag = filters.CharFilter(method="filter_tag", help_text="Signatures carrying this tag.")
    q = filters.CharFilter(method="filter_text", help_text="Text in the name or the task name.")
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lte")
    parent = IdFilter(
        method="filter_parent",
        help_text="List the members of this container (in order) instead of top-level signatures.",
    )
    ordering = filters.OrderingFilter(
        fields=(
            ("created_at", "created_at"),
            ("started_at", "started_at"),
            ("finished_at", "finished_at"),
            ("updated_at", "updated_at"),
            ("priority_rank", "priority"),
            ("status", "status"),
            ("name", "name"),
            ("progress", "progress"),
            ("position", "position"),
            ("id", "id"),
        )
    )

    class Meta:
        model = Signature
        fields: list[str] = []

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        """Top level unless ``parent`` is given; the trash only with ``status=marked_for_deletion``."""
        if self.form.cleaned_data.get("parent") is None:
            queryset = queryset.top_level()
        if MARKED not in (self.form.cleaned_data.get("status") or []):
            queryset = queryset.live()
        return super().filter_queryset(queryset)

    def filter_status(self, queryset: QuerySet, name: str, value: list[str]) -> QuerySet:
        statuses = [v for v in value if v != MARKED]
        if MARKED in value:
            queryset = queryset.filter(delete_after__isnull=False)
        return queryset.filter(status__in=statuses) if statuses else queryset

    def filter_tag(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if connections[queryset.db].features.supports_json_field_contains:
            return queryset.filter(tags__contains=[value])
        # SQLite has no JSON containment: match the quoted element in the stored JSON text.
        return queryset.filter(tags__icontains=json.dumps(value))

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(name__icontains=value) | Q(task_name__icontains=value))

    def filter_parent(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        return queryset.filter(parent_id=value).order_by("position")
