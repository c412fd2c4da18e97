"""Graph definitions: graph specs saved from the visual editor, opened again, edited and run."""

from __future__ import annotations

from typing import Any

from ..models import GraphDefinition, Kind, Signature
from . import execution, specs
from .errors import SpecError


def check(raw: Any, owner=None) -> dict:
    """The normalised spec of a graph, or ``SpecError`` naming every bad field by its path; ``owner``
    resolves the saved workflows its nodes use."""
    if not isinstance(raw, dict) or raw.get("kind") != Kind.GRAPH:
        raise SpecError({"kind": "the editor saves graphs: the spec needs \"kind\": \"graph\""})
    return specs.validate(raw, owner=owner)


def save(*, owner, name: str, spec: Any, definition: GraphDefinition | None = None) -> GraphDefinition:
    """Create or update a definition; the spec is validated first and stored as written."""
    check(spec, owner)
    name = name.strip()
    if not name or len(name) > 200:
        raise SpecError({"name": "give the graph a name of 1 to 200 characters"})
    if definition is None:
        return GraphDefinition.objects.create(owner=owner, name=name, spec=spec)
    definition.name, definition.spec = name, spec
    definition.save(update_fields=["name", "spec", "updated_at"])
    return definition


def run(definition: GraphDefinition, *, owner, actor: str) -> Signature:
    """Submit the definition's graph as a new workflow, titled by the definition unless it names itself."""
    spec = {**definition.spec}
    spec.setdefault("name", definition.name)
    return execution.submit(spec, owner=owner, actor=actor)


def spec_of_task(sig: Signature) -> dict:
    """The stored spec of a signature, to open in the editor (a graph, or one task as a single node)."""
    spec = dict(sig.spec or {})
    if spec.get("kind") == Kind.GRAPH:
        return _trimmed(spec)
    if spec.get("kind", Kind.TASK) == Kind.TASK and spec.get("task"):
        return {"kind": Kind.GRAPH, "name": spec.get("name", ""), "nodes": {"start": _trimmed(spec)}, "edges": []}
    return {"kind": Kind.GRAPH, "name": sig.title, "nodes": {"workflow": _trimmed(spec)}, "edges": []}


def _trimmed(spec: dict) -> dict:
    """A stored (normalised) spec without the defaults the validator filled in."""
    defaults = {"priority": None, "category": "", "tags": [], "on_success": [], "on_error": [], "on_finish": [],
                "task_on_finish": [], "retries": 0, "retry_backoff": 1.0, "timeout": None, "name": "", "kwargs": {}}
    out = {k: v for k, v in spec.items() if not (k in defaults and v == defaults[k]) and k != "saved_workflow"}
    if out.get("kind") == Kind.TASK:
        out.pop("kind")
    for key in ("on_success", "on_error", "on_finish", "steps", "tasks", "task_on_success", "task_on_error",
                "task_on_finish"):
        if isinstance(out.get(key), list):
            out[key] = [_trimmed(s) for s in out[key]]
    if isinstance(out.get("nodes"), dict):
        out["nodes"] = {k: _trimmed(s) for k, s in out["nodes"].items()}
    return out
