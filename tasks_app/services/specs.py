"""Specs (CONTRACT.md §5): validated whole before anything is written, then built as rows.

``validate`` returns a normalised copy or raises ``SpecError`` naming every bad field by its path
(``tasks[3].kwargs.value``); ``build`` writes the signature tree, members in bulk.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from ..models import CallbackOn, Kind, Priority, Signature
from ..registry import get_task
from . import bulk
from .errors import PayloadTooLarge, SpecError

COMMON = {"kind", "name", "priority", "category", "tags", "kwargs", "on_success", "on_error", "on_finish",
          "retries", "retry_backoff", "timeout"}
CALLBACKS = {"on_success": CallbackOn.SUCCESS, "on_error": CallbackOn.ERROR, "on_finish": CallbackOn.FINISH}
# A saved workflow used as a node: ``{"workflow": NAME, "kwargs": {...}}``, optionally pinned to a version.
REFERENCE = (COMMON - {"kind"}) | {"workflow", "version"}
FIELDS = {
    Kind.TASK: COMMON | {"task"},
    Kind.CHAIN: COMMON | {"steps"},
    Kind.SWARM: COMMON | {"tasks", "max_concurrency", "stop_after_n_failures", "max_tasks", "closed",
                          "task_on_success", "task_on_error", "task_on_finish"},
    Kind.GRAPH: COMMON | {"nodes", "edges"},
}
MAX_DEPTH = 20
MAX_SECONDS = 366 * 86400  # timeouts and retry backoffs; longer ones overflow the timers that apply them
MAX_JSON_DEPTH = 100  # lists and objects inside each other; deeper input overflows Python's JSON encoder


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value, found without recursing (hostile input nests deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_size(value: Any, limit_key: str, what: str) -> int:
    """The value's size as JSON, in bytes; PayloadTooLarge past the limit."""
    size = len(json.dumps(value, default=str))
    limit = settings.ORCHESTRATOR[limit_key]
    if size > limit:
        raise PayloadTooLarge(f"{what} is {size} bytes; the limit is {limit}")
    return size


def expanded_too_large(size: int) -> PayloadTooLarge:
    limit = settings.ORCHESTRATOR["MAX_EXPANDED_BYTES"]
    return PayloadTooLarge(
        f"expanded, the workflow stores at least {size} bytes of kwargs (shared kwargs are copied into every "
        f"member); the limit is {limit} (ORCHESTRATOR_MAX_EXPANDED_BYTES)"
    )


class _Validator:
    """Validates one spec tree; ``expanded`` counts the kwargs bytes its rows will store, without building them.

    ``owner``: whose saved workflows the references name (without one they are checked, not resolved:
    such a spec cannot be built). ``saving``: the name of the saved workflow being validated (it may not
    contain itself). ``parameters_later``: arguments a task requires may be missing (a saved workflow
    leaves them to its references)."""

    def __init__(self, expanded: int = 0, *, owner=None, saving: str | None = None,
                 parameters_later: bool = False) -> None:
        self.errors: dict[str, str] = {}
        self.expanded = expanded
        self._item_sizes: dict[tuple[str, int], int] = {}
        self.owner = owner
        self.expanding: list[str] = [saving] if saving else []
        self.parameters_later = parameters_later
        self._saved: dict[tuple[str, int | None], Any] = {}
        self.resolved_bytes = 0  # of the saved specs references brought in

    def error(self, path: str, message: str) -> None:
        self.errors.setdefault(path or "spec", message)

    def spec(self, raw: Any, path: str, depth: int = 0, inherited: dict | None = None) -> dict:
        if not isinstance(raw, dict):
            self.error(path, "must be a JSON object")
            return {}
        if depth > MAX_DEPTH:
            self.error(path, f"nesting deeper than {MAX_DEPTH} levels")
            return {}
        if "workflow" in raw:
            return self.reference(raw, path, depth, inherited)
        kind = raw.get("kind", Kind.TASK)
        if not isinstance(kind, str) or kind not in FIELDS:  # keyed by every Kind (Kind.values: a new list per call)
            self.error(_join(path, "kind"), f"unknown kind {kind!r}; use one of {', '.join(Kind.values)}")
            return {}
        for key in raw:
            if key not in FIELDS[kind]:
                self.error(_join(path, key), f"unknown field for a {kind}")
        own_kwargs = self.obj(raw.get("kwargs", {}), _join(path, "kwargs"))
        own_size = check_size(own_kwargs, "MAX_KWARGS_BYTES", _join(path, "kwargs"))
        kwargs = {**(inherited or {}), **own_kwargs}
        out = {
            "kind": kind,
            "name": self.text(raw.get("name", ""), _join(path, "name"), 200),
            "priority": self.choice(raw.get("priority"), _join(path, "priority")),
            "category": self.text(raw.get("category", ""), _join(path, "category"), 100),
            "tags": self.tags(raw.get("tags", []), _join(path, "tags")),
            "kwargs": kwargs,
            "on_success": self.specs(raw.get("on_success", []), _join(path, "on_success"), depth),
            "on_error": self.specs(raw.get("on_error", []), _join(path, "on_error"), depth),
            "on_finish": self.specs(raw.get("on_finish", []), _join(path, "on_finish"), depth),
        }
        getattr(self, f"{kind}_fields")(raw, path, depth, out)
        self.count_stored(out["kwargs"], own_kwargs, own_size, copies=depth + 2)
        return out

    def count_stored(self, kwargs: dict, own: dict, own_size: int, *, copies: int) -> None:
        """Add the kwargs a row stores: in its kwargs column, its spec and the spec of each ancestor.

        Inherited values are sized once each (they are the same objects in every member), so a swarm
        of 38,000 members is measured in milliseconds, and refused before anything is built."""
        size = own_size + sum(self.item_size(key, value) for key, value in kwargs.items() if key not in own)
        self.expanded += size * copies
        if self.expanded > settings.ORCHESTRATOR["MAX_EXPANDED_BYTES"]:
            raise expanded_too_large(self.expanded)

    def item_size(self, key: str, value: Any) -> int:
        """Bytes of ``"key": value,`` in a JSON object."""
        memo = (key, id(value))  # the raw spec keeps the value alive, so its id is not reused meanwhile
        if memo not in self._item_sizes:
            self._item_sizes[memo] = len(json.dumps(key)) + len(json.dumps(value, default=str)) + 2
        return self._item_sizes[memo]

    def task_fields(self, raw: dict, path: str, depth: int, out: dict) -> None:
        name = raw.get("task")
        taskdef = get_task(name) if isinstance(name, str) else None
        if taskdef is None:
            self.error(_join(path, "task"), "is required" if name is None else f"unknown task {name!r}")
            return
        # Shared kwargs of enclosing containers reach the members that accept them.
        own = raw.get("kwargs") if isinstance(raw.get("kwargs"), dict) else {}
        out["kwargs"] = {k: v for k, v in out["kwargs"].items() if k in own or taskdef.accepts(k)}
        for arg, problem in taskdef.check_kwargs(out["kwargs"]).items():
            if not (self.parameters_later and arg not in out["kwargs"]):  # missing, and given by the reference
                self.error(_join(path, f"kwargs.{arg}"), problem)
        out["task"] = name
        out["priority"] = out["priority"] or taskdef.priority
        out["category"] = out["category"] or taskdef.category
        out["retries"] = self.integer(raw.get("retries", taskdef.retries), _join(path, "retries"), 0, 100)
        backoff = raw.get("retry_backoff", taskdef.retry_backoff)
        out["retry_backoff"] = self.number(backoff, _join(path, "retry_backoff"), 0)
        timeout = raw.get("timeout", taskdef.timeout)
        out["timeout"] = None if timeout is None else self.number(timeout, _join(path, "timeout"), 0.001)

    def chain_fields(self, raw: dict, path: str, depth: int, out: dict) -> None:
        steps = raw.get("steps")
        if not isinstance(steps, list) or len(steps) < 2:
            self.error(_join(path, "steps"), "a chain needs a list of at least two steps")
            return
        out["steps"] = [self.spec(s, f"{_join(path, 'steps')}[{i}]", depth + 1, out["kwargs"])
                        for i, s in enumerate(steps)]

    def swarm_fields(self, raw: dict, path: str, depth: int, out: dict) -> None:
        tasks = raw.get("tasks", [])
        if not isinstance(tasks, list):
            self.error(_join(path, "tasks"), "must be a list of specs")
            tasks = []
        out["tasks"] = [self.spec(s, f"{_join(path, 'tasks')}[{i}]", depth + 1, out["kwargs"])
                        for i, s in enumerate(tasks)]
        concurrency = raw.get("max_concurrency", 10)
        out["max_concurrency"] = self.integer(concurrency, _join(path, "max_concurrency"), 1, 100_000)
        out["stop_after_n_failures"] = self.optional_int(raw, "stop_after_n_failures", path)
        out["max_tasks"] = self.optional_int(raw, "max_tasks", path)
        closed = raw.get("closed", True)
        if not isinstance(closed, bool):
            self.error(_join(path, "closed"), "must be true or false")
        out["closed"] = closed is not False
        if out["max_tasks"] is not None and len(out["tasks"]) > out["max_tasks"]:
            self.error(_join(path, "tasks"), f"{len(out['tasks'])} tasks exceed max_tasks={out['max_tasks']}")
        before = self.expanded
        out["task_on_success"] = self.specs(raw.get("task_on_success", []), _join(path, "task_on_success"), depth)
        on_success, before = self.expanded - before, self.expanded
        out["task_on_error"] = self.specs(raw.get("task_on_error", []), _join(path, "task_on_error"), depth)
        on_error, before = self.expanded - before, self.expanded
        out["task_on_finish"] = self.specs(raw.get("task_on_finish", []), _join(path, "task_on_finish"), depth)
        # Each member that ends builds one set of per-member callbacks from these templates: its
        # success or its error ones, and the finish ones.
        self.count_stored({}, {}, max(on_success, on_error) + self.expanded - before, copies=len(out["tasks"]))

    def graph_fields(self, raw: dict, path: str, depth: int, out: dict) -> None:
        from .graphs import validate_graph

        validate_graph(self, raw, path, depth, out)

    # Saved workflows ---------------------------------------------------------------------------

    def reference(self, raw: dict, path: str, depth: int, inherited: dict | None) -> dict:
        """A saved workflow as a node: its spec, resolved now, validated where the reference stands
        with the reference's kwargs and fields merged in (``workflows.merged``)."""
        from . import workflows

        for key in raw:
            if key not in REFERENCE:
                self.error(_join(path, key), "unknown field for a workflow reference")
        saved = self.saved_workflow(raw, path)
        if saved is None:
            return {**UNRESOLVED, "kwargs": {}}
        self.expanding.append(saved.name)
        try:
            spec = workflows.merged(saved.spec, raw)
            if isinstance(spec, dict):
                spec.setdefault("name", saved.name)  # its members and pages show what it is
            out = self.spec(spec, path, depth, inherited)
        finally:
            self.expanding.pop()
        if out:
            out["saved_workflow"] = {"name": saved.name, "version": saved.version}
        return out

    def saved_workflow(self, raw: dict, path: str):
        """The version the reference names, or None (with its error, unless there is no owner to ask)."""
        from . import workflows

        name, version, where = raw["workflow"], raw.get("version"), _join(path, "workflow")
        if not isinstance(name, str) or not workflows.NAME.match(name):
            self.error(where, f"must be the name of a saved workflow ({workflows.NAME_RULE})")
            return None
        if version is not None:
            version = self.integer(version, _join(path, "version"), 1, 10_000_000)
        if name in self.expanding:
            self.error(where, f"a workflow cannot contain itself: {' → '.join([*self.expanding, name])}")
            return None
        if self.owner is None:
            return None
        if (name, version) not in self._saved:  # a swarm of 1,000 references reads it once
            self._saved[name, version] = workflows.find(self.owner, name, version)
        saved = self._saved[name, version]
        if saved is None:
            self.error(where, f"no saved workflow named {name!r}" + (f" has a version {version}" if version else ""))
            return None
        self.count_resolved(saved)
        return saved

    def count_resolved(self, saved) -> None:
        """Written out, the spec would be refused past MAX_SPEC_BYTES: references (which can nest and
        repeat) may not bring in more than that either, or a few bytes would expand without end."""
        if not hasattr(saved, "_size"):
            saved._size = len(json.dumps(saved.spec, default=str))
        self.resolved_bytes += saved._size
        limit = settings.ORCHESTRATOR["MAX_SPEC_BYTES"]
        if self.resolved_bytes > limit:
            raise PayloadTooLarge(f"the saved workflows it uses add up to more than {limit} bytes of spec "
                                  "(ORCHESTRATOR_MAX_SPEC_BYTES)")

    # Scalars ----------------------------------------------------------------------------------

    def specs(self, raw: Any, path: str, depth: int) -> list[dict]:
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            self.error(path, "must be a list of specs")
            return []
        return [self.spec(s, f"{path}[{i}]", depth + 1) for i, s in enumerate(raw)]

    def obj(self, raw: Any, path: str) -> dict:
        if not isinstance(raw, dict):
            self.error(path, "must be a JSON object")
            return {}
        return raw

    def text(self, raw: Any, path: str, max_length: int) -> str:
        if not isinstance(raw, str):
            self.error(path, "must be a string")
            return ""
        if len(raw) > max_length:
            self.error(path, f"longer than {max_length} characters")
        return raw[:max_length]

    def choice(self, raw: Any, path: str) -> str | None:
        if raw is None:
            return None
        if raw not in Priority.values:
            self.error(path, f"must be one of {', '.join(Priority.values)}")
            return None
        return raw

    def tags(self, raw: Any, path: str) -> list[str]:
        if not isinstance(raw, list) or not all(isinstance(t, str) and len(t) <= 50 for t in raw):
            self.error(path, "must be a list of strings of at most 50 characters")
            return []
        return raw

    def integer(self, raw: Any, path: str, minimum: int, maximum: int) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool) or not minimum <= raw <= maximum:
            self.error(path, f"must be an integer from {minimum} to {maximum}")
            return minimum
        return raw

    def optional_int(self, raw: dict, key: str, path: str) -> int | None:
        value = raw.get(key)
        return None if value is None else self.integer(value, _join(path, key), 1, 10_000_000)

    def number(self, raw: Any, path: str, minimum: float) -> float:
        if not isinstance(raw, (int, float)) or isinstance(raw, bool) or not minimum <= raw <= MAX_SECONDS:
            self.error(path, f"must be a number from {minimum} to {MAX_SECONDS}")
            return minimum
        return float(raw)


# What a reference that could not be resolved validates to (no owner to ask): build refuses it.
UNRESOLVED = {"kind": Kind.TASK, "name": "", "priority": None, "category": "", "tags": [], "on_success": [],
              "on_error": [], "on_finish": [], "_unresolved": True}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate(raw: Any, path: str = "", inherited: dict | None = None, *, owner=None, saving: str | None = None,
             parameters_later: bool = False) -> dict:
    """The normalised spec, or SpecError naming every bad field; ``owner`` resolves saved workflows."""
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise SpecError({path or "spec": f"lists and objects nest deeper than {MAX_JSON_DEPTH} levels"})
    check_size(raw, "MAX_SPEC_BYTES", "the spec")
    validator = _Validator(owner=owner, saving=saving, parameters_later=parameters_later)
    spec = validator.spec(raw, path, inherited=inherited)
    if validator.errors:
        raise SpecError(validator.errors)
    return spec


def validate_many(raws: Any, path: str = "tasks", inherited: dict | None = None,
                  expanded: int = 0, *, owner=None) -> tuple[list[dict], dict[int, dict]]:
    """Each spec of a list on its own: (valid specs with their index, errors by index).

    ``expanded``: kwargs bytes the caller's own rows add to the list's (per-member callbacks of a swarm);
    PayloadTooLarge when the list stores more than MAX_EXPANDED_BYTES in all."""
    if not isinstance(raws, list):
        raise SpecError({path: "must be a list of specs"})
    if json_depth(raws) > MAX_JSON_DEPTH:
        raise SpecError({path: f"lists and objects nest deeper than {MAX_JSON_DEPTH} levels"})
    check_size(raws, "MAX_SPEC_BYTES", path)
    if expanded > settings.ORCHESTRATOR["MAX_EXPANDED_BYTES"]:
        raise expanded_too_large(expanded)
    valid, rejected, resolved = [], {}, 0
    for i, raw in enumerate(raws):
        validator = _Validator(expanded, owner=owner)
        validator.resolved_bytes = resolved  # the list is one spec, as far as the saved workflows it uses go
        spec = validator.spec(raw, f"{path}[{i}]", inherited=inherited)
        expanded, resolved = validator.expanded, validator.resolved_bytes
        if validator.errors:
            rejected[i] = validator.errors
        else:
            spec["_index"] = i
            valid.append(spec)
    return valid, rejected


# Building -------------------------------------------------------------------------------------


def _row(spec: dict, owner, **links) -> Signature:
    if spec.get("_unresolved"):
        raise ValueError("a spec with workflow references validated without an owner cannot be built")
    config = {}
    if spec["kind"] == Kind.SWARM:
        config = {k: spec[k] for k in ("max_concurrency", "stop_after_n_failures", "max_tasks", "closed",
                                       "task_on_success", "task_on_error", "task_on_finish")}
    elif spec["kind"] == Kind.GRAPH:
        config = {"edges": spec["edges"]}
    return Signature(
        owner=owner,
        kind=spec["kind"],
        name=spec["name"],
        task_name=spec.get("task", ""),
        kwargs=spec["kwargs"],
        spec=_public(spec),
        config=config,
        priority=spec["priority"] or Priority.MEDIUM,
        retries=spec.get("retries", 0),
        retry_backoff=spec.get("retry_backoff", 1.0),
        timeout=spec.get("timeout"),
        category=spec["category"],
        tags=spec["tags"],
        **links,
    )


def _public(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if not k.startswith("_")}


def children_of(spec: dict) -> list[tuple[str, dict]]:
    """(node key, spec) of a container's members, in order."""
    if spec["kind"] == Kind.CHAIN:
        return [("", s) for s in spec["steps"]]
    if spec["kind"] == Kind.SWARM:
        return [("", s) for s in spec["tasks"]]
    if spec["kind"] == Kind.GRAPH:
        return list(spec["nodes"].items())
    return []


def build(spec: dict, *, owner, idempotency_key: str | None = None) -> Signature:
    """Write a validated spec's whole tree; returns the top-level signature."""
    top = _row(spec, owner, idempotency_key=idempotency_key)
    top.save()
    _build_below(top, spec, top.pk)
    return top


def _build_below(sig: Signature, spec: dict, root_id: int) -> None:
    add_members(sig, [(key, s) for key, s in children_of(spec)], root_id=root_id, start=0)
    callbacks = [(on, s) for key, on in CALLBACKS.items() for s in spec.get(key, [])]  # older specs lack on_finish
    if callbacks:
        rows = [_row(s, sig.owner, callback_of=sig, callback_on=on, root_id=root_id) for on, s in callbacks]
        Signature.objects.bulk_create(rows)
        for row, (_, s) in zip(rows, callbacks, strict=True):
            _build_below(row, s, root_id)


def has_callbacks(spec: dict) -> bool:
    return any(spec.get(key) for key in CALLBACKS)


def add_members(parent: Signature, items: list[tuple[str, dict]], *, root_id: int, start: int,
                batch_size: int = 1000) -> list[Signature]:
    """Create members of a container in bulk, then whatever sits below each of them."""
    rows = [
        _row(s, parent.owner, parent=parent, position=start + i, node_key=key, root_id=root_id)
        for i, (key, s) in enumerate(items)
    ]
    bulk.insert(rows, batch_size=batch_size)
    for row, (_, s) in zip(rows, items, strict=True):
        if children_of(s) or has_callbacks(s):
            _build_below(row, s, root_id)
    return rows


def build_callback(spec: dict, *, of: Signature, on: str, trigger: Signature | None = None) -> Signature:
    row = _row(spec, of.owner, callback_of=of, callback_on=on, trigger=trigger, root_id=of.root_id_or_self)
    row.save()
    _build_below(row, spec, row.root_id)
    return row
