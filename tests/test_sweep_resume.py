"""The Release sweep resumes by its rows' identity, and its grid splits edit lists at the top level only."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    from release_sweep import at_budget, done_keys, grid_points, settings_of
finally:
    sys.path.pop(0)


def test_settings_keep_values_with_equals_signs():
    assert settings_of(["release.retain_from=task", "reveal.oracle=a=b"]) == {"release.retain_from": "task", "reveal.oracle": "a=b"}


def test_done_keys_name_each_written_point_and_nothing_else(tmp_path):
    out = tmp_path / "sweep.jsonl"
    assert done_keys(out, "strength") == set()
    rows = [{"settings": settings_of(["release.pem.rank=8"]), "unit": "word", "strength": 1.0},
            {"settings": settings_of(["release.pem.rank=4"]), "unit": "task", "strength": 2.0}]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert done_keys(out, "strength") == {(json.dumps({"release.pem.rank": "8"}), 1.0), (json.dumps({"release.pem.rank": "4"}), 2.0)}
    both = done_keys(out, "unit", "strength")
    assert (json.dumps({"release.pem.rank": "8"}), "word", 1.0) in both
    assert (json.dumps({"release.pem.rank": "8"}), "task", 1.0) not in both


def test_grid_splits_edit_lists_at_the_top_level():
    pts = grid_points(["release.edits=[{prune: {unit: task}}],[{suppress: {tokens: 5, strength: 2}}]", "seed=0,1"])
    assert pts == [["release.edits=[{prune: {unit: task}}]", "seed=0"], ["release.edits=[{prune: {unit: task}}]", "seed=1"],
                   ["release.edits=[{suppress: {tokens: 5, strength: 2}}]", "seed=0"], ["release.edits=[{suppress: {tokens: 5, strength: 2}}]", "seed=1"]]


def test_at_budget_interpolates_from_the_original():
    assert abs(at_budget([(0.02, 0.2), (0.08, 0.5)], 0.05) - (0.2 + 0.3 * 0.5)) < 1e-12
    assert abs(at_budget([(0.1, 0.4)], 0.05) - 0.2) < 1e-12  # from (0, 0)
    assert at_budget([(0.01, 0.1)], 0.05) is None
