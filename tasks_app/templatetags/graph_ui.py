"""Template helpers of the graph view: the statuses of its legend."""

from __future__ import annotations

from django import template

from ..models import Status

register = template.Library()


@register.simple_tag
def graph_statuses() -> list[str]:
    """Every execution status, in the order the legend lists them."""
    return list(Status.values)
