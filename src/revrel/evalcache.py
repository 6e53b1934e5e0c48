"""A cache of the original model's evaluation, so a second run on the same model does not repeat it.

Every run evaluates the model before it changes anything; for a given model, task, evaluation
config, seed and revrel code that evaluation is the same computation each time (on the default
model it is about half of a run's evaluation time). The key is a hash of everything the result
depends on: the weights themselves (not a path), the tokenizer's chat template and vocabulary,
every file of the installed revrel package (so any code change misses), torch and transformers
versions, and the run's task, target, eval and seed settings. Entries are plain JSON, written
atomically under ``before/`` of revrel's cache folder (``$REVREL_CACHE``, default ``~/.cache/revrel``, the
folder converted GGUF models also go to); ``REVREL_EVAL_CACHE=off`` disables it.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path

from revrel.io import atomic_write_json, cache_dir

PACKAGE = Path(__file__).resolve().parent


def cache_root() -> Path | None:
    """revrel's cache folder, or None when ``REVREL_EVAL_CACHE`` is off (0, off, false, no)."""
    if os.environ.get("REVREL_EVAL_CACHE", "").strip().lower() in ("0", "off", "false", "no"):
        return None
    return cache_dir()


@cache
def code_fingerprint() -> str:
    """Hash of every file of the revrel package (sources, recipes, packaged data)."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(PACKAGE)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def file_fingerprint(path: str | Path) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


def model_fingerprint(model, tokenizer) -> str:
    """Hash of the weights (names, shapes, dtypes, bytes) and of the tokenizer's vocabulary and chat template."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update((t.view(torch.uint8) if t.dtype == torch.bfloat16 else t).numpy())  # the buffer itself, no bytes copy
    h.update(str(len(tokenizer)).encode())
    h.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    return h.hexdigest()


def key(model, tokenizer, settings: dict) -> str:
    import torch
    import transformers

    parts = {"model": model_fingerprint(model, tokenizer), "code": code_fingerprint(), "torch": torch.__version__,
             "transformers": transformers.__version__, "settings": settings}
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def load(k: str) -> dict | None:
    root = cache_root()
    path = root / "before" / f"{k}.json" if root else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # a broken entry is a miss, never an error
        return None


def store(k: str, metrics: dict) -> None:
    root = cache_root()
    if root is None:
        return
    try:
        atomic_write_json(root / "before" / f"{k}.json", metrics)
    except OSError:  # a read-only or full cache disk must not fail the run
        pass
