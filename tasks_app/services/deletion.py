"""Soft delete with a restore window, restore, and the purge of expired signatures.

Running work of a deleted signature continues to its end and still calls back. Purge deletes
expired trees in batches, never one with active work, and locks each row it deletes, so a restore
or rerun racing it either wins (the row is no longer expired) or finds the row gone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from ..models import ACTIVE, FINISHED, Signature, Status
from . import events, execution
from .errors import InvalidTransition, SpecError

HELD = ACTIVE + (Status.PAUSED,)


def delete(sig: Signature, *, ttl: int | None = None, actor: str = "system") -> Signature:
    """Mark for deletion; restorable (and rerunnable) until ``delete_after``."""
    ttl = settings.ORCHESTRATOR["DELETION_TTL"] if ttl is None else ttl
    if not isinstance(ttl, int) or ttl < 0:
        raise SpecError({"ttl": "must be a whole number of seconds, 0 or more"})
    now = timezone.now()
    with transaction.atomic():
        if not Signature.objects.filter(pk=sig.pk, delete_after__isnull=True).update(
            marked_at=now, delete_after=now + timezone.timedelta(seconds=ttl)
        ):
            raise InvalidTransition("the signature is already marked for deletion")
        sig.refresh_from_db()
        events.record(sig, "marked_for_deletion", actor=actor, ttl=ttl, delete_after=sig.delete_after.isoformat())
    return sig


def restore(sig: Signature, *, actor: str = "system") -> Signature:
    with transaction.atomic():
        if not Signature.objects.filter(pk=sig.pk, delete_after__gt=timezone.now()).update(
            marked_at=None, delete_after=None
        ):
            raise InvalidTransition("nothing to restore: not marked for deletion, or its window has passed")
        sig.refresh_from_db()
        events.record(sig, "restored", actor=actor)
    return sig


def expired(now=None):
    return Signature.objects.filter(delete_after__lte=now or timezone.now())


PURGE_BATCH = 5000
"""Expired signatures examined per transaction. Only ids are held, so memory does not grow with the
number of expired rows; a bigger batch means fewer, larger statements and a longer write lock."""


def purge(*, dry_run: bool = False, batch_size: int = PURGE_BATCH, now=None) -> int:
    """Delete expired signatures (with everything below them) in batches; returns how many trees.

    Each batch is one transaction: lock the next expired rows (skipping locked ones: a restore or a
    rerun holds them), keep those whose tree holds active work, and delete the rest with a handful of
    set-based statements, children first, rather than Django's row-by-row collector.
    """
    now = now or timezone.now()
    purged, last_pk, raced = 0, 0, 0
    while True:
        try:
            batch_done, last_pk, size = _purge_batch(now, last_pk, batch_size, dry_run=dry_run)
        except (_Raced, IntegrityError):
            # A tree turned active, or gained a row, between the check and the delete (a rerun of
            # one of its members): the batch rolled back whole. Done again, the check sees it.
            raced += 1
            if raced > 3:
                raise
            continue
        purged += batch_done
        if size < batch_size:
            return purged


class _Raced(Exception):
    """A signature about to be deleted is active: its batch rolls back."""


@execution.retry_on_conflict
def _purge_batch(now, after_pk: int, batch_size: int, *, dry_run: bool = False) -> tuple[int, int, int]:
    """(trees purged or purgeable, last pk examined, rows examined) for the next expired rows."""
    with contextlib.nullcontext() if dry_run else transaction.atomic():
        candidates = expired(now).filter(pk__gt=after_pk).order_by("pk")
        if not dry_run and connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        rows = list(candidates.values_list("pk", "parent_id", "callback_of_id", "status")[:batch_size])
        if not rows:
            return 0, after_pk, 0
        trees, ids = _doomed(rows)
        if ids and not dry_run:
            _delete_signatures(ids)
    return trees, rows[-1][0], len(rows)


def _doomed(rows: list[tuple]) -> tuple[int, list[int]]:
    """How many trees of a batch go, and the id of every signature in them.

    A top-level row goes with its whole tree (one indexed query on ``root`` for the batch) unless
    anything in the tree is active or paused. A lower row (a member or callback marked on its own)
    goes with everything below it, on the same condition, unless a top-level row took it already,
    and only once every container above it has finished: a running (or pending, paused,
    interrupted) container still counts its members, and a graph still routes to its nodes.
    """
    tops = {pk: status for pk, parent_id, callback_of_id, status in rows
            if parent_id is None and callback_of_id is None}
    busy = {pk for pk, status in tops.items() if status in HELD}
    below = _select("id, root_id, status", "root_id", [pk for pk in tops if pk not in busy])
    busy.update(root_id for _, root_id, status in below if status in HELD)
    ids = [pk for pk in tops if pk not in busy]
    trees = len(ids)
    ids.extend(pk for pk, root_id, _ in below if root_id not in busy)
    taken = set(ids)
    for pk, parent_id, _, status in rows:
        if pk in tops or pk in taken or status in HELD or _in_unfinished_container(parent_id):
            continue
        subtree = _lower_tree(pk)
        if not any(status in HELD for _, status in _select("id, status", "id", subtree)):
            trees += 1
            ids.extend(i for i in subtree if i not in taken)
            taken.update(subtree)
    return trees, ids


def _in_unfinished_container(parent_id: int | None) -> bool:
    """Whether a container above a lower row (its parent, the parent's parent, ...) has not finished."""
    while parent_id is not None:
        found = _select("parent_id, status", "id", [parent_id])
        if not found:
            return False
        parent_id, status = found[0]
        if status not in FINISHED:
            return True
    return False


def _lower_tree(pk: int) -> list[int]:
    """A lower signature and what its deletion cascades to: its members and callbacks, level by level,
    and the per-member callbacks it triggered (``parent``, ``callback_of`` and ``trigger``)."""
    ids, frontier, seen = [pk], [pk], {pk}
    while frontier:
        found = _select("id", ("parent_id", "callback_of_id", "trigger_id"), frontier)
        frontier = [i for (i,) in found if i not in seen]
        seen.update(frontier)
        ids.extend(frontier)
    return ids


def _select(columns: str, among: str | tuple[str, ...], ids: list[int]) -> list[tuple]:
    """Rows (``columns``) of the signature table whose column ``among`` (any of several) is in ``ids``."""
    if not ids:
        return []
    conditions = [_among(column, ids) for column in ((among,) if isinstance(among, str) else among)]
    sql = f"SELECT {columns} FROM {connection.ops.quote_name(Signature._meta.db_table)} WHERE "
    sql += " OR ".join(condition for condition, _ in conditions)
    with connection.cursor() as cursor:
        cursor.execute(sql, [param for _, params in conditions for param in params])
        return cursor.fetchall()


def _among(column: str, ids: list[int]) -> tuple[str, list]:
    """``column IN ids`` with the ids as one parameter (an array on PostgreSQL, a JSON list on SQLite):
    one short statement and one plan for any number of ids, under every parameter limit."""
    column = connection.ops.quote_name(column)
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s::bigint[])", [list(ids)]
    if connection.vendor == "sqlite":
        return f"{column} IN (SELECT value FROM json_each(%s))", [json.dumps(list(ids))]
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", list(ids)


def _delete_signatures(ids: list[int]) -> None:
    """Delete whole trees with one statement per table, every row that depends on them first.

    The models' ``on_delete`` is followed as Django's collector would: CASCADE deletes (runs with their
    log entries, steps, logs, approvals, notifications), SET_NULL unlinks (the audit Events stay, with
    their signature_ref and root_ref), DO_NOTHING leaves. No delete signals are sent (none are
    connected). The signatures' own links (parent, callback_of, trigger, root) all stay inside ``ids``.
    """
    table = connection.ops.quote_name(Signature._meta.db_table)
    where, params = _among(Signature._meta.pk.column, ids)
    held, held_params = f"status IN ({', '.join(['%s'] * len(HELD))})", [str(status) for status in HELD]
    with connection.cursor() as cursor:
        _clear_dependants(
            cursor, Signature,
            lambda rel: _among(rel.field.column, ids) if rel.field.target_field.primary_key
            else _pointing(rel, table, where, params),
        )
        if connection.vendor == "postgresql":
            # The DELETE waits for a row that a concurrent rerun has locked, then sees its new status.
            cursor.execute(
                f"WITH gone AS (DELETE FROM {table} WHERE {where} RETURNING status) "
                f"SELECT count(*) FROM gone WHERE {held}",
                [*params, *held_params],
            )
            raced = cursor.fetchone()[0]
        else:
            # SQLite runs one write transaction at a time: nothing can change between check and delete.
            cursor.execute(f"SELECT count(*) FROM {table} WHERE {where} AND {held}", [*params, *held_params])
            raced = cursor.fetchone()[0]
            cursor.execute(f"DELETE FROM {table} WHERE {where}", params)
    if raced:
        raise _Raced


def _clear_dependants(cursor, model, match: Callable) -> None:
    """Unlink or delete (dependants first) the rows of other tables that point to doomed ``model`` rows;
    ``match(relation)`` is the SQL condition, with its parameters, for "points to a doomed row"."""
    quote = connection.ops.quote_name
    for rel in _relations_to(model):
        child, column = rel.related_model, rel.field.column
        if child is Signature and model is Signature:
            continue
        if child is model:
            raise ImproperlyConfigured(f"purge follows no self-reference but Signature's; {rel.field} needs one")
        table = quote(child._meta.db_table)
        where, params = match(rel)
        if rel.on_delete is models.SET_NULL:
            cursor.execute(f"UPDATE {table} SET {quote(column)} = NULL WHERE {where}", params)
        elif rel.on_delete is models.CASCADE:
            _clear_dependants(
                cursor, child, lambda sub, table=table, where=where, params=params: _pointing(sub, table, where, params)
            )
            cursor.execute(f"DELETE FROM {table} WHERE {where}", params)
        elif rel.on_delete is not models.DO_NOTHING:
            raise ImproperlyConfigured(
                f"purge handles CASCADE, SET_NULL and DO_NOTHING; {rel.field} has on_delete={rel.on_delete.__name__}"
            )


def _pointing(rel, table: str, where: str, params: list) -> tuple[str, list]:
    """The condition "the foreign key ``rel`` points to a row of ``table`` matching ``where``"."""
    quote = connection.ops.quote_name
    column, target = quote(rel.field.column), quote(rel.field.target_field.column)
    return f"{column} IN (SELECT {target} FROM {table} WHERE {where})", params


def _relations_to(model) -> list:
    """The foreign keys (one-to-one included, hidden ones too) that point to ``model``, as Django's
    collector finds them."""
    return [
        field for field in model._meta.get_fields(include_hidden=True)
        if field.auto_created and not field.concrete and (field.one_to_one or field.one_to_many)
    ]
