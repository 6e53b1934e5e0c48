"""Fault injection for kill tests: ``REVREL_KILL_AT=<point>`` SIGKILLs the process when the run reaches
``<point>`` (e.g. ``round2:train``). Off unless the variable is set; costs one dict lookup."""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    if os.environ.get("REVREL_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
