"""Task logs: captured from any logger inside a run, stored in batches, queried and exported."""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from django.db import connection, connections
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from ..models import LogEntry, Run, Signature
from . import live, tree

BATCH_SIZE = 1000
FLUSH_INTERVAL = 0.5
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


class RunLogHandler(logging.Handler):
    """Buffers records of one run and writes them with one INSERT per batch."""

    def __init__(self, run: Run):
        super().__init__(level=logging.DEBUG)
        self.run = run
        self.owner_id = run.signature.owner_id
        self.buffer: list[LogEntry] = []
        self.last_flush = time.monotonic()
        self.lock_ = threading.Lock()
        self.flusher: _Flusher | None = None  # started by the first line: a quiet task costs no thread

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("django.db", "rq.", "tasks_app")):
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in user code must not kill the task
            message = str(record.msg)
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        entry = LogEntry(
            signature_id=self.run.signature_id,
            run=self.run,
            at=timezone.now(),
            level=record.levelno,
            logger=record.name[:200],
            message=message,
        )
        with self.lock_:
            self.buffer.append(entry)
            due = len(self.buffer) >= BATCH_SIZE or time.monotonic() - self.last_flush >= FLUSH_INTERVAL
            idle_flusher, self.flusher = self.flusher, None
        if idle_flusher is not None:
            idle_flusher.start()
        if due:
            self.flush()

    def flush(self) -> None:
        with self.lock_:
            batch, self.buffer = self.buffer, []
            self.last_flush = time.monotonic()
        if batch:
            LogEntry.objects.bulk_create(batch, batch_size=BATCH_SIZE)
            live.log_lines(self.run.signature_id, self.owner_id, batch)


class _Flusher(threading.Thread):
    """Writes buffered lines every FLUSH_INTERVAL, so a line logged before a long blocking call
    shows at once. It stays idle while the task runs inside a transaction (a test calling the job
    in-process): a second connection could not see, or wait on, that transaction's rows."""

    def __init__(self, handler: RunLogHandler):
        super().__init__(daemon=True, name="log-flusher")
        self.handler = handler
        self.main_connection = connections["default"]
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(FLUSH_INTERVAL):
                if self.handler.buffer and not self.main_connection.in_atomic_block:
                    self.handler.flush()
        finally:
            connections["default"].close()


@contextmanager
def capture(run: Run) -> Iterator[RunLogHandler]:
    """Route every record logged during the run (at INFO and above, DEBUG for ``tasks.*``) to its log."""
    handler = RunLogHandler(run)
    flusher = handler.flusher = _Flusher(handler)
    root = logging.getLogger()
    tasks_logger = logging.getLogger("tasks")
    old_root_level, old_tasks_level = root.level, tasks_logger.level
    root.addHandler(handler)
    root.setLevel(min(old_root_level, logging.INFO))
    tasks_logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        flusher.stopped.set()
        if flusher.ident is not None:
            flusher.join()
        root.removeHandler(handler)
        root.setLevel(old_root_level)
        tasks_logger.setLevel(old_tasks_level)
        handler.flush()


def parse_level(value: str | None) -> int:
    if not value:
        return 0
    if value.isdigit():
        return int(value)
    level = LEVELS.get(value.upper())
    if level is None:
        raise ValueError(f"unknown level {value!r}; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def for_tree(signature: Signature, *, min_level: int = 0, q: str = "") -> QuerySet[LogEntry]:
    """Logs of the signature and all its descendants, oldest first."""
    qs = LogEntry.objects.filter(signature_id__in=tree.subtree(signature).values("pk"))
    if min_level:
        qs = qs.filter(level__gte=min_level)
    if q:
        qs = search(qs, q)
    return qs.order_by("at", "id")


def search(qs: QuerySet[LogEntry], q: str) -> QuerySet[LogEntry]:
    """Full text: PostgreSQL's text search (GIN index), SQLite's FTS5 table; every word must match."""
    words = q.split()
    if not words:
        return qs
    if connection.vendor == "postgresql":
        return qs.filter(RawSQL("to_tsvector('simple', message) @@ websearch_to_tsquery('simple', %s)", [q],
                                output_field=BooleanField()))
    if connection.vendor == "sqlite":
        match = " ".join('"{}"'.format(word.replace('"', '""')) for word in words)
        return qs.filter(pk__in=RawSQL(
            "SELECT rowid FROM tasks_app_logentry_fts WHERE tasks_app_logentry_fts MATCH %s", [match]))
    for word in words:
        qs = qs.filter(message__icontains=word)
    return qs


def entry_dict(entry: LogEntry) -> dict:
    return {
        "id": entry.pk,
        "task_id": entry.signature_id,
        "at": entry.at.isoformat(),
        "level": entry.levelname,
        "logger": entry.logger,
        "message": entry.message,
    }


def export(entries, fmt: str) -> tuple[str, str]:
    """(body, content type) of the entries as json, csv or text."""
    rows = [entry_dict(e) for e in entries]
    if fmt == "json":
        return json.dumps(rows), "application/json"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["id", "task_id", "at", "level", "logger", "message"])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue(), "text/csv"
    if fmt == "text":
        return "".join(f"{r['at']} {r['level']:<8} [#{r['task_id']}] {r['message']}\n" for r in rows), "text/plain"
    raise ValueError(f"unknown format {fmt!r}; use json, csv or text")
