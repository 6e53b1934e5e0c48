import json
import os
from pathlib import Path

import pytest
import torch

from revrel.commands.attacks import attack_run, quantize_rtn
from revrel.config import load_config
from revrel.errors import RevrelError
from revrel.pipeline import unlearn

from tiny import tiny_overrides


def test_rtn_quantization_error_shrinks_with_bits():
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 16, bias=False)
    w = lin.weight.detach().clone()
    errs = {}
    for bits in (8, 4):
        m = torch.nn.Sequential(torch.nn.Linear(128, 16, bias=False))
        m[0].weight.data.copy_(w)
        quantize_rtn(m, bits)
        errs[bits] = float((m[0].weight - w).abs().max())
        assert len(torch.unique(m[0].weight[0, :64])) <= 2**bits
    assert 0 < errs[8] < errs[4]


def test_attack_section_added_to_report(tiny_dir, tmp_path):
    out = tmp_path / "run"
    unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1})))
    res = attack_run(str(out), relearn_steps=2)
    assert {"int8", "int4", "relearn", "jailbreak", "paraphrase", "in-context"} <= set(res)
    rep = json.loads((out / "report.json").read_text())
    assert rep["attacks"]["metric"] == "mean_relevance" and rep["attacks"]["int8"]["value"] is not None


def test_probe_only_attacks_measure_how_much_of_the_target_change_comes_back(tiny_dir, tmp_path):
    """GGUF round trips and RTN quantization, scored on the probe: f32 GGUF takes nothing back (exact
    weights), quantization takes back some fraction; prompt attacks are skipped; unknown names fail."""
    from revrel.commands.attacks import gguf_round_trip
    from revrel.pipeline import load_run_model

    out = tmp_path / "run"
    unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1, "edits": [{"negate": {"strength": 4.0}}]})))
    res = attack_run(str(out), attacks=("gguf-q8_0", "int4", "jailbreak"), probe_only=True)
    assert "jailbreak" not in res and res["probe_target_change"] != 0
    for name in ("gguf-q8_0", "int4"):
        assert "value" not in res[name] and res[name]["probe_recovered"] is not None
        r = res[name]  # like with like: the original quantized the same way
        assert abs(r["probe_recovered_vs_quantized"] - (1 - (r["probe_target_change"] - r["probe_target_change_original_quantized"])
                                                         / res["probe_target_change"])) < 1e-9
    # the original really was quantized: 4-bit RTN moves it, and more than 8-bit GGUF does
    assert abs(res["int4"]["probe_target_change_original_quantized"]) > abs(res["gguf-q8_0"]["probe_target_change_original_quantized"]) > 0
    loaded = load_run_model(str(out))
    back = gguf_round_trip(loaded.model, loaded.tokenizer, "f32")
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), back.state_dict().values()))
    with pytest.raises(RevrelError, match="unknown attack"):
        attack_run(str(out), attacks=("gguf-q2",), probe_only=True)


def test_bench_runs_methods_side_by_side(tiny_dir, tmp_path, monkeypatch):
    from revrel.commands.bench import bench

    tests_dir = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", tests_dir + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("REVREL_PLUGINS", "tiny")
    over = tiny_overrides(tmp_path, tiny_dir)
    sets = [f"{sec}.{k}={v}" for sec in ("reveal", "release", "eval") for k, v in over[sec].items()] + ["release.rounds=1", "baseline.steps=2"]
    md = bench("tiny", ["revrel", "ga", "npo"], str(tmp_path / "bench"), ["--model", str(tiny_dir)] + [x for s in sets for x in ("--set", s)])
    text = md.read_text()
    assert "| revrel |" in text and "| ga |" in text and "| npo |" in text
    data = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert all(r["peak_rss_mb"] > 50 and r["wall_seconds"] > 0 for r in data["results"])
    assert (tmp_path / "bench" / "tradeoff.png").is_file()
