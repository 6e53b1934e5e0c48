"""The Release sweep benches resume by their rows' identity: a point already in the file is not trained or scored again."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    from release_sweep import done_keys, settings_of
finally:
    sys.path.pop(0)


def test_settings_keep_values_with_equals_signs():
    assert settings_of(["release.span_loss=true", "release.target_modules=a=b"]) == {
        "release.span_loss": "true", "release.target_modules": "a=b"}


def test_done_keys_name_each_written_point_and_nothing_else(tmp_path):
    out = tmp_path / "sweep.jsonl"
    assert done_keys(out, "lambda") == set()
    rows = [{"settings": settings_of(["release.rank=8"]), "unit": "word", "lambda": 1.0},
            {"settings": settings_of(["release.rank=4"]), "unit": "task", "lambda": 2.0}]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert done_keys(out, "lambda") == {(json.dumps({"release.rank": "8"}), 1.0), (json.dumps({"release.rank": "4"}), 2.0)}
    both = done_keys(out, "unit", "lambda")
    assert (json.dumps({"release.rank": "8"}), "word", 1.0) in both
    assert (json.dumps({"release.rank": "8"}), "task", 1.0) not in both
