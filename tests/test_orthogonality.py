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
    pm, log = train_pem(loaded.model, loaded.tokenizer, ROWS, cfg, seed=1, anchor_rows=RETAIN)
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
