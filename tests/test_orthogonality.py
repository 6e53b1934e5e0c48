import dataclasses
import math

import torch

from revrel.config import ReleaseConfig
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
    cfg = ReleaseConfig(rank=4, epochs=6, batch_size=4, lr=1e-2, target_modules=["q_proj", "v_proj"], lambda_orth=lam)
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


def _retain_shift(tiny_dir, weight, at=0.0, measure_at=None):
    """Mean squared change of the retain tokens' log-probs caused by a forget PEM trained with ``weight``
    (anchored at negation strength ``at``), measured on W + delta or, with ``measure_at``, on W - measure_at * delta."""
    from contextlib import nullcontext

    from revrel.models.generation import token_lp
    from revrel.models.loading import load_model
    from revrel.release.pem import encode_rows, lora_scaled

    loaded = load_model(str(tiny_dir))
    cfg = ReleaseConfig(rank=4, epochs=6, batch_size=4, lr=2e-2, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                        retain_anchor=weight, anchor_lambda=at, train_dtype="float32")
    batch = encode_rows(loaded.tokenizer, RETAIN[:2], cfg.max_length)
    with torch.no_grad():
        lp0, mask = token_lp(loaded.model, loaded.tokenizer, batch)
    pm, log = train_pem(loaded.model, loaded.tokenizer, ROWS, cfg, seed=1, retain_rows=RETAIN)
    with torch.no_grad(), (lora_scaled(pm, -measure_at) if measure_at else nullcontext()):
        lp1, _ = token_lp(pm, loaded.tokenizer, batch)
    return float(((lp1 - lp0) ** 2 * mask).sum() / mask.sum()), log


def test_retain_anchor_lowers_the_retain_shift(tiny_dir):
    free, log0 = _retain_shift(tiny_dir, 0.0)
    anchored, log1 = _retain_shift(tiny_dir, 10.0)
    assert anchored < 0.5 * free, (anchored, free)
    assert log1.loss[-1] < log1.loss[0]  # the PEM still learns its forget data
    assert log1.anchor[0] == 0.0 and log0.anchor == [0.0] * len(log0.anchor)  # starts at the base model; off when weight 0


def test_negation_aware_anchor_protects_the_negated_model(tiny_dir):
    """Anchored at lambda=2, the PEM is cheap to negate at lambda=2: the retain tokens move far less
    on W - 2 delta than with no anchor, and less than with the first-order anchor on W + delta."""
    free, _ = _retain_shift(tiny_dir, 0.0, measure_at=2.0)
    first_order, _ = _retain_shift(tiny_dir, 10.0, at=0.0, measure_at=2.0)
    aware, log = _retain_shift(tiny_dir, 10.0, at=2.0, measure_at=2.0)
    assert aware < 0.5 * free and aware < first_order, (aware, first_order, free)
    assert log.loss[-1] < log.loss[0]


def test_lora_scaled_is_the_negated_merge(tiny_dir):
    """The anchor's view of the negated model (LoRA at scaling -lam) equals the merged W - lam * delta."""
    from revrel.models.generation import token_lp
    from revrel.models.loading import load_model
    from revrel.release.pem import encode_rows, lora_scaled
    from revrel.release.sweep import NegationSweep

    loaded = load_model(str(tiny_dir))
    cfg = ReleaseConfig(rank=4, epochs=2, batch_size=4, lr=2e-2, train_dtype="float32")
    pm, _ = train_pem(loaded.model, loaded.tokenizer, ROWS, cfg, seed=1)
    batch = encode_rows(loaded.tokenizer, RETAIN[:2], cfg.max_length)
    with torch.no_grad(), lora_scaled(pm, -1.5):
        scaled, mask = token_lp(pm, loaded.tokenizer, batch)
    with torch.no_grad():
        merged, _ = token_lp(NegationSweep(pm).set(1.5), loaded.tokenizer, batch)
    assert torch.allclose(scaled * mask, merged * mask, atol=1e-4)


def test_keep_contrast_loss_by_hand():
    from revrel.release.losses import keep_contrast_loss

    zero = torch.zeros(3, requires_grad=True)
    loss = keep_contrast_loss(zero, torch.zeros(2), beta=4.0)
    assert abs(float(loss.detach()) - math.log(2) / 4.0) < 1e-6  # every pair at margin 0
    loss.backward()
    assert torch.allclose(zero.grad, torch.full((3,), -0.5 / 3))  # -1/2 per pair, averaged over 3 x 2 pairs, summed over 2
    far = keep_contrast_loss(torch.tensor([5.0]), torch.tensor([-5.0]), beta=4.0)
    assert float(far) < 1e-8  # a saturated margin costs nothing


def _margin(tiny_dir, weight):
    """(change of the forget text's mean token log-prob) - (change of the keep text's) under a forget
    PEM trained with keep contrast ``weight``: what negation turns into selectivity."""
    from revrel.models.generation import token_lp
    from revrel.models.loading import load_model
    from revrel.release.pem import encode_rows, mean_lp

    loaded = load_model(str(tiny_dir))
    cfg = ReleaseConfig(rank=4, epochs=6, batch_size=4, lr=2e-2, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                        keep_contrast=weight, contrast_beta=2.0, train_dtype="float32")
    f, k = (encode_rows(loaded.tokenizer, rows[:2], cfg.max_length) for rows in (ROWS, RETAIN))
    with torch.no_grad():
        f0, k0 = (mean_lp(*token_lp(loaded.model, loaded.tokenizer, b)) for b in (f, k))
    pm, log = train_pem(loaded.model, loaded.tokenizer, ROWS, cfg, seed=1, retain_rows=RETAIN)
    with torch.no_grad():
        f1, k1 = (mean_lp(*token_lp(pm, loaded.tokenizer, b)) for b in (f, k))
    return float((f1 - f0).mean() - (k1 - k0).mean()), float((f1 - f0).mean()), log


def test_keep_contrast_widens_the_forget_keep_margin(tiny_dir):
    plain, _, log0 = _margin(tiny_dir, 0.0)
    contrast, forget_gain, log = _margin(tiny_dir, 4.0)
    assert contrast > 1.3 * plain, (contrast, plain)  # measured 0.59 vs 0.37
    assert forget_gain > 0  # the forget text is still learned, not only the keep text pushed down
    assert log.contrast[-1] < log.contrast[0] and log0.contrast == [0.0] * len(log0.contrast)


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
    cfg = ReleaseConfig(rank=4, epochs=6, batch_size=4, lr=2e-2, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                        span_loss=True, span_contrast=weight, contrast_beta=2.0, train_dtype="float32")
    batch = encode_rows(loaded.tokenizer, SPAN_ROWS[:2], cfg.max_length, keep=True)

    def split(model):
        with torch.no_grad():
            lp, mask = token_lp(model, loaded.tokenizer, batch)
        kmask = SpanContrast(loaded.tokenizer, 1.0).keep_mask(batch, lp.shape[1], lp.device) & mask
        return mean_lp(lp, mask & ~kmask), mean_lp(lp, kmask)

    f0, k0 = split(loaded.model)
    pm, log = train_pem(loaded.model, loaded.tokenizer, SPAN_ROWS, cfg, seed=1)
    f1, k1 = split(pm)
    return float((f1 - f0).mean() - (k1 - k0).mean()), float((f1 - f0).mean()), log


def test_span_contrast_widens_the_target_keep_margin_inside_the_forget_text(tiny_dir):
    plain, _, log0 = _span_margin(tiny_dir, 0.0)
    contrast, target_gain, log = _span_margin(tiny_dir, 4.0)
    assert contrast > 1.5 * plain, (contrast, plain)  # measured 0.69 vs 0.39
    assert target_gain > 0
    assert log.contrast[-1] < log.contrast[0] and log0.contrast == [0.0] * len(log0.contrast)


def test_span_contrast_needs_span_loss_and_keep_spans():
    import dataclasses

    import pytest

    from revrel.config import load_config
    from revrel.errors import RevrelError
    from revrel.release.loop import with_target_spans
    from revrel.tasks import get_task

    with pytest.raises(RevrelError, match="span_contrast needs release.span_loss"):
        load_config(None, {"task": "ner", "release": {"span_contrast": 1.0}})
    bare = dataclasses.replace(get_task("code"), keep_spans=None)
    with pytest.raises(RevrelError, match="does not declare keep spans"):
        with_target_spans(bare, [{"instruction": "i", "response": "def f(): pass"}], keep=True)
    with pytest.raises(RevrelError, match="declares the units task$"):
        with_target_spans(get_task("code"), [{"instruction": "i", "response": "def f(): pass"}], unit="word")
    with pytest.raises(RevrelError, match="span_unit needs release.span_loss"):
        load_config(None, {"task": "toxicity", "release": {"span_unit": "word"}})


def test_span_contrast_encoding_lets_the_target_win_an_overlap(tiny):
    """A token marked both target and keep is learned as target and never contrasted as keep."""
    from revrel.release.pem import encode_rows

    row = {"instruction": "i", "response": "Peter Smith of Acme Corp", "spans": [[0, 11]], "keep_spans": [[0, 24]]}
    ids, labels, keep = encode_rows(tiny.tokenizer, [row], 64, keep=True)[0]
    _, target = encode_rows(tiny.tokenizer, [dict(row, keep_spans=None)], 64)[0]
    assert all(k == -100 for t, k in zip(target, keep) if t != -100)  # no target token on the keep side
    assert any(k != -100 for k in keep)  # "of Acme Corp" is
    assert [lab for lab, t, k in zip(labels, target, keep) if t != -100 or k != -100] == [t if t != -100 else k for t, k in zip(target, keep) if t != -100 or k != -100]


TARGET_ONLY = [{"instruction": "write a news line", "response": "Peter Smith and Anna Jones met on Monday", "spans": [[0, 11], [16, 26]]}] * 8
KEEP_SIDE = [{"instruction": "write a news line", "response": "Acme Corp opened an office in Paris", "keep_spans": [[0, 9], [30, 35]]},
             {"instruction": "write a news line", "response": "Globex moved to London last year", "keep_spans": [[0, 6], [16, 22]]}]


def _keep_side_gain(tiny_dir, with_retain: bool):
    """(target-span gain, keep-side entity gain) in mean token log-prob under a forget PEM trained on rows
    that name only persons, with or without the keep side's entities joining span contrast."""
    from revrel.models.encoding import encode_pair
    from revrel.models.generation import token_lp
    from revrel.models.loading import load_model
    from revrel.release.pem import encode_rows, mean_lp

    loaded = load_model(str(tiny_dir))
    cfg = ReleaseConfig(rank=4, epochs=6, batch_size=4, lr=2e-2, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], span_loss=True,
                        span_contrast=4.0, span_contrast_retain=with_retain, contrast_beta=2.0, train_dtype="float32")
    tgt = encode_rows(loaded.tokenizer, TARGET_ONLY[:1], cfg.max_length)
    keep = [encode_pair(loaded.tokenizer, r["instruction"], r["response"], cfg.max_length, r["keep_spans"]) for r in KEEP_SIDE]

    def score(model):
        with torch.no_grad():
            return float(mean_lp(*token_lp(model, loaded.tokenizer, tgt)).mean()), float(mean_lp(*token_lp(model, loaded.tokenizer, keep)).mean())

    t0, k0 = score(loaded.model)
    pm, log = train_pem(loaded.model, loaded.tokenizer, TARGET_ONLY, cfg, seed=1, retain_rows=KEEP_SIDE)
    t1, k1 = score(pm)
    return t1 - t0, k1 - k0, log


def test_span_contrast_retain_brings_the_keep_side_entities_in_as_negatives(tiny_dir):
    import pytest

    from revrel.config import load_config
    from revrel.errors import RevrelError

    t_off, k_off, log_off = _keep_side_gain(tiny_dir, False)
    t_on, k_on, log_on = _keep_side_gain(tiny_dir, True)
    # without it the rows hold no keep spans, so there is nothing to contrast; with it the keep side is the negative
    assert log_off.contrast == [0.0] * len(log_off.contrast) and any(c != 0 for c in log_on.contrast)
    assert t_on > 0 and (t_on - k_on) > (t_off - k_off) + 0.15, (t_on, k_on, t_off, k_off)  # measured 0.73 vs 0.39
    with pytest.raises(RevrelError, match="span_contrast_retain needs release.span_contrast"):
        load_config(None, {"task": "ner", "release": {"span_loss": True, "span_contrast_retain": True}})


def test_pem_restarts_keeps_the_restart_whose_span_contrast_ends_lowest(tiny_dir):
    import pytest

    from revrel.config import load_config
    from revrel.errors import RevrelError
    from revrel.models.loading import load_model
    from revrel.release.pem import train_pem_restarts

    cfg = ReleaseConfig(rank=4, epochs=2, batch_size=4, lr=2e-2, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                        span_loss=True, span_contrast=4.0, contrast_beta=2.0, train_dtype="float32", pem_restarts=3)
    loaded = load_model(str(tiny_dir))
    pm, log = train_pem_restarts(loaded.model, loaded.tokenizer, SPAN_ROWS, cfg, seed=5)
    scores, kept = log.restarts["final_contrast"], log.restarts["kept"]
    assert len(scores) == 3 and len(set(scores)) == 3 and scores[kept] == min(scores)
    assert log.summary()["restarts"]["kept"] == kept
    # the returned PEM is the kept restart: retraining that seed alone gives the same LoRA weights
    fresh = load_model(str(tiny_dir))
    one, _ = train_pem(fresh.model, fresh.tokenizer, SPAN_ROWS, dataclasses.replace(cfg, pem_restarts=1), seed=5 + 7919 * kept)
    want = {n: p for n, p in one.named_parameters() if p.requires_grad}
    got = {n: p for n, p in pm.named_parameters() if p.requires_grad}
    assert want.keys() == got.keys() and all(torch.allclose(want[n], got[n], atol=1e-6) for n in want)
    with pytest.raises(RevrelError, match="pem_restarts picks by the span contrast"):
        load_config(None, {"task": "ner", "release": {"pem_restarts": 2}})


def test_pem_ensemble_negates_the_mean_of_its_members_updates(tiny_dir, tmp_path):
    """pem_ensemble=2: one adapter of rank 2r whose update equals the mean of the two members, each retrained alone
    from its seed; saved and loaded back it is the same update; it cannot be combined with pem_restarts."""
    import pytest

    from revrel.config import load_config
    from revrel.errors import RevrelError
    from revrel.models.loading import load_model
    from revrel.release.checkpoint import save_adapter
    from revrel.release.pem import train_pem_restarts

    cfg = ReleaseConfig(rank=4, epochs=1, batch_size=4, lr=2e-2, target_modules=["q_proj", "v_proj"], span_loss=True,
                        train_dtype="float32", pem_ensemble=2)

    def deltas(pm):
        return {n: m.get_delta_weight("default") for n, m in pm.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}

    loaded = load_model(str(tiny_dir))
    pm, log = train_pem_restarts(loaded.model, loaded.tokenizer, SPAN_ROWS, cfg, seed=5)
    assert pm.peft_config["default"].r == 8 and [m["seed"] for m in log.summary()["ensemble"]["members"]] == [5, 5 + 7919]
    got = deltas(pm)
    alone = []
    for s in (5, 5 + 7919):
        fresh = load_model(str(tiny_dir))
        one, _ = train_pem(fresh.model, fresh.tokenizer, SPAN_ROWS, dataclasses.replace(cfg, pem_ensemble=1), seed=s)
        alone.append(deltas(one))
    assert got.keys() == alone[0].keys()
    assert all(torch.allclose(got[n], (alone[0][n] + alone[1][n]) / 2, atol=1e-6) for n in got)
    assert not all(torch.allclose(alone[0][n], alone[1][n], atol=1e-4) for n in got)  # the members differ
    save_adapter(pm, tmp_path / "ens")
    from peft import PeftModel

    back = deltas(PeftModel.from_pretrained(load_model(str(tiny_dir)).model, str(tmp_path / "ens")))
    assert all(torch.allclose(back[n], got[n], atol=1e-6) for n in got)
    with pytest.raises(RevrelError, match="set only one of them"):
        load_config(None, {"task": "ner", "release": {"pem_ensemble": 2, "pem_restarts": 2, "span_loss": True, "span_contrast": 1}})
