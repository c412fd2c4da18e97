"""The graph view and timeline of a task `/tasks/{id}/`: their JSON, the accessible table, the side panel."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from ..services import graph_view, timeline
from ..models import Signature
from .common import row_id, visible
from .task_detail import allowed_actions

# The controls of the side panel; cancelling and deleting stay on the node's own page, with their dialogs.
PANEL_ACTIONS = [("start", "Start"), ("pause", "Pause"), ("resume", "Resume"), ("interrupt", "Interrupt"),
                 ("retry", "Retry"), ("rerun", "Rerun"), ("restore", "Restore")]


def view_options(request: HttpRequest) -> graph_view.ViewOptions:
    """``?expand=<id>&page=k`` or ``?expand=<id>:<k>`` (repeatable), and ``?collapse=<id>`` (repeatable)."""
    page = row_id(request.GET.get("page")) or 1
    expand: dict[int, int] = {}
    for value in request.GET.getlist("expand")[: graph_view.MAX_EXPANDED]:
        cid, _, own_page = value.partition(":")
        if row_id(cid):
            expand[row_id(cid)] = row_id(own_page) or page
    collapse = frozenset(filter(None, (row_id(v) for v in request.GET.getlist("collapse"))))
    return graph_view.ViewOptions(expand=expand, collapse=collapse)


def get_signature(request: HttpRequest, pk: int) -> Signature:
    """The signature (404 for someone else's) without its stored spec: a workflow's holds every member's."""
    return get_object_or_404(visible(request).defer("spec"), pk=pk)


@login_required
@require_GET
def task_graph(request: HttpRequest, pk: int) -> JsonResponse:
    sig = get_signature(request, pk)
    return JsonResponse(graph_view.graph(sig, view_options(request)))


@login_required
@require_GET
def task_timeline(request: HttpRequest, pk: int) -> JsonResponse:
    sig = get_signature(request, pk)
    return JsonResponse(timeline.payload(sig, view_options(request)))


@login_required
@require_GET
def task_graph_table(request: HttpRequest, pk: int) -> HttpResponse:
    """The graph as a table, for screen readers and copying (refreshed live by the page)."""
    sig = get_signature(request, pk)
    rows = graph_view.table(graph_view.graph(sig, view_options(request)))
    return render(request, "tasks_app/_graph_table.html", {"sig": sig, "rows": rows})


@login_required
@require_GET
def task_graph_node(request: HttpRequest, pk: int, node: int) -> HttpResponse:
    """The side panel of a node of the graph: a signature of the same workflow."""
    sig = get_signature(request, pk)
    member = get_signature(request, node)
    if member.root_id_or_self != sig.root_id_or_self:
        raise Http404("not part of this workflow")
    counts = graph_view.member_counts(member)
    total = sum(counts.values())
    pages = -(-total // graph_view.PAGE_SIZE)
    context = {"sig": sig, "member": member, "allowed": allowed_actions(member), "panel_actions": PANEL_ACTIONS,
               "counts": counts, "total": total, "big": total > graph_view.COLLAPSE_OVER, "pages": pages,
               "page_numbers": range(1, pages + 1)}
    return render(request, "tasks_app/_graph_panel.html", context)
