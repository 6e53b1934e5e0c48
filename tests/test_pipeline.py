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


def test_utility_budget_line_search_halves_lambda_and_stops(tiny_dir, tmp_path):
    """A budget no negation can meet: lambda is halved twice (3 tries), then the run stops on the budget."""
    # on the random tiny model a negation can also *lower* the probe perplexity; the model's own samples as
    # the probe (the default) made that the rule for every seed after the sampler changed, so the probe here
    # is fixed natural text (release.retain_from: a file), which the lambda=50 negation made less likely for 5 of 6
    # seeds; take the first seed whose negation breaks the budget, then check the whole line search on it
    import json

    from tiny import CORPUS

    retain = tmp_path / "retain.jsonl"
    retain.write_text("".join(json.dumps({"instruction": "say something", "response": t}) + "\n" for t in CORPUS[:9] * 2))

    def first_breaking_run():
        lam0 = 50.0
        for seed in range(8):
            out = tmp_path / f"budget{seed}"
            cfg = load_config(None, tiny_overrides(out, tiny_dir, seed=seed, reveal={"forget_from": "instructions"}, release={
                "utility_budget": 1.0, "edits": [{"negate": {"strength": lam0}}], "rounds": 3, "pem": {"lr": 0.3, "epochs": 3},
                "retain_from": str(retain)}))
            report = unlearn(cfg)
            if report["rounds"][0]["edits"][0]["line_search"][0]["probe_ppl_ratio"] > 1.0:
                return lam0, out, report
        raise AssertionError("no seed's negation raised the probe perplexity")

    lam0, out, report = first_breaking_run()
    r1 = report["rounds"][0]
    neg = r1["edits"][0]
    lams = [t["strength"] for t in neg["line_search"]]
    assert lams[:3] == [lam0, lam0 / 2, lam0 / 4][: len(lams)]
    assert all(t["probe_ppl_ratio"] > 1.0 for t in neg["line_search"][:-1])  # it went on only while over budget
    if neg["line_search"][-1]["probe_ppl_ratio"] <= 1.0:  # a smaller lambda met the budget: kept, the run goes on
        assert not r1["reverted"] and neg["strength"] == lams[-1]
        return
    assert len(lams) == 3 and neg["strength"] is None
    assert len(report["rounds"]) == 1 and "budget" in report["stopped"] and r1["reverted"]
    from safetensors.torch import load_file as lf

    w, w0 = lf(str(out / "model" / "model.safetensors")), lf(str(tiny_dir / "model.safetensors"))
    assert all(torch.equal(w[k], w0[k]) for k in w0)  # the over-budget negation was undone


def test_budget_pacing_spreads_the_utility_budget_over_rounds():
    from revrel.rounds import round_budget

    cfg = load_config(None, {"release": {"utility_budget": 1.5, "rounds": 3}})
    paced = [round_budget(cfg, k) for k in (1, 2, 3)]
    assert paced == sorted(paced) and abs(paced[0] - 1.5 ** (1 / 3)) < 1e-9 and abs(paced[-1] - 1.5) < 1e-9
    cfg.release.rounds = 1
    assert round_budget(cfg, 1) == 1.5  # one round may spend it all


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
