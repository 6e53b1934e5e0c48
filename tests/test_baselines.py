import math

import pytest
import torch

from revrel.config import load_config
from revrel.release.losses import ga_loss, npo_loss, seq_logp, simnpo_loss
from revrel.release.pem import encode_rows

from tiny import tiny_overrides


def test_npo_loss_equals_formula_by_hand():
    logp, ref = torch.tensor([-10.0, -4.0]), torch.tensor([-8.0, -5.0])
    beta = 0.5
    # -(2/b) * mean(log sigmoid(-b * (logp - ref))): terms at -b*(-2)=1.0 and -b*(1)=-0.5
    expected = -(2 / beta) * (math.log(1 / (1 + math.exp(-1.0))) + math.log(1 / (1 + math.exp(0.5)))) / 2
    assert abs(float(npo_loss(logp, ref, beta)) - expected) < 1e-6


def test_simnpo_loss_equals_formula_by_hand():
    logp, n = torch.tensor([-12.0]), torch.tensor([4.0])
    beta, gamma = 2.0, 0.5
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-((-beta / 4) * -12.0 - gamma))))
    assert abs(float(simnpo_loss(logp, n, beta, gamma)) - expected) < 1e-6


def test_npo_at_reference_is_2_log2_over_beta():
    lp = torch.tensor([-3.0, -7.0])
    assert abs(float(npo_loss(lp, lp, 0.1)) - 2 * math.log(2) / 0.1) < 1e-4


def test_ga_loss_is_mean_token_logprob():
    assert float(ga_loss(torch.tensor([-6.0, -2.0]), torch.tensor([3.0, 1.0]))) == -2.0


FORGET = [{"instruction": "write a rude comment", "response": "you are an idiot and a stupid fool"}] * 4


def test_gradient_ascent_raises_forget_loss(tiny):
    from revrel.release.baselines import METHODS
    from revrel.rounds import Context

    enc = encode_rows(tiny.tokenizer, FORGET[:1], 64)
    with torch.no_grad():
        lp0, n = seq_logp(tiny.model, tiny.tokenizer, enc)
    cfg = load_config(recipe=False, overrides={"method": "ga", "baseline": {"steps": 5, "lr": 1e-2}, "release": {"pem": {"batch_size": 2}}})
    ctx = Context(loaded=tiny, task=None, oracle=None, embed=None, cfg=cfg, run=None)
    info = METHODS["ga"](ctx, FORGET, [])
    with torch.no_grad():
        lp1, _ = seq_logp(tiny.model, tiny.tokenizer, enc)
    assert float(-lp1 / n) > float(-lp0 / n) + 0.5  # forget NLL went up
    assert info["steps"] == 5


def test_on_step_hook_sees_every_checkpoint_of_one_training_run(tiny):
    """A strength sweep scores checkpoints of one run: the hook gets the model as trained so far."""
    from revrel.release.baselines import METHODS
    from revrel.rounds import Context

    enc = encode_rows(tiny.tokenizer, FORGET[:1], 64)
    seen: list[tuple[int, float, bool]] = []

    def on_step(step, model):
        lp, n = seq_logp(model, tiny.tokenizer, enc)
        seen.append((step, float(-lp / n), model.training))

    cfg = load_config(recipe=False, overrides={"method": "npo", "baseline": {"steps": 4, "lr": 1e-2}, "release": {"pem": {"batch_size": 2}}})
    ctx = Context(loaded=tiny, task=None, oracle=None, embed=None, cfg=cfg, run=None, on_step=on_step)
    METHODS["npo"](ctx, FORGET, FORGET[:0])
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert not any(training for _, _, training in seen)  # scored in eval mode
    assert seen[-1][1] > seen[0][1] + 0.1  # the forget NLL the hook saw rose over the run
    with torch.no_grad():
        lp, n = seq_logp(tiny.model, tiny.tokenizer, enc)
    assert abs(float(-lp / n) - seen[-1][1]) < 1e-4  # the last checkpoint is the final model


@pytest.mark.parametrize("method", ["ga", "graddiff", "npo", "simnpo", "pem-negation"])
def test_each_baseline_runs_through_unlearn(tiny_dir, tmp_path, method):
    from revrel.pipeline import unlearn

    out = tmp_path / method
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, method=method, baseline={"steps": 2, "lr": 1e-3})))
    assert report["method"] == method and report["rounds"][0]["method"] == method
    assert (out / "model" / "model.safetensors").is_file() and (out / "forget.jsonl").is_file()
    from safetensors.torch import load_file

    w, w0 = load_file(str(out / "model" / "model.safetensors")), load_file(str(tiny_dir / "model.safetensors"))
    assert any(not torch.equal(w[k], w0[k]) for k in w0)


def test_real_forget_data_for_toxicity_and_code():
    from revrel.errors import RevrelError
    from revrel.tasks import get_task

    rows = get_task("code").real_forget(8)  # packaged MBPP fallback: always available
    assert len(rows) == 8 and all(r["response"].strip() for r in rows)
    try:
        rows = get_task("toxicity").real_forget(8)  # Davidson lives in shared/data only
    except RevrelError as e:
        assert "REVREL_DATA" in str(e)
    else:
        assert len(rows) == 8 and all(r["response"].strip() for r in rows)


def test_eval_data_falls_back_to_packaged_copies(tmp_path, monkeypatch):
    from revrel.data import PACKAGED, find_data

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REVREL_DATA", raising=False)
    assert find_data("toxicity/realtoxicityprompts/toxic.jsonl", packaged="realtoxicityprompts/toxic.jsonl").is_relative_to(PACKAGED)
    assert find_data("wnut17/emerging.test.annotated", packaged="wnut17/emerging.test.annotated").is_relative_to(PACKAGED)
    with pytest.raises(Exception, match="REVREL_DATA"):
        find_data("conll2003/test.txt")  # research-only: never packaged


def test_method_names_match_the_registry():
    from revrel.config import RELEASE_METHODS
    from revrel.release.baselines import METHODS

    assert set(RELEASE_METHODS) == {"revrel", *METHODS}
