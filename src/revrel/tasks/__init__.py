"""Task registry: one module per task, one line here."""

from __future__ import annotations

from collections.abc import Callable

from revrel.errors import RevrelError
from revrel.tasks.base import Oracle, Task

TASKS: dict[str, Callable[..., Task]] = {}
PARAMETRISED = {"target"}  # tasks whose factory takes the run's spec


def register(name: str):
    def deco(fn: Callable[[], Task]) -> Callable[[], Task]:
        TASKS[name] = fn
        return fn

    return deco


def load_plugins() -> None:
    """Import the modules named in ``$REVREL_PLUGINS`` (comma-separated) so they can register tasks."""
    import importlib
    import os

    for mod in filter(None, (m.strip() for m in os.environ.get("REVREL_PLUGINS", "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise RevrelError(f"REVREL_PLUGINS names '{mod}', which cannot be imported: {exc}") from exc


def get_task(name: str, spec=None) -> Task:
    """A task by name; ``spec`` is what a parametrised task is built from (the target task: ``RunConfig.target``)."""
    if name not in TASKS:
        load_plugins()
    if name not in TASKS:
        raise RevrelError(f"unknown task '{name}'; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name](spec) if spec is not None and name in PARAMETRISED else TASKS[name]()


from revrel.tasks import code, ner, target, toxicity  # noqa: E402,F401  (each registers itself)

__all__ = ["TASKS", "Oracle", "Task", "get_task", "register"]
