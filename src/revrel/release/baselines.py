"""Baseline unlearning methods behind one signature: ``(ctx, forget_rows, retain_rows) -> info``.

Each updates ``ctx.loaded.model`` in place (or replaces it). Registered by name in ``METHODS``;
``revrel`` itself (the Reveal-and-Release rounds) lives in :mod:`revrel.rounds`. Their settings are the
``baseline`` section (``revrel.config.BaselineConfig``); batch size and length are the PEM's (``release.pem``).
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable

import torch
from peft import get_peft_model

from revrel.progress import progress_bar
from revrel.release.checkpoint import save_adapter
from revrel.release.losses import ga_loss, npo_loss, seq_logp, simnpo_loss
from revrel.release.negate import negate_into_base
from revrel.release.pem import batches, encode_rows, lora_config, train_autocast, train_pem

METHODS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        METHODS[name] = fn
        return fn

    return deco


def _optimise(ctx, forget, retain, loss_fn, *, needs_ref: bool = False) -> dict:
    """Shared loop for the gradient methods: ``steps`` optimizer steps over forget (and retain) batches."""
    b, pc = ctx.cfg.baseline, ctx.cfg.release.pem
    torch.manual_seed(ctx.cfg.seed)
    model = ctx.model
    ref = None
    if needs_ref:
        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    if b.lora:
        model = get_peft_model(model, lora_config(pc))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=b.lr, weight_decay=0.0)
    f_enc, r_enc = encode_rows(ctx.tok, forget, pc.max_length), encode_rows(ctx.tok, retain, pc.max_length)
    f_it = itertools.cycle(batches(f_enc, pc.batch_size, 10**6, ctx.cfg.seed))
    r_it = itertools.cycle(batches(r_enc, pc.batch_size, 10**6, ctx.cfg.seed + 1)) if r_enc else None
    model.train()
    losses, t0, tokens = [], time.time(), 0
    for step in progress_bar(range(1, b.steps + 1), desc=f"{ctx.cfg.method}"):
        fb = next(f_it)
        with train_autocast(model):
            logp, n = seq_logp(model, ctx.tok, fb)
            tokens += int(n.sum())
            ref_logp = None
            if ref is not None:
                with torch.no_grad():
                    ref_logp, _ = seq_logp(ref, ctx.tok, fb)
            loss = loss_fn(logp, n, ref_logp)
            if r_it is not None and b.retain_weight > 0:
                rl, rn = seq_logp(model, ctx.tok, next(r_it))
                loss = loss + b.retain_weight * (-(rl / rn).mean())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(round(float(loss.detach()), 5))
        if ctx.on_step is not None:
            model.eval()
            with torch.no_grad():
                ctx.on_step(step, model)
            model.train()
    model.eval()
    if b.lora:
        ctx.loaded.model = model.merge_and_unload()
    for p in ctx.loaded.model.parameters():
        p.requires_grad_(False)
    return {"steps": b.steps, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "tokens": tokens, "train_seconds": round(time.time() - t0, 2), "lora": b.lora}


@register("ga")
def gradient_ascent(ctx, forget, retain) -> dict:
    return _optimise(ctx, forget, [], lambda lp, n, ref: ga_loss(lp, n))


@register("graddiff")
def graddiff(ctx, forget, retain) -> dict:
    """Ascent on forget + descent on retain (retain_weight scales the retain NLL)."""
    return _optimise(ctx, forget, retain, lambda lp, n, ref: ga_loss(lp, n))


@register("npo")
def npo(ctx, forget, retain) -> dict:
    beta = ctx.cfg.baseline.beta
    return _optimise(ctx, forget, retain, lambda lp, n, ref: npo_loss(lp, ref, beta), needs_ref=True)


@register("simnpo")
def simnpo(ctx, forget, retain) -> dict:
    beta, gamma = ctx.cfg.baseline.beta, ctx.cfg.baseline.gamma
    return _optimise(ctx, forget, retain, lambda lp, n, ref: simnpo_loss(lp, n, beta, gamma))


@register("pem-negation")
def pem_negation(ctx, forget, retain) -> dict:
    """One LoRA on all the forget data, negated once: no rounds, no orthogonality."""
    lam = ctx.cfg.baseline.strength
    peft_model, log = train_pem(ctx.model, ctx.tok, forget, ctx.cfg.release.pem, seed=ctx.cfg.seed, desc="pem-negation: train")
    save_adapter(peft_model, ctx.run.adapters / "pem")
    ctx.loaded.model = negate_into_base(peft_model, lam)
    return {"train": log.summary(), "strength": lam}
