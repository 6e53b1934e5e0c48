"""The original model's evaluation is cached by content (weights, code, settings), never by path or luck."""

import json

import torch

from revrel import evalcache
from revrel.config import load_config
from revrel.pipeline import unlearn

from tiny import tiny_overrides


def _run(tmp_path, tiny_dir, name, **extra):
    return unlearn(load_config(None, tiny_overrides(tmp_path / name, tiny_dir, release={"rounds": 1}, **extra)))


def _strip(before: dict) -> dict:
    return {k: v for k, v in before.items() if k not in ("seconds", "seconds_generation", "cached")}


def test_second_run_reuses_the_original_evaluation_and_other_settings_miss(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("REVREL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REVREL_EVAL_CACHE", "on")
    first = _run(tmp_path, tiny_dir, "a")
    assert "cached" not in first["before"]
    entries = list((tmp_path / "cache" / "before").glob("*.json"))
    assert len(entries) == 1
    second = _run(tmp_path, tiny_dir, "b")
    assert second["before"]["cached"]["key"] == entries[0].stem
    assert _strip(second["before"]) == _strip(first["before"])
    other_seed = _run(tmp_path, tiny_dir, "c", seed=1)
    assert "cached" not in other_seed["before"]
    other_eval = _run(tmp_path, tiny_dir, "d", eval={"probe_items": 3})
    assert "cached" not in other_eval["before"]
    assert len(list((tmp_path / "cache" / "before").glob("*.json"))) == 3


def test_a_broken_entry_is_a_miss_and_is_rewritten(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("REVREL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REVREL_EVAL_CACHE", "on")
    _run(tmp_path, tiny_dir, "a")
    (entry,) = (tmp_path / "cache" / "before").glob("*.json")
    entry.write_text("{not json")
    again = _run(tmp_path, tiny_dir, "b")
    assert "cached" not in again["before"]
    assert json.loads(entry.read_text())["probe_items"] == again["before"]["probe_items"]


def test_off_disables_and_weights_not_paths_make_the_key(tiny, monkeypatch):
    monkeypatch.setenv("REVREL_EVAL_CACHE", "off")
    assert evalcache.cache_root() is None
    monkeypatch.delenv("REVREL_EVAL_CACHE")
    monkeypatch.setenv("REVREL_CACHE", "/somewhere")
    assert str(evalcache.cache_root()) == "/somewhere"  # the folder converted GGUF models go to
    settings = {"task": "tiny", "seed": 0}
    k0 = evalcache.key(tiny.model, tiny.tokenizer, settings)
    assert evalcache.key(tiny.model, tiny.tokenizer, settings) == k0
    assert evalcache.key(tiny.model, tiny.tokenizer, {"task": "tiny", "seed": 1}) != k0
    with torch.no_grad():
        p = next(tiny.model.parameters())
        p.view(-1)[0] += 1e-3  # one weight of one tensor
    assert evalcache.key(tiny.model, tiny.tokenizer, settings) != k0
