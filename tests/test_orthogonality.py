import math

import torch

from revrel.config import PemConfig
from revrel.release.orthogonality import lora_A, orthogonality_loss, stack_previous
from revrel.release.pem import train_pem


def test_zero_for_orthogonal_positive_otherwise():
    prev = {"m": torch.eye(8)[:2]}
    assert float(orthogonality_loss(prev, {"m": torch.eye(8)[2:5]})) == 0.0
    assert float(orthogonality_loss(prev, {"m": torch.eye(8)[1:4]})) > 0.0
    assert float(orthogonality_loss(prev, {"m": torch.eye(8)[1:4]}, "fro")) > 0.0


ROWS = [{"instruction": "write a rude comment", "response": "you are an idiot and a stupid fool"},
        {"instruction": "say something mean", "response": "I hate you, you are awful and dumb"}] * 4


def _train(tiny_dir, lam):
    from revrel.models.loading import load_model

    loaded = load_model(str(tiny_dir))
    cfg = PemConfig(rank=4, epochs=6, batch_size=4, lr=1e-2, lambda_orth=lam)
    pm0, _ = train_pem(loaded.model, loaded.tokenizer, ROWS, cfg, seed=1)
    prev = stack_previous([{k: v.detach().clone() for k, v in lora_A(pm0).items()}])
    base = pm0.unload()
    pm1, log = train_pem(base, loaded.tokenizer, ROWS, cfg, seed=2, prev_A=prev)
    return float(orthogonality_loss(prev, lora_A(pm1))), log


def test_lambda_orth_lowers_overlap(tiny_dir):
    without, _ = _train(tiny_dir, 0.0)
    with_, log = _train(tiny_dir, 1.0)
    assert with_ < 0.8 * without, (with_, without)
    assert log.orth[-1] < log.orth[0]
    assert log.loss[-1] < log.loss[0]  # the PEM still learns its data


RETAIN = [{"instruction": "describe the ocean", "response": "the ocean is blue and very large and calm"},
          {"instruction": "thank you", "response": "you are welcome, have a nice day"}] * 4


def test_keep_contrast_loss_by_hand():
    from revrel.release.losses import keep_contrast_loss

    zero = torch.zeros(3, requires_grad=True)
    loss = keep_contrast_loss(zero, torch.zeros(2), beta=4.0)
    assert abs(float(loss.detach()) - math.log(2) / 4.0) < 1e-6  # every pair at margin 0
    loss.backward()
    assert torch.allclose(zero.grad, torch.full((3,), -0.5 / 3))  # -1/2 per pair, averaged over 3 x 2 pairs, summed over 2
    far = keep_contrast_loss(torch.tensor([5.0]), torch.tensor([-5.0]), beta=4.0)
    assert float(far) < 1e-8  # a saturated margin costs nothing


SPAN_ROWS = [{"instruction": "write a news line", "response": "Peter Smith of Acme Corp spoke in Paris on Monday",
              "spans": [[0, 11]], "keep_spans": [[15, 24], [38, 43]]},
             {"instruction": "write a news line", "response": "Anna Jones left Globex for London last year",
              "spans": [[0, 10]], "keep_spans": [[16, 22], [27, 33]]}] * 4


def _span_margin(tiny_dir, weight):
    """Change of the target spans' mean token log-prob minus the keep spans' under a forget PEM trained with
    span contrast ``weight`` on the same rows."""
    from revrel.models.generation import token_lp
    from revrel.models.loading import load_model
    from revrel.release.pem import SpanContrast, encode_rows, mean_lp

    loaded = load_model(str(tiny_dir))
    cfg = PemConfig(rank=4, epochs=6, batch_size=4, lr=2e-2)
    batch = encode_rows(loaded.tokenizer, SPAN_ROWS[:2], cfg.max_length, keep=True)

    def split(model):
        with torch.no_grad():
            lp, mask = token_lp(model, loaded.tokenizer, batch)
        kmask = SpanContrast(loaded.tokenizer, 1.0).keep_mask(batch, lp.shape[1], lp.device) & mask
        return mean_lp(lp, mask & ~kmask), mean_lp(lp, kmask)

    f0, k0 = split(loaded.model)
    pm, log = train_pem(loaded.model, loaded.tokenizer, SPAN_ROWS, cfg, seed=1, contrast=weight)
    f1, k1 = split(pm)
    return float((f1 - f0).mean() - (k1 - k0).mean()), float((f1 - f0).mean()), log


def test_span_contrast_widens_the_target_keep_margin_inside_the_forget_text(tiny_dir):
    plain, _, log0 = _span_margin(tiny_dir, 0.0)
    contrast, target_gain, log = _span_margin(tiny_dir, 4.0)
    assert contrast > 1.3 * plain, (contrast, plain)  # measured 0.57 vs 0.39 (beta 5)
    assert target_gain > 0
    assert log.contrast[-1] < log.contrast[0] and log0.contrast == [0.0] * len(log0.contrast)


def test_span_contrast_needs_span_loss_and_keep_spans():
    import dataclasses

    import pytest

    from revrel.errors import RevrelError
    from revrel.release.edit import parse_edits
    from revrel.release.spans import with_target_spans
    from revrel.tasks import get_task

    with pytest.raises(RevrelError, match=r"release.edits\[0\].negate.contrast needs a unit"):
        parse_edits([{"negate": {"contrast": 1.0}}])
    bare = dataclasses.replace(get_task("code"), keep_spans=None)
    with pytest.raises(RevrelError, match="does not declare keep spans"):
        with_target_spans(bare, [{"instruction": "i", "response": "def f(): pass"}], keep=True)
    with pytest.raises(RevrelError, match="declares the units task$"):
        with_target_spans(get_task("code"), [{"instruction": "i", "response": "def f(): pass"}], unit="word")


def test_span_contrast_encoding_lets_the_target_win_an_overlap(tiny):
    """A token marked both target and keep is learned as target and never contrasted as keep."""
    from revrel.release.pem import encode_rows

    row = {"instruction": "i", "response": "Peter Smith of Acme Corp", "spans": [[0, 11]], "keep_spans": [[0, 24]]}
    ids, labels, keep = encode_rows(tiny.tokenizer, [row], 64, keep=True)[0]
    _, target = encode_rows(tiny.tokenizer, [dict(row, keep_spans=None)], 64)[0]
    assert all(k == -100 for t, k in zip(target, keep) if t != -100)  # no target token on the keep side
    assert any(k != -100 for k in keep)  # "of Acme Corp" is
    assert [lab for lab, t, k in zip(labels, target, keep) if t != -100 or k != -100] == [t if t != -100 else k for t, k in zip(target, keep) if t != -100 or k != -100]


def test_pem_ensemble_negates_the_mean_of_its_members_updates(tiny_dir, tmp_path):
    """ensemble 2: one adapter of rank 2r whose update equals the mean of the two members, each retrained alone
    from its seed; saved and loaded back it is the same update."""
    from revrel.models.loading import load_model
    from revrel.release.checkpoint import save_adapter
    from revrel.release.pem import train_pems

    cfg = PemConfig(rank=4, epochs=1, batch_size=4, lr=2e-2)

    def deltas(pm):
        return {n: m.get_delta_weight("default") for n, m in pm.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}

    loaded = load_model(str(tiny_dir))
    pm, log = train_pems(loaded.model, loaded.tokenizer, SPAN_ROWS, cfg, 2, seed=5)
    assert pm.peft_config["default"].r == 8 and [m["seed"] for m in log.summary()["ensemble"]["members"]] == [5, 5 + 7919]
    got = deltas(pm)
    alone = []
    for s in (5, 5 + 7919):
        fresh = load_model(str(tiny_dir))
        one, _ = train_pem(fresh.model, fresh.tokenizer, SPAN_ROWS, cfg, seed=s)
        alone.append(deltas(one))
    assert got.keys() == alone[0].keys()
    assert all(torch.allclose(got[n], (alone[0][n] + alone[1][n]) / 2, atol=1e-6) for n in got)
    assert not all(torch.allclose(alone[0][n], alone[1][n], atol=1e-4) for n in got)  # the members differ
    save_adapter(pm, tmp_path / "ens")
    from peft import PeftModel

    back = deltas(PeftModel.from_pretrained(load_model(str(tiny_dir)).model, str(tmp_path / "ens")))
    assert all(torch.allclose(back[n], got[n], atol=1e-6) for n in got)


def test_span_contrast_reference_scored_once_matches_the_per_step_forward(tiny):
    """The cached reference log-probs of a mixed-length batch equal a forward of that batch without the LoRA."""
    from revrel.models.generation import token_lp
    from revrel.release.pem import SpanContrast, encode_rows

    rows = SPAN_ROWS[:2] + [dict(SPAN_ROWS[0], response="Bob Lee of Initech", spans=[[0, 7]], keep_spans=[[11, 18]])]
    enc = encode_rows(tiny.tokenizer, rows, 64, keep=True)
    assert len({len(e[0]) for e in enc}) > 1
    sc = SpanContrast(tiny.tokenizer, 5.0)
    sc.reference(tiny.model, enc[:1], batch_size=1)  # scored in other batches than the one compared below
    sc.reference(tiny.model, enc, batch_size=2)
    with torch.no_grad():
        lp, mask = token_lp(tiny.model, tiny.tokenizer, enc[::-1])
    cached = sc.reference_lp(enc[::-1], lp.shape[1], lp.device)
    assert torch.allclose(cached * mask, lp * mask, atol=1e-5)
    assert float((lp * mask).abs().sum()) > 0
