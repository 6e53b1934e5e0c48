"""Task registry: one module per task, one line here."""

from __future__ import annotations

from collections.abc import Callable

from revrel.errors import RevrelError
from revrel.tasks.base import Oracle, Task

TASKS: dict[str, Callable[[], Task]] = {}


def register(name: str):
    def deco(fn: Callable[[], Task]) -> Callable[[], Task]:
        TASKS[name] = fn
        return fn

    return deco


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise RevrelError(f"unknown task '{name}'; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name]()


from revrel.tasks import code, ner, toxicity  # noqa: E402,F401  (each registers itself)

__all__ = ["TASKS", "Oracle", "Task", "get_task", "register"]
