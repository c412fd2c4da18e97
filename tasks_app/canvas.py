"""A Python canvas over specs: compose workflows in code and run them from any Django code.

    from tasks_app.canvas import sign, chain, swarm, graph

    flow = chain([sign("examples.add", a=1, b=2), sign("examples.double")]).on_success(sign("examples.echo"))
    handle = flow.run(owner=user)          # validated, stored, started
    handle.wait(timeout=30).result         # 6

    batch = swarm([], max_concurrency=5, closed=False).run(owner=user)
    batch.add_tasks([sign("examples.echo", value=i) for i in range(100)])
    batch.close()

Every builder produces the JSON spec of CONTRACT.md §5 (``.spec()``), so anything built here can
also be sent to ``POST /api/tasks/`` and vice versa.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .models import TERMINAL, Signature
from .services import execution, lifecycle, swarms


@dataclass
class Spec:
    """A spec under construction; callbacks and options chain fluently."""

    data: dict[str, Any]
    _on_success: list[Spec] = field(default_factory=list)
    _on_error: list[Spec] = field(default_factory=list)

    def on_success(self, *callbacks: Spec | dict) -> Spec:
        self._on_success.extend(_as_spec(c) for c in callbacks)
        return self

    def on_error(self, *callbacks: Spec | dict) -> Spec:
        self._on_error.extend(_as_spec(c) for c in callbacks)
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
        return out

    def run(self, *, owner, idempotency_key: str | None = None) -> Handle:
        return Handle(execution.submit(self.spec(), owner=owner, idempotency_key=idempotency_key,
                                       actor=owner.get_username()))

    def save(self, *, owner) -> Handle:
        """Store without starting (``run: false``)."""
        return Handle(execution.submit(self.spec(), owner=owner, run=False, actor=owner.get_username()))


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
          task_on_error: list[Spec | dict] = (), **kwargs: Any) -> Spec:
    return Spec({"kind": "swarm", "tasks": list(tasks), "kwargs": kwargs, "max_concurrency": max_concurrency,
                 "stop_after_n_failures": stop_after_n_failures, "max_tasks": max_tasks, "closed": closed,
                 "task_on_success": list(task_on_success), "task_on_error": list(task_on_error)})


def graph(nodes: dict[str, Spec | dict], edges: list[dict], **kwargs: Any) -> Spec:
    """``edges``: ``{"from": a, "to": b, "when": condition}`` (see ``edge``)."""
    return Spec({"kind": "graph", "nodes": dict(nodes), "edges": list(edges), "kwargs": kwargs})


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
                raise TimeoutError(f"signature {self.id} is still {self.signature.status} after {timeout:g} s")
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

    def retry(self) -> Handle:
        return self._act(lifecycle.retry)

    def rerun(self) -> Handle:
        return self._act(lifecycle.rerun)

    def cancel(self, *, confirm: bool) -> None:
        lifecycle.cancel(self.signature, confirm=confirm, actor=self.signature.owner.get_username())
