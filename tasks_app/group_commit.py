"""Group commit: the database steps of many tasks in flight, in one transaction.

A worker with slots claims and ends many runs a second. Each of those is a short transaction of a
few statements; alone, every one pays a BEGIN and a COMMIT, a turn at SQLite's write lock (which
every other writer waits for too) and its own after-commit work (the live messages are read back
in one query per transaction). In a batch they pay these once.

Each call still runs in a savepoint of its own: one that raises is rolled back alone and its
caller gets the exception, the others commit. A call that met a lock conflict (a deadlock that
PostgreSQL broke, a lock timeout) runs again alone after the batch, where ``retry_on_conflict``
retries it. When the commit itself fails nothing of the batch was written, and every call runs
again alone (each is a guarded transition). A process killed during a batch loses the whole
uncommitted batch, which the auto-resume pass finds like any other claimed or running run.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.db import OperationalError, transaction

log = logging.getLogger(__name__)
MAX_BATCH = 50  # calls per transaction: a batch holds SQLite's write lock while it runs

Outcome = tuple[Any, BaseException | None]


class GroupCommit:
    """Batches the calls awaited on one event loop: up to ``parallel`` batches run in the loop's
    executor while the next one gathers (PostgreSQL writes side by side; SQLite takes them in
    turn), so a lone call waits for at most one batch."""

    def __init__(self, around: Callable[[], AbstractContextManager] = nullcontext, parallel: int = 2) -> None:
        self.pending: list[tuple[Callable[[], Any], asyncio.Future]] = []
        self.draining = 0  # batches in the executor
        self.parallel = parallel
        self.around = around  # entered around each batch's calls, inside its transaction

    async def call(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` in the next batch (with the caller's context variables); its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((functools.partial(contextvars.copy_context().run, fn, *args), future))
        if self.draining < self.parallel:
            self.draining += 1
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                try:
                    outcomes = await loop.run_in_executor(None, run_batch, [call for call, _ in batch], self.around)
                except BaseException as exc:  # not even the batch could start (executor shut down)
                    outcomes = [(None, exc)] * len(batch)
                for (_, future), (value, error) in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller was cancelled meanwhile (an interrupt)
                        continue
                    if error is None:
                        future.set_result(value)
                    else:
                        future.set_exception(error)
        finally:
            self.draining -= 1


def run_batch(calls: list[Callable[[], Any]], around: Callable[[], AbstractContextManager] = nullcontext,
              ) -> list[Outcome]:
    """Run the calls in one transaction, each in a savepoint; what each returned or raised."""
    outcomes: list[Outcome | None] = [None] * len(calls)
    again: list[int] = []
    committed = []
    try:
        with transaction.atomic(), around():
            # The first after-commit callback: once it ran, the batch is written, whatever a later
            # callback raises (they are the batch's live messages and job sends).
            transaction.on_commit(lambda: committed.append(True))
            for i, call in enumerate(calls):
                try:
                    with transaction.atomic():
                        outcomes[i] = (call(), None)
                except OperationalError:
                    again.append(i)
                except Exception as exc:
                    outcomes[i] = (None, exc)
    except Exception:
        if not committed:
            log.warning("a batch of %d calls did not commit: each runs again alone", len(calls), exc_info=True)
            again = list(range(len(calls)))
        else:
            log.warning("after-commit work of a batch failed", exc_info=True)
    for i in again:
        outcomes[i] = alone(calls[i])
    return outcomes  # type: ignore[return-value]


def alone(call: Callable[[], Any]) -> Outcome:
    try:
        return call(), None
    except Exception as exc:
        return None, exc
