import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from revrel.config import load_config
from revrel.errors import RevrelError
from revrel.io import read_jsonl
from revrel.pipeline import unlearn

from tiny import tiny_overrides

HELPER = Path(__file__).parent / "helpers" / "run_tiny.py"


def test_unlearn_end_to_end_writes_artifacts(tiny_dir, tmp_path):
    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir)))
    for p in ("model/model.safetensors", "model/config.json", "adapters/round_1/adapter_model.safetensors", "adapters/retain",
              "forget.jsonl", "report.json", "config.yaml", "candidates.jsonl"):
        assert (out / p).exists(), p
    rows = read_jsonl(out / "forget.jsonl")
    assert rows and {"instruction", "response", "relevance", "round"} <= set(rows[0])
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert report["rounds"][1]["edits"][0]["orth_final"] is not None  # round 2 was kept orthogonal to round 1 + retain
    assert report["final_reveal"]["after_round"] == 2 and 0.0 <= report["final_reveal"]["revealed_relevance"] <= 1.0
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(out / "model")  # plain transformers reloads the result
    orig = AutoModelForCausalLM.from_pretrained(tiny_dir)
    diff = [n for (n, a), (_, b) in zip(m.named_parameters(), orig.named_parameters()) if not torch.equal(a, b)]
    assert diff and all(any(t in n for t in ("q_proj", "v_proj", "up_proj", "down_proj")) for n in diff)


def test_existing_out_refused_without_flag(tiny_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RevrelError, match="--resume"):
        unlearn(load_config(None, tiny_overrides(out, tiny_dir)))
    assert (out / "keep.txt").read_text() == "mine"


def _run(out, model, *extra, kill_at=None):
    env = dict(os.environ, REVREL_KILL_AT=kill_at or "", TQDM_DISABLE="1")
    return subprocess.run([sys.executable, str(HELPER), str(out), str(model), *extra], env=env, capture_output=True, text=True, timeout=300)


def _final(out):
    rep = json.loads((out / "report.json").read_text())
    def strip(r: dict) -> dict:  # timings differ between runs; each edit's training log carries its seconds
        out = {k: v for k, v in r.items() if "seconds" not in k and k != "train"}
        if "edits" in out:
            out["edits"] = [strip(e) for e in out["edits"]]
        return out

    weights = load_file(str(out / "model" / "model.safetensors"))
    return [strip(r) for r in rep["rounds"]], strip(rep["after"]), weights, (out / "forget.jsonl").read_text()


@pytest.mark.parametrize("kill_at", ["round2:reveal", "round2:negate", "round2:prepared", "round2:save", "round2:saved"])
def test_sigkill_mid_round2_then_resume_equals_uninterrupted(tiny_dir, tmp_path, kill_at):
    ref, run = tmp_path / "ref", tmp_path / "killed"
    assert _run(ref, tiny_dir).returncode == 0
    killed = _run(run, tiny_dir, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    progress = json.loads((run / "progress.json").read_text())
    assert progress["completed_rounds"] == 1
    resumed = _run(run, tiny_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rounds_a, after_a, w_a, forget_a = _final(ref)
    rounds_b, after_b, w_b, forget_b = _final(run)
    assert [r["round"] for r in rounds_b] == [1, 2]  # nothing lost, nothing duplicated
    assert rounds_a == rounds_b and after_a == after_b and forget_a == forget_b
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)


def test_budget_line_search_lowers_lambda_and_an_unmeetable_budget_undoes_the_edit_and_stops(tiny_dir, tmp_path):
    """A budget of 1e-4 nats/token: lambda is lowered while the keep-side cost is over it (3 tries); where no try
    meets it the negation is undone, the weights are the original's and the run stops on the budget."""

    def first_breaking_run():
        for seed in range(6):
            out = tmp_path / f"budget{seed}"
            cfg = load_config(None, tiny_overrides(out, tiny_dir, seed=seed, reveal={"forget_from": "instructions"}, release={
                "budget": 1e-4, "line_search": 3, "edits": [{"negate": {"strength": 50.0}}], "rounds": 3, "pem": {"lr": 0.3, "epochs": 3}}))
            report = unlearn(cfg)
            if report["rounds"][0]["edits"][0]["line_search"][0]["keep_cost"] > 1e-4:
                return out, report
        raise AssertionError("no seed's negation raised the keep-side NLL")

    out, report = first_breaking_run()
    r1 = report["rounds"][0]
    neg = r1["edits"][0]
    lams = [t["strength"] for t in neg["line_search"]]
    over = [t["keep_cost"] > 1e-4 for t in neg["line_search"]]
    assert lams[0] == 50.0 and all(b < a for a, b in zip(lams, lams[1:])) and all(over[:-1])  # lowered only while over budget
    if not over[-1]:  # a smaller lambda met the budget: kept, the run goes on
        assert not r1["reverted"] and neg["strength"] == lams[-1]
        return
    assert len(lams) == 3 and neg["strength"] is None
    assert len(report["rounds"]) == 1 and "budget" in report["stopped"] and r1["reverted"]
    from safetensors.torch import load_file as lf

    w, w0 = lf(str(out / "model" / "model.safetensors")), lf(str(tiny_dir / "model.safetensors"))
    assert all(torch.equal(w[k], w0[k]) for k in w0)  # the over-budget negation was undone


def test_budget_pacing_spreads_the_budget_over_rounds_and_edits():
    from revrel.rounds import edit_limits, round_budget

    cfg = load_config(None, {"task": "tiny", "release": {"budget": 0.06, "rounds": 3}})
    paced = [round_budget(cfg, k) for k in (1, 2, 3)]
    assert paced == pytest.approx([0.02, 0.04, 0.06])
    assert edit_limits(cfg, 2, 2) == pytest.approx([0.03, 0.04])  # round 2's new 0.02, half to the first edit
    cfg.release.rounds = 1
    assert round_budget(cfg, 1) == 0.06 and edit_limits(cfg, 1, 2) == pytest.approx([0.03, 0.06])  # one round may spend it all



def test_probe_rounds_scores_each_kept_round_against_the_original(tiny_dir, tmp_path):
    """eval.probe_rounds: each round's probe change is paired against the original, so after the last
    round (merged, final model) it equals the after-evaluation's change exactly."""
    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, eval={"probe_rounds": True})))
    kept = [r for r in report["rounds"] if r.get("kept_any") and not r["reverted"]]
    assert kept and all("eval_probe" in r for r in kept)
    last, after = kept[-1]["eval_probe"], report["after"]["probes"]["change"]
    assert last["target"]["change"] == pytest.approx(after["target"]["change"], abs=1e-6)
    assert last["utility"]["change"] == pytest.approx(after["utility"]["change"], abs=1e-6)
    assert last["target"]["change"] != 0.0  # the negation moved the probe


def test_probe_rounds_without_probes_is_a_clear_error(tiny_dir, tmp_path):
    with pytest.raises(RevrelError, match="probe_rounds"):
        unlearn(load_config(None, tiny_overrides(tmp_path / "run", tiny_dir, eval={"probe_rounds": True, "probes": False})))


def test_rounds_stop_when_revealed_relevance_stops_falling(tiny_dir, tmp_path):
    """The paper's stop rule: round 2's Reveal (on the model round 1 edited) finds relevance no lower than round 1's,
    so round 2 releases nothing and the run stops there, well before its 4-round cap; off, the run goes on."""
    over = tiny_overrides(tmp_path / "on", tiny_dir, seed=1, release={"rounds": 4, "stop_on_plateau": True})
    report = unlearn(load_config(None, over))
    rel = [e["revealed_relevance"] for e in report["rounds"]]
    assert len(rel) == 2 and rel[1] >= rel[0] and "stopped falling" in report["stopped"]
    assert "edits" in report["rounds"][0] and "edits" not in report["rounds"][1]
    assert report.get("final_reveal") is None  # round 2's Reveal already saw the final model
    off = unlearn(load_config(None, tiny_overrides(tmp_path / "off", tiny_dir, seed=1, release={"rounds": 3})))
    assert [e["round"] for e in off["rounds"]] == [1, 2, 3] and all("edits" in e for e in off["rounds"])


def test_reveal_after_off_skips_the_final_reveal(tiny_dir, tmp_path):
    """eval.reveal_after=false: no Reveal on the final model (no 'final_reveal' in the report, no final folder)."""
    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1}, eval={"reveal_after": False})))
    assert report["rounds"] and report["rounds"][-1]["kept_any"]
    assert report.get("final_reveal") is None and not (out / "rounds" / "final").exists()
