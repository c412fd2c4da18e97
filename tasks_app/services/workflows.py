"""Saved workflows: named, versioned specs that any spec uses as a node, ``{"workflow": NAME, "kwargs": {...}}``.

Saving a name again adds a version; a version is never changed. A reference resolves when a spec is
validated (at submit): to the latest version, or to ``"version": N``. The node it becomes records
``saved_workflow: {name, version}`` in its stored spec, which the API shows as the task's ``workflow``.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery

from ..models import SavedWorkflow
from . import specs
from .errors import SpecError

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
NAME_RULE = "1-100 letters, digits, _ . - (not starting with . or -)"


def save(*, owner, name: Any, spec: Any, description: Any = "", actor: str = "") -> tuple[SavedWorkflow, bool]:
    """Store ``spec`` as the next version of ``name``: (the version, whether it is new).

    The same spec as the latest version returns that version unchanged. The spec is validated as a
    building block: arguments its tasks require may be left to the references that use it, and it
    may not contain itself, directly or through other saved workflows."""
    errors = {}
    if not isinstance(name, str) or not NAME.match(name):
        errors["name"] = f"must be {NAME_RULE}"
    if not isinstance(description, str) or len(description) > 2000:
        errors["description"] = "must be a string of at most 2000 characters"
    if errors:
        raise SpecError(errors)
    normalised = specs.validate(spec, path="spec", owner=owner, saving=name, parameters_later=True)
    for _ in range(3):
        latest = find(owner, name)
        if latest is not None and latest.spec == spec and latest.description == description:
            return latest, False
        try:
            with transaction.atomic():
                return SavedWorkflow.objects.create(
                    owner=owner, name=name, version=(latest.version if latest else 0) + 1, kind=normalised["kind"],
                    description=description, spec=spec, created_by=actor[:150],
                ), True
        except IntegrityError:  # another save of this name took the version number first: count again
            continue
    raise SpecError({"name": "saved by someone else at the same moment; try again"})


def find(owner, name: str, version: int | None = None) -> SavedWorkflow | None:
    """The owner's workflow of that name: the given version, or the latest."""
    rows = SavedWorkflow.objects.filter(owner=owner, name=name)
    if version is not None:
        return rows.filter(version=version).first()
    return rows.order_by("-version").first()


def latest_versions(owner) -> QuerySet[SavedWorkflow]:
    """Each name of the owner's once, at its latest version, with ``versions`` (how many) annotated."""
    same_name = SavedWorkflow.objects.filter(owner=OuterRef("owner"), name=OuterRef("name")).order_by()
    top = same_name.order_by("-version").values("version")[:1]
    count = same_name.values("name").annotate(n=Count("id")).values("n")
    return (SavedWorkflow.objects.filter(owner=owner, version=Subquery(top))
            .annotate(versions=Subquery(count, output_field=IntegerField())).order_by("name"))


def delete(*, owner, name: str) -> int:
    """Delete every version of a name; runs built from it keep their record. How many went."""
    return SavedWorkflow.objects.filter(owner=owner, name=name).delete()[0]


def merged(saved: Any, reference: dict) -> Any:
    """The saved spec as a reference uses it: the reference's kwargs over the saved ones (they reach
    every member that accepts them, as a chain's do), its callbacks after the saved ones, and any
    other field it gives (name, priority, tags...) instead of the saved one."""
    if not isinstance(saved, dict):  # written before a check existed: the validator names it
        return saved
    out = dict(saved)
    for key, value in reference.items():
        if key in ("workflow", "version"):
            continue
        if key == "kwargs" and isinstance(value, dict) and isinstance(saved.get("kwargs", {}), dict):
            out["kwargs"] = {**saved.get("kwargs", {}), **value}
        elif key in specs.CALLBACKS and isinstance(value, list) and isinstance(saved.get(key, []), list):
            out[key] = [*saved.get(key, []), *value]
        else:
            out[key] = value
    return out
