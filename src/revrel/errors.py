"""User-facing errors.

Every problem a user can fix (bad path, bad config, bad data file) is raised as a
:class:`RevrelError`. The CLI prints its message as one line and exits with code 2, so a user
never sees a traceback for their own mistake; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RevrelError(Exception):
    """A problem the user can fix. The message names the problem and the fix, on one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
