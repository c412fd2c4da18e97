"""Graph edge conditions: plain data evaluated here, never ``eval`` and never user code.

A condition is ``{"on": "success"|"failure"|"always"}``, a predicate on the source node's result
``{"path", "op", "value"}``, a combination ``{"all": [...]}`` / ``{"any": [...]}`` / ``{"not": ...}``,
or a named template ``{"template": NAME, "params": {...}}``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists", "truthy", "matches")
MAX_PATTERN = 200
MAX_SUBJECT = 10_000
MAX_PARTS = 100  # predicates, combinations and templates in one edge's condition
_MISSING = object()
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the user's error, answered with a 400, not a log line

TEMPLATES: dict[str, dict] = {
    "on_success": {"description": "The source node completed.", "params": {}},
    "on_failure": {"description": "The source node failed.", "params": {}},
    "always": {"description": "Whatever the source node's outcome.", "params": {}},
    "threshold": {
        "description": "A number in the result is within [min, max] (either bound optional).",
        "params": {"path": {"type": "string", "required": True}, "min": {"type": "number"}, "max": {"type": "number"}},
    },
    "equals": {
        "description": "A value in the result equals the given value.",
        "params": {"path": {"type": "string", "required": True}, "value": {"type": "any", "required": True}},
    },
    "label_is": {
        "description": "The result's 'label' equals the value (as returned by examples.classify).",
        "params": {"value": {"type": "string", "required": True}},
    },
    "on_failure_retry_path": {
        "description": "The source failed: route to an alternative node (an error path that retries elsewhere).",
        "params": {},
    },
    "approved": {
        "description": "An approval node's decision was approve (value true) or reject (value false).",
        "params": {"value": {"type": "boolean"}},
    },
}


def expand(template: str, params: dict) -> dict:
    """The plain condition a template stands for."""
    if template == "on_success":
        return {"on": "success"}
    if template in ("on_failure", "on_failure_retry_path"):
        return {"on": "failure"}
    if template == "always":
        return {"on": "always"}
    if template == "threshold":
        parts = [{"path": params["path"], "op": "gte", "value": params["min"]}] if params.get("min") is not None else []
        if params.get("max") is not None:
            parts.append({"path": params["path"], "op": "lte", "value": params["max"]})
        return {"all": parts or [{"path": params["path"], "op": "exists"}]}
    if template == "equals":
        return {"path": params["path"], "op": "eq", "value": params["value"]}
    if template == "label_is":
        return {"path": "label", "op": "eq", "value": params["value"]}
    if template == "approved":
        return {"path": "approved", "op": "eq", "value": params.get("value", True)}
    raise KeyError(template)


def validate(cond: Any, path: str, errors: dict[str, str], depth: int = 0) -> None:
    """Add an error naming ``path`` for anything malformed in the condition."""
    if depth == 0 and count_parts(cond) > MAX_PARTS:
        errors[path] = f"a condition has at most {MAX_PARTS} parts"
    elif depth > 20:
        errors[path] = "condition nested too deeply"
    elif not isinstance(cond, dict) or len(cond) == 0:
        errors[path] = "a condition must be a non-empty JSON object"
    elif "on" in cond:
        if set(cond) != {"on"} or cond["on"] not in ("success", "failure", "always"):
            errors[path] = 'use {"on": "success" | "failure" | "always"}'
    elif "all" in cond or "any" in cond:
        key = "all" if "all" in cond else "any"
        if set(cond) != {key} or not isinstance(cond[key], list) or not cond[key]:
            errors[path] = f'"{key}" takes a non-empty list of conditions'
        else:
            for i, part in enumerate(cond[key]):
                validate(part, f"{path}.{key}[{i}]", errors, depth + 1)
    elif "not" in cond:
        if set(cond) != {"not"}:
            errors[path] = '"not" takes one condition and nothing beside it'
        else:
            validate(cond["not"], f"{path}.not", errors, depth + 1)
    elif "template" in cond:
        _validate_template(cond, path, errors)
    elif "op" in cond:
        _validate_predicate(cond, path, errors)
    else:
        errors[path] = "unknown condition: use on, path/op/value, all, any, not or template"


def _validate_template(cond: dict, path: str, errors: dict[str, str]) -> None:
    name, params = cond.get("template"), cond.get("params", {})
    if set(cond) - {"template", "params"}:
        errors[path] = "a template condition takes only template and params"
    elif name not in TEMPLATES:
        errors[f"{path}.template"] = f"unknown template {name!r}; known: {', '.join(TEMPLATES)}"
    elif not isinstance(params, dict):
        errors[f"{path}.params"] = "must be a JSON object"
    else:
        schema = TEMPLATES[name]["params"]
        for key in params:
            if key not in schema:
                errors[f"{path}.params.{key}"] = f"unknown parameter of template {name}"
        for key, spec in schema.items():
            if spec.get("required") and key not in params:
                errors[f"{path}.params.{key}"] = "this parameter is required"
            elif key in params and spec["type"] == "number" and params[key] is not None and not _is_number(params[key]):
                errors[f"{path}.params.{key}"] = "must be a number"
            elif key in params and spec["type"] == "string" and not isinstance(params[key], str):
                errors[f"{path}.params.{key}"] = "must be a string"


def _validate_predicate(cond: dict, path: str, errors: dict[str, str]) -> None:
    op = cond.get("op")
    if set(cond) - {"path", "op", "value"}:
        errors[path] = "a predicate takes only path, op and value"
    elif op not in OPS:
        errors[f"{path}.op"] = f"unknown operator {op!r}; use one of {', '.join(OPS)}"
    elif "path" in cond and not isinstance(cond["path"], str):
        errors[f"{path}.path"] = "must be a dotted path string"
    elif op not in ("exists", "truthy") and "value" not in cond:
        errors[f"{path}.value"] = f"operator {op} needs a value"
    elif op in ("gt", "gte", "lt", "lte") and not _is_number(cond["value"]):
        errors[f"{path}.value"] = f"operator {op} needs a number"
    elif op == "in" and not isinstance(cond["value"], list):
        errors[f"{path}.value"] = "operator in needs a list"
    elif op == "matches":
        if not isinstance(cond["value"], str) or len(cond["value"]) > MAX_PATTERN:
            errors[f"{path}.value"] = f"operator matches needs a regular expression of at most {MAX_PATTERN} characters"
        else:
            try:
                compile_pattern(cond["value"])
            except re2.error as exc:
                errors[f"{path}.value"] = f"regular expression refused by RE2 (linear-time syntax): {_reason(exc)}"


def count_parts(cond: Any) -> int:
    """How many conditions a condition holds, itself included (iterative: the input may nest deeply)."""
    count, stack = 0, [cond]
    while stack and count <= MAX_PARTS:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(part for key in ("all", "any") if isinstance(item.get(key), list) for part in item[key])
            if "not" in item:
                stack.append(item["not"])
    return count


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """RE2 matches in time linear in the subject (no backtracking); it refuses backreferences and lookaround."""
    return re2.compile(pattern, _RE2_OPTIONS)


def _reason(exc: re2.error) -> str:
    message = exc.args[0] if exc.args else exc
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve_path(data: Any, path: str | None) -> Any:
    """The value at a dotted path (``a.b.0``) in JSON data, or a marker when missing."""
    if not path:
        return data
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def evaluate(cond: dict, *, outcome: str, result: Any) -> bool:
    """Whether an edge with this condition is taken, given the source's outcome and result."""
    if "on" in cond:
        return cond["on"] == "always" or cond["on"] == outcome
    if "all" in cond:
        return all(evaluate(c, outcome=outcome, result=result) for c in cond["all"])
    if "any" in cond:
        return any(evaluate(c, outcome=outcome, result=result) for c in cond["any"])
    if "not" in cond:
        return not evaluate(cond["not"], outcome=outcome, result=result)
    if "template" in cond:
        return evaluate(expand(cond["template"], cond.get("params", {})), outcome=outcome, result=result)
    return outcome == "success" and _predicate(cond, result)


def _predicate(cond: dict, result: Any) -> bool:
    op, expected = cond["op"], cond.get("value")
    value = resolve_path(result, cond.get("path"))
    if op == "exists":
        return value is not _MISSING
    if value is _MISSING:
        return False
    try:
        if op == "eq":
            return value == expected
        if op == "ne":
            return value != expected
        if op in ("gt", "gte", "lt", "lte"):
            if not _is_number(value):
                return False
            return {"gt": value > expected, "gte": value >= expected,
                    "lt": value < expected, "lte": value <= expected}[op]
        if op == "in":
            return value in expected
        if op == "contains":
            return isinstance(value, (str, list, dict)) and expected in value
        if op == "truthy":
            return bool(value)
        if op == "matches":
            return isinstance(value, str) and compile_pattern(expected).search(value[:MAX_SUBJECT]) is not None
    except (TypeError, re2.error):
        return False
    return False
