"""Dev and test splits of every evaluation set, in one place.

Settings (presets, sweeps, lambda choices) are tuned on ``dev`` only; ``test`` is for reporting and
is never selected on. Row ranges index the files as shipped in ``shared/data`` (and the packaged
copies, which keep the same row order):

| data | dev | test |
| --- | --- | --- |
| RealToxicityPrompts ``toxic.jsonl`` | rows 0-399 | rows 400-1195 |
| RealToxicityPrompts ``nontoxic.jsonl`` | rows 0-399 | rows 400-1199 |
| CoNLL-2003 | ``valid.txt`` | ``test.txt`` |
| WNUT-17 (NER fallback) | ``emerging.dev.conll`` | ``emerging.test.annotated`` |
| HumanEval | problems 0-99 | problems 100-163 |
| MBPP | task_id 11-510 (all of it is dev) | none |
| GSM8K ``test.jsonl`` | rows 0-599 | rows 600-1318 |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from revrel.errors import RevrelError

SPLITS_NAMES = ("dev", "test")

# dataset -> split -> (first row, end row or None for "to the end"); None: the split does not exist
ROWS: dict[str, dict[str, tuple[int, int | None] | None]] = {
    "rtp_toxic": {"dev": (0, 400), "test": (400, None)},
    "rtp_nontoxic": {"dev": (0, 400), "test": (400, None)},
    "humaneval": {"dev": (0, 100), "test": (100, None)},
    "mbpp": {"dev": (0, None), "test": None},
    "gsm8k": {"dev": (0, 600), "test": (600, None)},
}
# dataset -> split -> file name (relative to the dataset folder)
FILES: dict[str, dict[str, str]] = {
    "conll2003": {"dev": "valid.txt", "test": "test.txt"},
    "wnut17": {"dev": "emerging.dev.conll", "test": "emerging.test.annotated"},
}

T = TypeVar("T")


def check_split(split: str) -> str:
    if split not in SPLITS_NAMES:
        raise RevrelError(f"unknown split '{split}'; choose dev (tune on it) or test (report it)")
    return split


def select(dataset: str, rows: Sequence[T], split: str) -> list[T]:
    """The ``split`` rows of ``dataset``; an empty list where the split does not exist (MBPP test)."""
    check_split(split)
    span = ROWS[dataset][split]
    if span is None:
        return []
    return list(rows[span[0] : span[1]])


def split_file(dataset: str, split: str) -> str:
    return FILES[dataset][check_split(split)]
