"""docs/results.md is generated from benchmarks/results/ (benchmarks/build_results.py): a results file
changed without rebuilding the document fails here, so the document always describes the files."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_results_doc_matches_the_results_files():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import build_results
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert (ROOT / "docs" / "results.md").read_text() == build_results.build(), "run: python benchmarks/build_results.py"


def test_findings_sections_name_sources_the_builder_knows():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import build_results
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    known = set(build_results.SECTIONS) | {"summary"} | {p.name for p in (ROOT / "benchmarks" / "results").iterdir() if p.is_dir()}
    unknown = set(build_results.findings()) - known
    assert not unknown, f"FINDINGS.md sections with no matching results: {sorted(unknown)}"
