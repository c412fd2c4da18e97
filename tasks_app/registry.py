"""The task registry: ``@task`` turns ``fn(ctx, **kwargs)`` into a named, runnable task."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from .models import Priority


class NonRetryable(Exception):
    """Raised by a task to fail at once, skipping the retries left."""


class ApprovalRejected(Exception):
    """Raised by ``ctx.request_approval`` when a human rejected and the task did not check."""


@dataclass(frozen=True)
class TaskDef:
    name: str
    fn: Callable[..., Any]
    retries: int = 0
    retry_backoff: float = 1.0
    timeout: float | None = None
    priority: str = Priority.MEDIUM
    category: str = ""
    steps: tuple[str, ...] = ()
    description: str = ""
    params: tuple[dict, ...] = field(default_factory=tuple)
    threads: bool = False

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    @property
    def runs_in_slot(self) -> bool:
        """Whether a worker with ``--concurrency`` above 1 runs it beside others in its process (an
        ``async def`` task on its event loop, a ``threads=True`` task in its thread pool); the
        other tasks keep a forked work horse each."""
        return self.is_async or self.threads

    @property
    def accepts_any_kwargs(self) -> bool:
        return any(p["kind"] == "var_keyword" for p in self.params)

    def accepts(self, name: str) -> bool:
        return self.accepts_any_kwargs or any(p["name"] == name for p in self.params)

    def check_kwargs(self, kwargs: dict) -> dict[str, str]:
        """Errors by argument name: unknown arguments and missing required ones."""
        errors = {}
        named = {p["name"]: p for p in self.params if p["kind"] != "var_keyword"}
        if not self.accepts_any_kwargs:
            for key in kwargs:
                if key not in named:
                    errors[key] = f"unknown argument of {self.name}"
        for name, param in named.items():
            if param["required"] and name not in kwargs and name not in ("input", "error"):
                errors[name] = "this argument is required"
        return errors


_REGISTRY: dict[str, TaskDef] = {}


def _describe_params(fn: Callable) -> tuple[dict, ...]:
    params = []
    for i, (name, p) in enumerate(inspect.signature(fn).parameters.items()):
        if i == 0:  # ctx
            continue
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            continue
        annotation = p.annotation
        if annotation is inspect.Parameter.empty:
            type_name = type(p.default).__name__ if p.default not in (inspect.Parameter.empty, None) else "any"
        else:
            type_name = getattr(annotation, "__name__", str(annotation))
        params.append(
            {
                "name": name,
                "kind": "var_keyword" if p.kind == inspect.Parameter.VAR_KEYWORD else "keyword",
                "required": p.default is inspect.Parameter.empty and p.kind != inspect.Parameter.VAR_KEYWORD,
                "default": None if p.default is inspect.Parameter.empty else p.default,
                "type": type_name,
            }
        )
    return tuple(params)


def task(
    name: str | None = None,
    *,
    retries: int = 0,
    retry_backoff: float = 1.0,
    timeout: float | None = None,
    priority: str = Priority.MEDIUM,
    category: str = "",
    steps: list[str] | tuple[str, ...] = (),
    threads: bool = False,
) -> Callable[[Callable], Callable]:
    """Register ``fn(ctx, **kwargs)`` under ``name`` (default: module.function).

    ``fn`` may be an ``async def``. ``threads=True`` lets a sync task that blocks on I/O run in a
    worker's thread pool beside other tasks instead of in a forked horse of its own (it then stops
    on interrupt at its next ``ctx`` call, not at once)."""

    def decorate(fn: Callable) -> Callable:
        task_name = name or f"{fn.__module__}.{fn.__name__}"
        if threads and inspect.iscoroutinefunction(fn):
            raise TypeError(f"{task_name}: threads=True is for sync functions; an async def task runs on the loop")
        _REGISTRY[task_name] = TaskDef(
            name=task_name,
            fn=fn,
            retries=retries,
            retry_backoff=retry_backoff,
            timeout=timeout,
            priority=Priority(priority),
            category=category,
            steps=tuple(steps),
            description=inspect.getdoc(fn) or "",
            params=_describe_params(fn),
            threads=threads,
        )
        fn.task_name = task_name
        return fn

    return decorate


def get_task(name: str) -> TaskDef | None:
    return _REGISTRY.get(name)


def all_tasks() -> list[TaskDef]:
    return sorted(_REGISTRY.values(), key=lambda t: t.name)
