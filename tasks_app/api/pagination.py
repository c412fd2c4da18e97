"""Pages of signatures, and an id cursor for the append-only streams (logs, events)."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from .digits import MESSAGE, AsciiIntegerField, is_ascii_int
from .errors import InvalidInput


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000

    def paginate_queryset(self, queryset, request, view=None):
        for param in (self.page_query_param, self.page_size_query_param):
            value = request.query_params.get(param)
            if value and value != "last" and not is_ascii_int(value):
                raise InvalidInput({param: MESSAGE})
        return super().paginate_queryset(queryset, request, view)


class CursorParams(serializers.Serializer):
    after = AsciiIntegerField(min_value=0, default=0, help_text="Only rows with a larger id (the last id seen).")
    limit = AsciiIntegerField(min_value=1, max_value=10_000, default=1000, help_text="At most this many rows.")


def cursor_page(request: Request, queryset: QuerySet, serializer_class: type[serializers.Serializer]) -> Response:
    """Rows in id order after ``?after``, at most ``?limit``; a ``Link: rel="next"`` header when more wait.

    Ids only grow, so following a task's logs or events with ``after`` never skips a row.
    """
    params = CursorParams(data=request.query_params)
    params.is_valid(raise_exception=True)
    after, limit = params.validated_data["after"], params.validated_data["limit"]
    rows = list(queryset.filter(pk__gt=after).order_by("pk")[: limit + 1])
    response = Response(serializer_class(rows[:limit], many=True).data)
    if len(rows) > limit:
        url = replace_query_param(request.build_absolute_uri(), "after", rows[limit - 1].pk)
        response["Link"] = f'<{url}>; rel="next"'
    return response
