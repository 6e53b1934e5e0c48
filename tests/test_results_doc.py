"""The docs describe the present: docs/results.md is what benchmarks/build_results.py makes of benchmarks/results/,
it and the README stay short, and docs/guide.md names every option a user can set."""

import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _build_results():
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("build_results")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_results_doc_matches_the_results_files():
    assert (ROOT / "docs" / "results.md").read_text() == _build_results().build(), "run: python benchmarks/build_results.py"


def test_docs_stay_short():
    assert len((ROOT / "README.md").read_text()) <= 12_000
    assert len((ROOT / "docs" / "results.md").read_text().splitlines()) <= 300


def test_the_guide_names_every_option():
    from revrel.config import BaselineConfig, EvalConfig, PemConfig, ReleaseConfig, RevealConfig, RunConfig
    from revrel.release.edit import edit_fields

    guide = (ROOT / "docs" / "guide.md").read_text()
    names = {f.name for c in (RunConfig, RevealConfig, ReleaseConfig, EvalConfig, BaselineConfig) for f in dataclasses.fields(c)}
    names |= {f"pem.{f.name}" for f in dataclasses.fields(PemConfig)} | {n for fs in edit_fields().values() for n in fs}
    names |= set(edit_fields())
    missing = sorted(n for n in names - {"reveal", "release", "baseline", "eval", "pem"} if f"`{n}`" not in guide and f"{n}`" not in guide)
    assert not missing, f"options the guide does not name: {missing}"
