"""A Python canvas over specs: compose workflows in code and run them from any Django code.

    from tasks_app.canvas import sign, chain, swarm, graph, workflow

    flow = chain([sign("examples.add", a=1, b=2), sign("examples.double")]).on_success(sign("examples.echo"))
    handle = flow.run(owner=user)          # validated, stored, started
    handle.wait(timeout=30).result         # 6

    batch = swarm([], max_concurrency=5, closed=False).run(owner=user)
    batch.add_tasks([sign("examples.echo", value=i) for i in range(100)])
    batch.close()

    flow.save_as("add-and-double", owner=user)                      # a saved workflow, version 1
    swarm([workflow("add-and-double", a=i) for i in range(3)]).run(owner=user)

From async code (an async view, a Channels consumer) the same canvas is awaited; the ORM and the
services run off the event loop, so the caller needs no ``sync_to_async``:

    from tasks_app.canvas import SignatureFailed, chain, sign, swarm

    handle = await flow.arun(owner=request.user)       # an AsyncHandle; ``flow.asave`` stores only
    await handle.apause(); await handle.aresume()      # ainterrupt, aretry, arerun, acancel(confirm=True)
    result = await handle.await_result(timeout=30)     # 6; SignatureFailed if it did not complete
    signature = await handle.await_end(timeout=30)     # the Signature, whatever the outcome

    batch = await swarm([], max_concurrency=5, closed=False).arun(owner=user)
    member = await batch.add_task(sign("examples.echo", value=0))       # the member's AsyncHandle
    await batch.add_tasks_bulk([sign("examples.echo", value=i) for i in range(1, 100)])
    await batch.aclose()
    await batch.await_result(timeout=60)               # [0, 1, ..., 99]

``handle.aio`` and ``async_handle.sync`` convert between the two handles.

Every builder produces the JSON spec of CONTRACT.md §5 (``.spec()``), so anything built here can
also be sent to ``POST /api/tasks/`` and vice versa.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from .models import TERMINAL, SavedWorkflow, Signature, Status
from .services import execution, lifecycle, swarms, workflows

T = TypeVar("T")


async def _in_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The one door from async code to the ORM and the services: Django's shared sync thread, the one
    its own async ORM methods use, so a request keeps one database connection and its transactions."""
    return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)


@dataclass
class Spec:
    """A spec under construction; callbacks and options chain fluently."""

    data: dict[str, Any]
    _on_success: list[Spec] = field(default_factory=list)
    _on_error: list[Spec] = field(default_factory=list)
    _on_finish: list[Spec] = field(default_factory=list)

    def on_success(self, *callbacks: Spec | dict) -> Spec:
        self._on_success.extend(_as_spec(c) for c in callbacks)
        return self

    def on_error(self, *callbacks: Spec | dict) -> Spec:
        self._on_error.extend(_as_spec(c) for c in callbacks)
        return self

    def on_finish(self, *callbacks: Spec | dict) -> Spec:
        """Callbacks that fire once whatever the outcome (cleanup), with ``input`` or ``error``."""
        self._on_finish.extend(_as_spec(c) for c in callbacks)
        return self

    def options(self, **options: Any) -> Spec:
        """priority, name, category, tags, retries, retry_backoff, timeout."""
        self.data.update(options)
        return self

    def spec(self) -> dict[str, Any]:
        out = {key: _resolve(value) for key, value in self.data.items()}
        if self._on_success:
            out["on_success"] = [c.spec() for c in self._on_success]
        if self._on_error:
            out["on_error"] = [c.spec() for c in self._on_error]
        if self._on_finish:
            out["on_finish"] = [c.spec() for c in self._on_finish]
        return out

    def run(self, *, owner, idempotency_key: str | None = None) -> Handle:
        return Handle(execution.submit(self.spec(), owner=owner, idempotency_key=idempotency_key,
                                       actor=owner.get_username()))

    def save(self, *, owner) -> Handle:
        """Store without starting (``run: false``)."""
        return Handle(execution.submit(self.spec(), owner=owner, run=False, actor=owner.get_username()))

    def save_as(self, name: str, *, owner, description: str = "") -> SavedWorkflow:
        """Save this spec as the next version of a named workflow, for ``workflow(name)`` anywhere."""
        saved, _ = workflows.save(owner=owner, name=name, spec=self.spec(), description=description,
                                  actor=owner.get_username())
        return saved

    async def arun(self, *, owner, idempotency_key: str | None = None) -> AsyncHandle:
        """``run`` from async code; ``owner`` may be an async view's lazy ``request.user``."""
        handle = await _in_sync(self.run, owner=owner, idempotency_key=idempotency_key)
        return handle.aio

    async def asave(self, *, owner) -> AsyncHandle:
        """``save`` from async code: stored, not started (``await handle.astart()`` starts it)."""
        return (await _in_sync(self.save, owner=owner)).aio


def _as_spec(value: Spec | dict) -> Spec:
    return value if isinstance(value, Spec) else Spec(dict(value))


def _resolve(value: Any) -> Any:
    if isinstance(value, Spec):
        return value.spec()
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    return value


def sign(task_name: str, **kwargs: Any) -> Spec:
    """A signature: one call of a registered task."""
    return Spec({"task": task_name, "kwargs": kwargs})


def chain(steps: list[Spec | dict], **kwargs: Any) -> Spec:
    return Spec({"kind": "chain", "steps": list(steps), "kwargs": kwargs})


def swarm(tasks: list[Spec | dict], *, max_concurrency: int = 10, stop_after_n_failures: int | None = None,
          max_tasks: int | None = None, closed: bool = True, task_on_success: list[Spec | dict] = (),
          task_on_error: list[Spec | dict] = (), task_on_finish: list[Spec | dict] = (), **kwargs: Any) -> Spec:
    return Spec({"kind": "swarm", "tasks": list(tasks), "kwargs": kwargs, "max_concurrency": max_concurrency,
                 "stop_after_n_failures": stop_after_n_failures, "max_tasks": max_tasks, "closed": closed,
                 "task_on_success": list(task_on_success), "task_on_error": list(task_on_error),
                 **({"task_on_finish": list(task_on_finish)} if task_on_finish else {})})


def graph(nodes: dict[str, Spec | dict], edges: list[dict], **kwargs: Any) -> Spec:
    """``edges``: ``{"from": a, "to": b, "when": condition}`` (see ``edge``)."""
    return Spec({"kind": "graph", "nodes": dict(nodes), "edges": list(edges), "kwargs": kwargs})


def workflow(name: str, *, version: int | None = None, **kwargs: Any) -> Spec:
    """A saved workflow as a node (its latest version unless pinned); ``kwargs`` reach every member
    that accepts them, as a chain's do. Resolved when the spec is run."""
    return Spec({"workflow": name, **({"version": version} if version is not None else {}), "kwargs": kwargs})


def edge(source: str, target: str, when: dict | None = None) -> dict:
    return {"from": source, "to": target, **({"when": when} if when else {})}


class Handle:
    """A stored signature with the actions users call most."""

    def __init__(self, signature: Signature):
        self.signature = signature

    @property
    def id(self) -> int:
        return self.signature.pk

    def refresh(self) -> Handle:
        self.signature.refresh_from_db()
        return self

    @property
    def aio(self) -> AsyncHandle:
        """The same signature for async code."""
        return AsyncHandle(self)

    @property
    def status(self) -> str:
        return self.refresh().signature.status

    @property
    def result(self) -> Any:
        return self.refresh().signature.result

    def wait(self, timeout: float = 60, interval: float = 0.2) -> Signature:
        """Block until the signature ends (needs running workers); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while self.status not in TERMINAL:
            if time.monotonic() > deadline:
                raise _still_going(self.signature, timeout)
            time.sleep(interval)
        return self.signature

    def add_tasks(self, tasks: list[Spec | dict], *, atomic: bool = True, batch_size: int = 1000,
                  run: bool = False) -> swarms.AddResult:
        """Add members to an open swarm (validated first; atomic unless ``atomic=False``)."""
        specs = [_as_spec(t).spec() for t in tasks]
        return swarms.add_tasks(self.signature, specs, run=run, atomic=atomic, batch_size=batch_size,
                                actor=self.signature.owner.get_username())

    def add_task_and_run(self, task: Spec | dict) -> swarms.AddResult:
        return self.add_tasks([task], run=True)

    def add_tasks_and_run(self, tasks: list[Spec | dict], **options: Any) -> swarms.AddResult:
        return self.add_tasks(tasks, run=True, **options)

    def close(self) -> Handle:
        swarms.close(self.signature, actor=self.signature.owner.get_username())
        return self.refresh()

    def _act(self, action, **kwargs) -> Handle:
        self.signature = action(self.signature, actor=self.signature.owner.get_username(), **kwargs)
        return self

    def pause(self) -> Handle:
        return self._act(lifecycle.pause)

    def resume(self) -> Handle:
        return self._act(lifecycle.resume)

    def interrupt(self) -> Handle:
        return self._act(lifecycle.interrupt)

    def retry(self, *, kwargs: dict | None = None, from_start: bool = False) -> Handle:
        """From the failed step (``from_start`` redoes completed ones); ``kwargs`` replaces a task's arguments."""
        return self._act(lifecycle.retry, kwargs=kwargs, from_start=from_start)

    def skip(self, *, result: Any = None) -> Handle:
        """Go on past the failure: a failed step, or a failed chain or graph member (as if it returned ``result``)."""
        return self._act(lifecycle.skip, result=result)

    def rerun(self) -> Handle:
        return self._act(lifecycle.rerun)

    def cancel(self, *, confirm: bool) -> None:
        lifecycle.cancel(self.signature, confirm=confirm, actor=self.signature.owner.get_username())


def _still_going(signature: Signature, timeout: float) -> TimeoutError:
    return TimeoutError(f"signature {signature.pk} is still {signature.status} after {timeout:g} s")


class SignatureFailed(Exception):
    """``await_result`` on a signature that ended without completing: failed, interrupted or skipped.

    As Celery's ``AsyncResult.get()`` and Prefect's ``state.result()`` raise the task's exception, but
    the exception itself stayed in the worker: ``error`` is its stored payload (``type``, ``message``,
    ``traceback``, ``task_id``) and ``signature`` the row as it ended.
    """

    def __init__(self, signature: Signature):
        self.signature = signature
        self.status = signature.status
        self.error = signature.error
        error = signature.error or {}
        cause = f": {error.get('type')}: {error.get('message')}" if error.get("type") else ""
        super().__init__(f"signature {signature.pk} ended {signature.status}{cause}")


class AsyncHandle:
    """A stored signature for async code: every method is a coroutine that runs the sync ``Handle``
    (``.sync``) off the event loop, so async views and Channels consumers call it directly."""

    def __init__(self, handle: Handle | Signature):
        self.sync = handle if isinstance(handle, Handle) else Handle(handle)

    @property
    def id(self) -> int:
        return self.sync.id

    @property
    def signature(self) -> Signature:
        """The row as last read (``await arefresh()`` reads it again)."""
        return self.sync.signature

    async def arefresh(self) -> AsyncHandle:
        await _in_sync(self.sync.refresh)
        return self

    async def astatus(self) -> str:
        return await _in_sync(lambda: self.sync.status)

    async def aresult(self) -> Any:
        """The result stored now (``None`` until it completes), like ``Handle.result``."""
        return await _in_sync(lambda: self.sync.result)

    async def await_end(self, timeout: float = 60, interval: float = 0.2) -> Signature:
        """Wait without blocking the loop until the signature ends, however it ends (``Handle.wait``)."""
        deadline = time.monotonic() + timeout
        while await self.astatus() not in TERMINAL:
            if time.monotonic() > deadline:
                raise _still_going(self.signature, timeout)
            await asyncio.sleep(interval)
        return self.signature

    async def await_result(self, timeout: float = 60, interval: float = 0.2) -> Any:
        """Wait for the end and return the result; ``SignatureFailed`` unless it completed."""
        signature = await self.await_end(timeout, interval)
        if signature.status != Status.COMPLETED:
            raise SignatureFailed(signature)
        return signature.result

    async def add_task(self, task: Spec | dict, *, run: bool = False) -> AsyncHandle:
        """Add one member to an open swarm; returns the member's handle."""
        added = await self.add_tasks_bulk([task], run=run)
        return AsyncHandle(added.added[0])

    async def add_tasks_bulk(self, tasks: list[Spec | dict], *, atomic: bool = True, batch_size: int = 1000,
                             run: bool = False) -> swarms.AddResult:
        """``Handle.add_tasks``: validated first, atomic unless ``atomic=False``."""
        return await _in_sync(self.sync.add_tasks, tasks, atomic=atomic, batch_size=batch_size, run=run)

    async def add_task_and_run(self, task: Spec | dict) -> AsyncHandle:
        return await self.add_task(task, run=True)

    async def add_tasks_and_run(self, tasks: list[Spec | dict], **options: Any) -> swarms.AddResult:
        return await self.add_tasks_bulk(tasks, run=True, **options)

    async def aclose(self) -> AsyncHandle:
        await _in_sync(self.sync.close)
        return self

    async def _act(self, action: Callable[[], Any]) -> AsyncHandle:
        await _in_sync(action)
        return self

    async def astart(self) -> AsyncHandle:
        """Start a signature stored with ``asave``."""
        return await self._act(lambda: self.sync._act(lifecycle.start))

    async def apause(self) -> AsyncHandle:
        return await self._act(self.sync.pause)

    async def aresume(self) -> AsyncHandle:
        return await self._act(self.sync.resume)

    async def ainterrupt(self) -> AsyncHandle:
        return await self._act(self.sync.interrupt)

    async def aretry(self, *, kwargs: dict | None = None, from_start: bool = False) -> AsyncHandle:
        return await self._act(lambda: self.sync.retry(kwargs=kwargs, from_start=from_start))

    async def askip(self, *, result: Any = None) -> AsyncHandle:
        return await self._act(lambda: self.sync.skip(result=result))

    async def arerun(self) -> AsyncHandle:
        return await self._act(self.sync.rerun)

    async def acancel(self, *, confirm: bool) -> None:
        await _in_sync(self.sync.cancel, confirm=confirm)
