"""One switch for every progress bar revrel draws (``-q`` turns them all off).

Call sites pass ``disable=`` for their own reasons (a single batch needs no bar); an explicit
``disable=False`` would override tqdm's ``TQDM_DISABLE`` environment default, which is why ``-q``
used to leave the bars on. Here the quiet switch always wins.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) revrel's bars, transformers' and huggingface_hub's."""
    global _QUIET
    _QUIET = quiet
    if not quiet:  # restore: the variables also reach child processes (a test, a sandbox) through os.environ
        for var in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ.pop(var, None)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass


def quiet() -> bool:
    return _QUIET or os.environ.get("TQDM_DISABLE", "") not in ("", "0")


def progress_bar(iterable=None, *, disable: bool = False, leave: bool = False, **kwargs):
    """``tqdm`` that stays silent when revrel runs quietly, whatever the call site asks."""
    return tqdm(iterable, disable=disable or quiet(), leave=leave, **kwargs)
