"""Crash-safe file I/O: every artifact is written to a temp file in the same folder, fsynced and
renamed, so a reader (or a resumed run) sees either the old complete file or the new complete one,
never a torn one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from revrel.errors import RevrelError


def cache_dir() -> Path:
    """revrel's cache folder (converted GGUF models, cached evaluations): ``$REVREL_CACHE`` or ``~/.cache/revrel``."""
    return Path(os.environ.get("REVREL_CACHE") or Path.home() / ".cache" / "revrel")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path``, on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise RevrelError(f"could not write {path}: {exc.strerror or exc}; free disk space or pick another --out") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces ``path`` whole, on failure it is removed.

    Used for model, adapter and cache folders, so a reader never sees a half-written one.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        try:
            yield tmp
        except OSError as exc:
            raise RevrelError(f"could not write {what} {path}: {exc.strerror or exc}; free disk space or pick another --out") from exc
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
    atomic_write_text(path, text)


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = (), *, allow_empty: bool = False) -> list[dict]:
    """Read a JSONL file of objects, checking that each has the ``required`` string fields.

    Raises :class:`RevrelError` naming the file and line for anything malformed.
    """
    path = Path(path)
    required = tuple(required)
    if not path.is_file():
        raise RevrelError(f"{path}: no such file; check the path")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RevrelError(f"{path}: not UTF-8 text (byte {exc.start}); re-save the file as UTF-8") from exc
    rows: list[dict] = []
    # split on "\n" only: str.splitlines() also breaks on U+2028, U+0085, \x0c..., which JSON strings may hold raw
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise RevrelError(f"{path}:{lineno}: not valid JSON ({getattr(exc, 'msg', 'too deeply nested')}); fix or remove that line") from exc
        if not isinstance(row, dict):
            raise RevrelError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
        for field in required:
            if not isinstance(row.get(field), str):
                raise RevrelError(f"{path}:{lineno}: missing text field '{field}' (each line needs {', '.join(required)})")
        rows.append(row)
    if not rows and not allow_empty:
        raise RevrelError(f"{path}: file has no records; give a JSONL file with at least one line")
    return rows


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
