"""Task logs: captured from any logger inside a run, stored in batches, queried and exported."""

from __future__ import annotations

import asyncio
import contextvars
import csv
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice

from django.conf import settings
from django.db import connection, connections
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from ..models import LogEntry, Run, Signature
from . import live, tree

BATCH_SIZE = 1000
FLUSH_INTERVAL = 0.5
MARKER_LOGGER = "orchestrator"  # the logger name of the lines the orchestrator writes itself
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
        self.flusher_started = False
        self.budget = _Budget()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("django.db", "rq.", "tasks_app")):
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in user code must not kill the task
            message = str(record.msg)
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        message = _storable(message, settings.ORCHESTRATOR["LOG_MAX_LINE_CHARS"])
        entry = LogEntry(
            signature_id=self.run.signature_id,
            run=self.run,
            at=timezone.now(),
            level=record.levelno,
            logger=record.name[:200],
            message=message,
        )
        with self.lock_:
            entry = self.budget.admit(entry)
            if entry is None:  # past the run's limit, counted in the marker line
                return
            self.buffer.append(entry)
            due = len(self.buffer) >= BATCH_SIZE or time.monotonic() - self.last_flush >= FLUSH_INTERVAL
            start, self.flusher_started = not self.flusher_started, True
        if start and self.flusher is not None:
            self.flusher.start()
        if due and not _on_event_loop():  # the flusher thread writes for tasks on a loop
            self.flush()

    def flush(self) -> None:
        with self.lock_:
            batch, self.buffer = self.buffer, []
            self.last_flush = time.monotonic()
        if batch:
            LogEntry.objects.bulk_create(batch, batch_size=BATCH_SIZE)
            live.log_lines(self.run.signature_id, self.owner_id, batch)
        with self.lock_:
            marker = self.budget.stale_marker()
        if marker is not None:
            LogEntry.objects.filter(pk=marker.pk).update(message=marker.message)


class _Budget:
    """What one run may store: ``LOG_MAX_LINES_PER_RUN`` lines and ``LOG_MAX_BYTES_PER_RUN`` bytes of
    messages. The first line past either limit becomes one marker line, whose count of dropped lines
    the handler keeps up to date, so a task logging in a loop cannot fill the database."""

    def __init__(self) -> None:
        self.max_lines = settings.ORCHESTRATOR["LOG_MAX_LINES_PER_RUN"]
        self.max_bytes = settings.ORCHESTRATOR["LOG_MAX_BYTES_PER_RUN"]
        self.lines = self.bytes = self.dropped = self.written = 0
        self.limit = ""
        self.marker: LogEntry | None = None

    def admit(self, entry: LogEntry) -> LogEntry | None:
        """The entry while the run is within its limits; the marker for the first line past them; then None."""
        size = len(entry.message.encode())
        if self.marker is None:
            self.limit = self.exceeded(size)
            if not self.limit:
                self.lines, self.bytes = self.lines + 1, self.bytes + size
                return entry
            self.marker = LogEntry(
                signature_id=entry.signature_id, run=entry.run, at=entry.at, level=logging.WARNING, logger=MARKER_LOGGER
            )
        self.dropped += 1
        self.marker.message = f"log limit reached ({self.limit}): {self.dropped} more lines dropped"
        return self.marker if self.dropped == 1 else None

    def exceeded(self, size: int) -> str:
        if self.lines >= self.max_lines:
            return f"{self.max_lines} lines per run"
        if self.bytes + size > self.max_bytes:
            return f"{self.max_bytes} bytes per run"
        return ""

    def stale_marker(self) -> LogEntry | None:
        """The stored marker, when lines were dropped since its text was last written."""
        if self.marker is None or self.marker.pk is None or self.written == self.dropped:
            return None
        self.written = self.dropped
        return self.marker


def _storable(message: str, max_chars: int) -> str:
    """What the database takes: no NUL (PostgreSQL refuses it), no lone surrogate (not UTF-8), and at
    most ``max_chars`` characters, a longer message cut with a marker saying how much was cut."""
    if "\x00" in message:
        message = message.replace("\x00", "\ufffd")
    try:
        message.encode()
    except UnicodeEncodeError:
        message = message.encode(errors="replace").decode()
    if len(message) > max_chars:
        message = f"{message[:max_chars]} [message truncated: {len(message) - max_chars} more characters]"
    return message


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


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# The run whose task is running in this context: records go to its handler. A context variable,
# so tasks in flight side by side in one process (coroutines on a loop, threads) each log to their
# own run; records logged outside any run (the worker itself) go nowhere.
_CURRENT: contextvars.ContextVar[RunLogHandler | None] = contextvars.ContextVar("run_log", default=None)


class _Router(logging.Handler):
    """The one handler on the root logger while runs capture: hands each record to its run's handler."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.users = 0
        self.saved_levels: tuple[int, int] = (logging.WARNING, logging.NOTSET)

    def emit(self, record: logging.LogRecord) -> None:
        handler = _CURRENT.get()
        if handler is not None:
            handler.handle(record)


_router = _Router()
_router_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A work horse forked while a slot's thread held the lock would wait on it for ever."""
    global _router_lock
    _router_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _attach_router() -> None:
    root, tasks_logger = logging.getLogger(), logging.getLogger("tasks")
    with _router_lock:
        if _router.users == 0:
            _router.saved_levels = (root.level, tasks_logger.level)
            root.addHandler(_router)
            root.setLevel(min(root.level, logging.INFO))
            tasks_logger.setLevel(logging.DEBUG)
        _router.users += 1


def _detach_router() -> None:
    root, tasks_logger = logging.getLogger(), logging.getLogger("tasks")
    with _router_lock:
        _router.users -= 1
        if _router.users == 0:
            root.removeHandler(_router)
            root.setLevel(_router.saved_levels[0])
            tasks_logger.setLevel(_router.saved_levels[1])


def start_capture(run: Run) -> RunLogHandler:
    """The run's handler, ready to take the records routed to it (``routed``)."""
    handler = RunLogHandler(run)
    handler.flusher = _Flusher(handler)
    _attach_router()
    return handler


@contextmanager
def routed(handler: RunLogHandler) -> Iterator[None]:
    """Route every record logged in this context (at INFO and above, DEBUG for ``tasks.*``) to the handler."""
    token = _CURRENT.set(handler)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def end_capture(handler: RunLogHandler) -> None:
    """Write what is left (it may block: a task on a loop calls it off the loop)."""
    _detach_router()
    flusher = handler.flusher
    if flusher is not None and flusher.ident is not None:  # started by a first line
        flusher.stopped.set()
        flusher.join()
    handler.flush()


@contextmanager
def capture(run: Run) -> Iterator[RunLogHandler]:
    handler = start_capture(run)
    try:
        with routed(handler):
            yield handler
    finally:
        end_capture(handler)


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
        return qs.filter(
            RawSQL(
                "to_tsvector('simple', message) @@ websearch_to_tsquery('simple', %s)", [q], output_field=BooleanField()
            )
        )
    if connection.vendor == "sqlite":
        match = " ".join('"{}"'.format(word.replace('"', '""')) for word in words)
        return qs.filter(
            pk__in=RawSQL("SELECT rowid FROM tasks_app_logentry_fts WHERE tasks_app_logentry_fts MATCH %s", [match])
        )
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


CONTENT_TYPES = {"json": "application/json", "csv": "text/csv", "text": "text/plain"}
FIELDS = ["id", "task_id", "at", "level", "logger", "message"]
EXPORT_CHUNK = 1000  # rows read from the database, and written to the response, at a time
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet would run as a formula


def export(entries, fmt: str) -> tuple[str, str]:
    """(body, content type) of the entries as json, csv or text, in one string: for a few lines."""
    chunks, content_type = export_stream(entries, fmt)
    return "".join(chunks), content_type


def export_stream(entries, fmt: str) -> tuple[Iterator[str], str]:
    """(chunks of the body, content type): a queryset is read ``EXPORT_CHUNK`` rows at a time, so an
    export of millions of lines never holds them all in memory."""
    writers = {"json": _json_chunks, "csv": _csv_chunks, "text": _text_chunks}
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r}; use json, csv or text")
    return writers[fmt](_batches(entries)), CONTENT_TYPES[fmt]


def _batches(entries) -> Iterator[list[dict]]:
    """Rows as ``entry_dict``s, a batch at a time; a queryset is read as plain values, not models."""
    if isinstance(entries, QuerySet):
        values = entries.values_list("pk", "signature_id", "at", "level", "logger", "message")
        rows = (
            dict(zip(FIELDS, (pk, task_id, at.isoformat(), logging.getLevelName(level), logger, message), strict=True))
            for pk, task_id, at, level, logger, message in values.iterator(chunk_size=EXPORT_CHUNK)
        )
    else:
        rows = (entry_dict(e) for e in entries)
    while batch := list(islice(rows, EXPORT_CHUNK)):
        yield batch


def _json_chunks(batches: Iterator[list[dict]]) -> Iterator[str]:
    separator = "["
    for batch in batches:
        yield separator + ", ".join(json.dumps(row) for row in batch)
        separator = ", "
    yield "[]" if separator == "[" else "]"


class _Echo:
    """A file that hands back what is written: ``csv.writer`` formats a row, the caller yields it."""

    def write(self, value: str) -> str:
        return value


def _csv_chunks(batches: Iterator[list[dict]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(FIELDS)
    for batch in batches:
        yield "".join(writer.writerow([_csv_cell(row[key]) for key in FIELDS]) for row in batch)


def _csv_cell(value):
    """A text cell that a spreadsheet would run as a formula gets a leading apostrophe (CSV injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _text_chunks(batches: Iterator[list[dict]]) -> Iterator[str]:
    for batch in batches:
        yield "".join(f"{r['at']} {r['level']:<8} [#{r['task_id']}] {r['message']}\n" for r in batch)
