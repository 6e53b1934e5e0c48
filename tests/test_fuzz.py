"""Property tests: no input makes the parsers fail with anything but RevrelError."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revrel.config import RunConfig, load_config, parse_set
from revrel.errors import RevrelError
from revrel.io import read_jsonl

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)


@SETTINGS
@given(st.binary(max_size=400))
def test_read_jsonl_random_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.jsonl"
        p.write_bytes(data)
        try:
            rows = read_jsonl(p, required=("instruction", "response"))
        except RevrelError as e:
            assert "\n" not in str(e)
        else:
            assert all(isinstance(r["instruction"], str) and isinstance(r["response"], str) for r in rows)


@SETTINGS
@given(st.lists(json_values, max_size=5))
def test_read_jsonl_random_json_lines(values):
    import json

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.jsonl"
        p.write_text("\n".join(json.dumps(v) for v in values))
        try:
            read_jsonl(p, required=("instruction",))
        except RevrelError:
            pass


@SETTINGS
@given(st.text(max_size=300))
def test_load_config_random_yaml_text(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_text(text, encoding="utf-8")
        try:
            cfg = load_config(p)
        except RevrelError:
            return
        assert isinstance(cfg, RunConfig)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["seed", "task", "reveal", "release", "eval", "dtype", "x"]),
                       json_values | st.dictionaries(st.sampled_from(["k", "lr", "rounds", "alpha", "candidates", "target_modules", "y"]), json_values, max_size=3),
                       max_size=4))
def test_load_config_random_structures(data):
    """A bad structure is an error that names the key it is about (or says keys must be strings)."""
    try:
        load_config(None, data)
    except RevrelError as e:
        msg = str(e)
        assert "\n" not in msg and (any(k in msg for k in data) or msg.startswith("config keys must be strings")), msg


edit_specs = st.lists(st.one_of(st.sampled_from(["negate", "prune", "suppress", "nope"]), json_values,
                                st.dictionaries(st.sampled_from(["negate", "prune", "suppress", "x"]),
                                                st.none() | st.dictionaries(st.sampled_from(["strength", "unit", "tokens", "contrast",
                                                                                              "ensemble", "layers", "lambda"]), json_values,
                                                                            max_size=3), max_size=2)), max_size=3)


@SETTINGS
@given(edit_specs)
def test_parse_edits_random_specs_name_the_entry(specs):
    """Any release.edits value either parses or fails with one line that names release.edits (and the entry)."""
    from revrel.release.edit import parse_edits

    try:
        edits = parse_edits(specs)
    except RevrelError as e:
        msg = str(e)
        assert "\n" not in msg and ("release.edits[" in msg or msg.startswith("release.edits must")), msg
    else:
        assert [e.name for e in edits] == [next(iter(s)) if isinstance(s, dict) else s for s in specs]


@SETTINGS
@given(st.lists(st.text(max_size=30), max_size=4))
def test_parse_set_random(items):
    try:
        over = parse_set(items)
        load_config(None, over)
    except RevrelError:
        pass


def test_jsonl_roundtrip_with_unicode_line_separators(tmp_path):
    from revrel.io import write_jsonl

    rows = [{"instruction": "a\u2028b", "response": "c\x85d\x0ce\u2029f\rg"}, {"instruction": "x", "response": "y"}]
    write_jsonl(tmp_path / "f.jsonl", rows)
    assert read_jsonl(tmp_path / "f.jsonl", required=("instruction", "response")) == rows


@SETTINGS
@given(st.lists(st.fixed_dictionaries({"instruction": st.text(max_size=20), "response": st.text(max_size=40)}), min_size=1, max_size=5))
def test_jsonl_roundtrip_any_text(rows):
    from revrel.io import write_jsonl

    with tempfile.TemporaryDirectory() as d:
        write_jsonl(Path(d) / "f.jsonl", rows)
        assert read_jsonl(Path(d) / "f.jsonl", required=("instruction", "response")) == rows
