"""Find evaluation data: the full sets in a ``shared/data`` folder, else the packaged permissive slices.

Search order: ``$REVREL_DATA``, ``./shared/data``, ``../shared/data``, then files packaged with revrel
(permissive licenses only; CoNLL-2003 is never packaged).
"""

from __future__ import annotations

import os
from pathlib import Path

from revrel.errors import RevrelError

PACKAGED = Path(__file__).resolve().parent


def data_roots() -> list[Path]:
    roots = [Path(p) for p in [os.environ.get("REVREL_DATA", "")] if p]
    roots += [Path.cwd() / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return roots


def find_data(relpath: str, packaged: str | None = None) -> Path:
    """Path of ``relpath`` under the first data root that has it, else the packaged copy."""
    for root in data_roots():
        if (root / relpath).exists():
            return root / relpath
    if packaged and (PACKAGED / packaged).exists():
        return PACKAGED / packaged
    where = ", ".join(str(r) for r in data_roots())
    raise RevrelError(f"data file {relpath} not found (looked in {where}); set REVREL_DATA to a folder holding it")
