"""Bulk inserts of many similar rows: what ``bulk_create`` does, with each distinct value prepared once.

Adding 10,000 members to a swarm writes 10,000 rows that differ in a few columns (position, the
spec's own values). ``bulk_create`` prepares all 35 columns of every row through the field API and,
on SQLite, sends 29 rows per statement; here a value is prepared once however many rows repeat
it; on SQLite a statement carries as many rows as the parameter limit allows, on PostgreSQL the
rows go as one array per column (``UNNEST``), as Django's own PostgreSQL bulk insert does.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import gc
import sqlite3
from collections.abc import Sequence

from django.db import connections, router
from django.db.models import Model
from django.utils import timezone

# Values whose prepared form depends only on the value: prepared once per distinct value.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), datetime.datetime, datetime.date, decimal.Decimal})


@contextlib.contextmanager
def collector_paused():
    """No cyclic garbage collection while many rows are validated and built (also a decorator).

    Adding 10,000 members allocates about half a million objects that are not garbage: they set
    off some 240 collections, two of them full ones that walk every object of the process
    (0.1–0.3 s of a 1 s add). The collector catches up once it is enabled again."""
    if not gc.isenabled():  # paused already (another thread's add, or the caller's own choice)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def insert(objs: Sequence[Model], *, batch_size: int = 1000) -> None:
    """INSERT the unsaved ``objs`` (one model) and set their primary keys, like ``bulk_create``."""
    if not objs:
        return
    model = type(objs[0])
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    if not connection.features.can_return_rows_from_bulk_insert:
        model.objects.bulk_create(objs, batch_size=batch_size)
        return
    fields = [f for f in meta.concrete_fields if not f.primary_key and not f.generated]
    now = timezone.now()
    for field in fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            for obj in objs:
                setattr(obj, field.attname, now)
    columns = [_prepared_column(field, objs, connection) for field in fields]
    qn = connection.ops.quote_name
    head = f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) "
    tail = f" RETURNING {qn(meta.pk.column)}"
    with connection.cursor() as cursor:
        for start, end, sql, params in _statements(connection, head, tail, fields, columns, batch_size):
            for obj, (pk,) in zip(objs[start:end], _run(cursor, sql, params), strict=True):
                obj.pk = pk
                obj._state.adding = False
                obj._state.db = connection.alias


def _run(cursor, sql: str, params: list) -> list:
    """Execute and fetch. On PostgreSQL the arrays are bound on the server, in binary: Django's
    client-side binding cursor quotes every array element in Python with regular expressions (a
    third of a 10,000-row add). Django's execute wrappers and query log still see the statement."""
    if cursor.db.vendor != "postgresql":
        cursor.execute(sql, params)
        return cursor.fetchall()
    import psycopg

    def binary(sql, params, many, context):
        with psycopg.Cursor(cursor.db.connection) as server_side:
            server_side.execute(sql, params)
            return server_side.fetchall()

    # With DEBUG on, or a test capturing queries, Django's debug cursor logs it as it would its own.
    logged = cursor.debug_sql(sql, params) if hasattr(cursor, "debug_sql") else contextlib.nullcontext()
    with logged:
        return cursor._execute_with_wrappers(sql, params, many=False, executor=binary)


def _statements(connection, head: str, tail: str, fields: list, columns: list[list], batch_size: int):
    """(first row, end row, SQL, parameters) of each INSERT statement."""
    count = len(columns[0])
    if connection.vendor == "postgresql":
        # One array per column, as Django's bulk_create does there: a short statement to plan; %b
        # sends each array in binary (see _run).
        types = [field.db_type(connection).split("(")[0] for field in fields]
        sql = head + "SELECT * FROM UNNEST(" + ", ".join(f"(%b)::{t}[]" for t in types) + ")" + tail
        for start in range(0, count, batch_size):
            yield start, start + batch_size, sql, [column[start:start + batch_size] for column in columns]
        return
    per_statement = max(1, min(batch_size, _max_params(connection) // len(fields)))
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    rows = list(zip(*columns, strict=True))
    for start in range(0, count, per_statement):
        chunk = rows[start:start + per_statement]
        yield (start, start + per_statement, head + "VALUES " + ", ".join([row] * len(chunk)) + tail,
               [value for r in chunk for value in r])


def _prepared_column(field, objs: Sequence[Model], connection) -> list:
    """The column's database values; each distinct value (an empty ``{}`` or ``[]`` too) prepared once."""
    prepared: dict = {}
    column = []
    attname = field.attname
    for obj in objs:
        value = getattr(obj, attname)
        if type(value) in _IMMUTABLE:
            key = value
        elif not value and isinstance(value, (dict, list)):
            key = (type(value), "empty")
        else:
            key = (id(value),)  # the objects keep the value alive, so its id is not reused
        try:
            column.append(prepared[key])
        except KeyError:
            prepared[key] = field.get_db_prep_save(value, connection)
            column.append(prepared[key])
    return column


def _max_params(connection) -> int:
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    if connection.vendor == "postgresql":
        return 65_535
    return connection.features.max_query_params or 999
