"""Train a parameter-efficient module (LoRA via peft) on instruction/response pairs.

Loss is next-token cross-entropy on the response tokens only (the instruction is masked), plus the
optional O-LoRA orthogonality term against earlier PEMs. A plain loop: shuffle, batch, step.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, get_peft_model

from revrel.config import ReleaseConfig
from revrel.models.encoding import encode_pair
from revrel.models.generation import labelled_logits, token_lp
from revrel.progress import progress_bar
from revrel.release.lora import lora_modules
from revrel.release.losses import keep_contrast_loss
from revrel.release.orthogonality import lora_A, orthogonality_loss


@dataclass
class TrainLog:
    steps: int = 0
    loss: list[float] = field(default_factory=list)
    orth: list[float] = field(default_factory=list)
    anchor: list[float] = field(default_factory=list)
    contrast: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    restarts: dict | None = None  # with release.pem_restarts: each restart's final contrast and the one kept
    ensemble: dict | None = None  # with release.pem_ensemble: each member's seed, steps and final loss
    epochs: int = 1

    def final_contrast(self) -> float:
        """Mean contrast loss over the last epoch's steps: how well the trained PEM tells target from keep spans
        in its own training text (one batch's value is too noisy to rank restarts by)."""
        last = self.contrast[-max(1, math.ceil(len(self.contrast) / max(self.epochs, 1))):]
        return sum(last) / max(len(last), 1)

    def summary(self) -> dict:
        return {"steps": self.steps, "first_loss": self.loss[0] if self.loss else None, "last_loss": self.loss[-1] if self.loss else None,
                "first_orth": self.orth[0] if self.orth else None, "last_orth": self.orth[-1] if self.orth else None,
                "last_anchor": self.anchor[-1] if self.anchor else None,
                "first_contrast": self.contrast[0] if self.contrast else None, "last_contrast": self.contrast[-1] if self.contrast else None,
                "final_contrast": round(self.final_contrast(), 7) if self.contrast else None,
                "tokens": self.tokens, "seconds": round(self.seconds, 2), **({"restarts": self.restarts} if self.restarts else {}),
                **({"ensemble": self.ensemble} if self.ensemble else {})}


def lora_config(cfg: ReleaseConfig) -> LoraConfig:
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.target_modules), lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM")


def encode_rows(tokenizer, rows: list[dict], max_length: int, keep: bool = False) -> list[tuple]:
    """Rows with a ``spans`` list (see ``Task.target_spans``) learn only those characters of the response.

    With ``keep`` (release.span_contrast), rows that carry ``keep_spans`` become (ids, labels, keep_labels):
    labels on the target *and* keep tokens (one forward scores both), keep_labels on the keep tokens alone.
    A token inside both is a target token: what is to be forgotten wins.
    """
    out: list[tuple] = []
    for r in rows:
        if keep and r.get("keep_spans"):
            ids, target = encode_pair(tokenizer, r["instruction"], r["response"], max_length, r.get("spans"))
            kept = encode_pair(tokenizer, r["instruction"], r["response"], max_length, r["keep_spans"])[1]
            kept = [k if t == -100 else -100 for t, k in zip(target, kept)]
            out.append((ids, [t if t != -100 else k for t, k in zip(target, kept)], kept))
        else:
            out.append(encode_pair(tokenizer, r["instruction"], r["response"], max_length, r.get("spans")))
    return out


def batches(encoded, batch_size: int, epochs: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(encoded), generator=g).tolist()
        for s in range(0, len(order), batch_size):
            yield [encoded[i] for i in order[s : s + batch_size]]


def batch_loss(model, tokenizer, batch) -> tuple[torch.Tensor, int]:
    """Mean response-token NLL of a batch, and its number of response tokens."""
    logits, tgt = labelled_logits(model, tokenizer, batch)
    ntok = int((tgt != -100).sum())
    if ntok == 0:  # nothing to learn in this batch: a zero that still has a graph, never NaN
        return logits.sum() * 0.0, 0
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
    return loss, ntok


def train_autocast(model, train_dtype: str):
    """Mixed precision for a training step: bf16 matmuls, float32 master weights (``release.train_dtype``).

    "auto" means bf16 on CUDA only. On this CPU (AVX512-BF16) bf16 *generation* is 3.5x faster, but
    bf16 autocast *training* measured 5x slower forward and 25x slower backward than float32 (one
    thread, LoRA step on SmolLM2-135M, batch 4 x 96), so CPUs train in float32.
    """
    device = next(model.parameters()).device.type
    dtype = torch.bfloat16 if train_dtype == "bfloat16" or (train_dtype == "auto" and device == "cuda") else torch.float32
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16 and device in ("cpu", "cuda"))


@contextmanager
def lora_scaled(peft_model, factor: float, adapter: str = "default"):
    """Run the LoRA at ``factor`` times its strength (``-lam``: the model that negation will give,
    W - lam * delta) inside the block, with gradients; the scaling is restored on exit."""
    mods = [m for m in peft_model.modules() if isinstance(getattr(m, "scaling", None), dict) and adapter in m.scaling]
    old = [m.scaling[adapter] for m in mods]
    for m, s in zip(mods, old):
        m.scaling[adapter] = s * factor
    try:
        yield
    finally:
        for m, s in zip(mods, old):
            m.scaling[adapter] = s


class RetainAnchor:
    """Keep a forget PEM from moving the retain data's token log-probs.

    The penalty is the mean squared change of the retain tokens' log-probs from the base model's
    (cached once, before the LoRA exists), the quantity the retain-probe perplexity budget measures
    on held-out instructions. Where it is measured matters:

    - ``at=0`` (first order): on the PEM-added model W + delta. Negation flips the PEM's effect, and
      to first order its effect on the retain data too, but only to first order.
    - ``at=lam`` (negation-aware): on the model negation will produce, W - lam * delta, by running
      the LoRA at scaling ``-lam`` for the anchor pass. The PEM is then trained to be cheap *to
      negate*, which is what the utility side of the report measures.
    """

    def __init__(self, model, tokenizer, rows: list[dict], cfg: ReleaseConfig, seed: int, at: float = 0.0) -> None:
        encoded = encode_rows(tokenizer, rows, cfg.max_length)
        self.batches = list(batches(encoded, cfg.batch_size, 1, seed))
        self.tokenizer, self.i, self.at = tokenizer, 0, at
        with torch.no_grad(), train_autocast(model, cfg.train_dtype):
            self.base = [token_lp(model, tokenizer, b)[0].float() for b in self.batches]

    def __call__(self, model) -> torch.Tensor:
        j, self.i = self.i % len(self.batches), self.i + 1
        with lora_scaled(model, -self.at) if self.at else nullcontext():
            lp, mask = token_lp(model, self.tokenizer, self.batches[j])
        return ((lp.float() - self.base[j]) ** 2 * mask).sum() / mask.sum().clamp(min=1)


def mean_lp(lp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean log-prob over its labelled tokens (0 for a sequence with none)."""
    return (lp.float() * mask).sum(-1) / mask.sum(-1).clamp(min=1)


class KeepContrast:
    """The keep side as the forget PEM's negative (``release.keep_contrast``, issue 16).

    Span loss and Ext-Sub shape *what* the PEM learns, but the PEM still raises the likelihood of
    everything its forget text shares with the keep side (news style, capitalised names of any type),
    and negation then lowers all of it. This term trains the PEM to raise the forget text's mean token
    log-prob more than the keep text's (``keep_contrast_loss``), against the model without the LoRA as
    reference, so the shared part is what the PEM is pushed *not* to learn.
    """

    def __init__(self, tokenizer, rows: list[dict], cfg: ReleaseConfig, seed: int) -> None:
        self.batches = list(batches(encode_rows(tokenizer, rows, cfg.max_length), cfg.batch_size, 1, seed))
        self.tokenizer, self.beta, self.i = tokenizer, cfg.contrast_beta, 0

    def __call__(self, peft_model, train_model, forget_batch, f_lp: torch.Tensor, f_mask: torch.Tensor) -> torch.Tensor:
        keep, self.i = self.batches[self.i % len(self.batches)], self.i + 1
        with torch.no_grad(), peft_model.disable_adapter():
            f_ref = mean_lp(*token_lp(train_model, self.tokenizer, forget_batch))
            k_ref = mean_lp(*token_lp(train_model, self.tokenizer, keep))
        k_lp, k_mask = token_lp(train_model, self.tokenizer, keep)
        return keep_contrast_loss(mean_lp(f_lp, f_mask) - f_ref, mean_lp(k_lp, k_mask) - k_ref, self.beta)


class SpanContrast:
    """The keep side as the negative *inside* the forget text (``release.span_contrast``, issue 16).

    A forget PEM trained on Person spans also raises the organisations and places written beside
    them: the same capitalised-name machinery. Here each forget row's other entity spans
    (``Task.keep_spans``) are the rejected side: the PEM is trained to raise the target tokens' mean
    log-prob more than the keep tokens', against the model without the LoRA, in the very contexts
    where the two compete. It costs one extra forward without gradients per step.

    With ``keep_rows`` (release.span_contrast_retain: rows of the self-generated keep side carrying their
    ``keep_spans``) one batch of their entity tokens joins the rejected side at every step. Why: which
    non-person entities a forget response happens to name depends on Reveal's draw (prose about athletes
    names clubs, a list of names names few); the keep side is about organisations and places by
    construction, so the PEM always meets them as the negative, whatever the forget set holds.
    """

    def __init__(self, tokenizer, beta: float, keep_rows: list[dict] | None = None, max_length: int = 128, batch_size: int = 8,
                 seed: int = 0) -> None:
        self.tokenizer, self.beta, self.i = tokenizer, beta, 0
        encoded = [encode_pair(tokenizer, r["instruction"], r["response"], max_length, r["keep_spans"]) for r in keep_rows or [] if r.get("keep_spans")]
        self.keep_batches = list(batches(encoded, batch_size, 1, seed)) if encoded else []

    def keep_side(self, peft_model, train_model) -> torch.Tensor:
        """Each keep-side row's change of mean log-prob over its entity tokens (empty without keep rows)."""
        if not self.keep_batches:
            return torch.zeros(0)
        batch, self.i = self.keep_batches[self.i % len(self.keep_batches)], self.i + 1
        lp, mask = token_lp(train_model, self.tokenizer, batch)
        with torch.no_grad(), peft_model.disable_adapter():
            lp0, _ = token_lp(train_model, self.tokenizer, batch)
        return mean_lp(lp.float() - lp0.float(), mask)[mask.any(-1)]

    def keep_mask(self, batch, width: int, device) -> torch.Tensor:
        """(batch, width) mask of the keep tokens, aligned with ``token_lp``'s trailing ``width`` columns."""
        from revrel.models.encoding import pad_batch

        keep = [b[2] if len(b) > 2 else [-100] * len(b[1]) for b in batch]
        _, _, labels = pad_batch([b[0] for b in batch], self.tokenizer.pad_token_id or 0, left=False, label_seqs=keep)
        return (labels[:, 1:][:, -width:] != -100).to(device)

    def __call__(self, peft_model, train_model, batch):
        """(target-span NLL, contrast loss, target tokens, token log-probs, target mask) of one batch."""
        lp, mask = token_lp(train_model, self.tokenizer, batch)
        kmask = self.keep_mask(batch, lp.shape[1], lp.device) & mask
        fmask = mask & ~kmask
        ntok = int(fmask.sum())
        nll = -(lp * fmask).sum() / max(ntok, 1)
        has_f, has_k = fmask.any(-1), kmask.any(-1)
        d_side = self.keep_side(peft_model, train_model)
        if not has_f.any() or not (has_k.any() or len(d_side)):
            return nll, torch.zeros(()), ntok, lp, fmask
        with torch.no_grad(), peft_model.disable_adapter():
            lp0, _ = token_lp(train_model, self.tokenizer, batch)
        d = lp.float() - lp0.float()
        d_keep = torch.cat([mean_lp(d, kmask)[has_k], d_side.to(d.device)])
        return nll, keep_contrast_loss(mean_lp(d, fmask)[has_f], d_keep, self.beta), ntok, lp, fmask


def forget_nll(train_model, tokenizer, batch):
    """``SpanContrast``'s outputs without keep spans: (NLL, 0, tokens, token log-probs, their mask)."""
    lp, mask = token_lp(train_model, tokenizer, batch)
    ntok = int(mask.sum())
    return -(lp * mask).sum() / max(ntok, 1), torch.zeros(()), ntok, lp, mask


def distributed():
    """An ``accelerate.Accelerator`` when launched with several processes (``accelerate launch`` / torchrun), else None.

    Single-process runs skip accelerate entirely, so the default path has no wrapper overhead.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator

    # on a machine without CUDA, cpu=True makes accelerate use DDP over gloo (MULTI_CPU)
    return Accelerator(cpu=not torch.cuda.is_available())


def train_pem(model, tokenizer, rows: list[dict], cfg: ReleaseConfig, *, seed: int, prev_A: dict[str, torch.Tensor] | None = None,
              desc: str = "train PEM", retain_rows: list[dict] | None = None):
    """Wrap ``model`` with a fresh LoRA, train it on ``rows``; returns (peft model, log).

    ``retain_rows`` (the keep side) feed the retain anchor and the keep contrast when their weights are on, and with
    release.span_contrast_retain their ``keep_spans`` (see ``release.loop.with_keep_spans``) widen the span contrast.

    Under ``accelerate launch`` (DDP) each rank takes every world_size-th batch and gradients are
    averaged, so all ranks end with identical adapters; nothing changes for the caller.
    """
    torch.manual_seed(seed)
    anchor = (RetainAnchor(model, tokenizer, retain_rows, cfg, seed + 1, at=cfg.anchor_lambda)
              if retain_rows and cfg.retain_anchor > 0 else None)
    contrast = KeepContrast(tokenizer, retain_rows, cfg, seed + 2) if retain_rows and cfg.keep_contrast > 0 else None
    spans = (SpanContrast(tokenizer, cfg.contrast_beta, retain_rows if cfg.span_contrast_retain else None, cfg.max_length, cfg.batch_size, seed + 3)
             if cfg.span_contrast > 0 else None)
    peft_model = get_peft_model(model, lora_config(cfg))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    encoded = encode_rows(tokenizer, rows, cfg.max_length, keep=spans is not None)
    acc = distributed()
    rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
    train_model = peft_model
    if acc:
        train_model, opt = acc.prepare(peft_model, opt)
    total = cfg.epochs * math.ceil(len(encoded) / cfg.batch_size)
    log, t0 = TrainLog(epochs=cfg.epochs), time.time()
    peft_model.train()
    opt.zero_grad()
    all_batches = batches(encoded, cfg.batch_size, cfg.epochs, seed)
    if world > 1:
        all_batches = (b for i, b in enumerate(all_batches) if i % world == rank)
        total = math.ceil(total / world)
    bar = progress_bar(all_batches, total=total, desc=desc, disable=rank != 0)
    for step, batch in enumerate(bar, 1):
        with train_autocast(peft_model, cfg.train_dtype):
            if spans or contrast:  # one forward of the forget batch serves the NLL and the contrasts
                loss, scon, ntok, lp, fmask = spans(peft_model, train_model, batch) if spans else forget_nll(train_model, tokenizer, batch)
                con = contrast(peft_model, train_model, batch, lp, fmask) if contrast else torch.zeros(())
            else:
                (loss, ntok), con, scon = batch_loss(train_model, tokenizer, batch), torch.zeros(()), torch.zeros(())
            anc = anchor(train_model) if anchor else torch.zeros(())
        orth = orthogonality_loss(prev_A, lora_A(peft_model), cfg.orth_norm) if prev_A else torch.zeros(())
        total_loss = (loss + cfg.lambda_orth * orth + cfg.retain_anchor * anc + cfg.keep_contrast * con
                      + cfg.span_contrast * scon) / cfg.grad_accum
        acc.backward(total_loss) if acc else total_loss.backward()
        if step % cfg.grad_accum == 0 or step == total:
            opt.step()
            opt.zero_grad()
        log.steps, log.tokens = step, log.tokens + ntok
        log.loss.append(round(float(loss.detach()), 5))
        log.orth.append(round(float(orth.detach()), 5))
        log.anchor.append(round(float(anc.detach()), 6))
        log.contrast.append(round(float((con + scon).detach()), 5))
        bar.set_postfix(loss=f"{log.loss[-1]:.3f}", orth=f"{log.orth[-1]:.3g}")
    peft_model.eval()
    log.seconds = time.time() - t0
    return peft_model, log


def train_pem_restarts(model, tokenizer, rows: list[dict], cfg: ReleaseConfig, *, seed: int, desc: str = "train PEM", **kw):
    """``train_pem`` ``cfg.pem_restarts`` times from other seeds; keeps the PEM whose span contrast ends lowest.

    Why: on the same NER forget rows, two seeds gave PER/ORG 25:1 and 3:1 on the dev probe (FINDINGS,
    release_rec_ner), and the selective one had the lower final contrast loss (3e-5 vs 1.2e-3): the
    contrast measures, on the PEM's own training text and without any real data, how well it learned
    the target *apart from* the entities that must be kept. The first restart uses ``seed``, so
    pem_restarts=1 is plain ``train_pem``. Costs pem_restarts x the training time.
    """
    if cfg.pem_ensemble > 1:
        return train_pem_ensemble(model, tokenizer, rows, cfg, seed=seed, desc=desc, **kw)
    if cfg.pem_restarts <= 1:
        return train_pem(model, tokenizer, rows, cfg, seed=seed, desc=desc, **kw)
    scores: list[float] = []
    best = None
    for j, (_, peft_model, log) in enumerate(seeded_pems(model, tokenizer, rows, cfg, cfg.pem_restarts, seed=seed, desc=desc, **kw)):
        scores.append(round(log.final_contrast(), 7))
        if best is None or scores[-1] < scores[best[0]]:
            best = (j, log, {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad})
    j, log, state = best
    with torch.no_grad():  # every restart has the same LoRA layout: the kept one's weights go into the last wrapper
        params = dict(peft_model.named_parameters())
        for n, v in state.items():
            params[n].copy_(v)
    log.restarts = {"final_contrast": scores, "kept": j}
    return peft_model, log


def train_pem_ensemble(model, tokenizer, rows: list[dict], cfg: ReleaseConfig, *, seed: int, desc: str = "train PEM", **kw):
    """``train_pem`` ``cfg.pem_ensemble`` times from other seeds on the same rows; returns ONE adapter whose update is
    the members' mean, (1/n) sum_j B_j A_j: rank n * r, its A the members' A stacked and its B theirs side by side / n
    (lora_alpha n times larger, so the alpha / r scaling is unchanged).

    Why: on the same NER forget rows two training seeds moved the dev ORG probe by -0.09 and +0.08 at the same
    lambda (FINDINGS, release_rec_ner_big): the seed is as large a source of variance as Reveal's draw, and no
    signal the method can see (final span contrast, the self-probe) tells the good seed. Averaging does not pick;
    it shrinks that variance (about 1/sqrt(n) of it) at n times the training time. The first member uses ``seed``,
    so its update is the one pem_ensemble=1 would train.
    """
    from dataclasses import replace

    n = cfg.pem_ensemble
    members: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
    logs: list[tuple[int, TrainLog]] = []
    for s, peft_model, log in seeded_pems(model, tokenizer, rows, cfg, n, seed=seed, desc=desc, **kw):
        members.append({name: (m.lora_A["default"].weight.detach().clone(), m.lora_B["default"].weight.detach().clone())
                        for name, m in lora_modules(peft_model)})
        logs.append((s, log))
    ens = get_peft_model(peft_model.unload(), replace(lora_config(cfg), r=n * cfg.rank, lora_alpha=n * cfg.lora_alpha))
    with torch.no_grad():
        for name, m in lora_modules(ens):
            m.lora_A["default"].weight.copy_(torch.cat([mem[name][0] for mem in members], dim=0))
            m.lora_B["default"].weight.copy_(torch.cat([mem[name][1] for mem in members], dim=1) / n)
    ens.eval()
    log = logs[0][1]
    log.seconds = sum(x.seconds for _, x in logs)
    log.ensemble = {"members": [{"seed": s, "steps": x.steps, "last_loss": x.loss[-1] if x.loss else None,
                                 **({"final_contrast": round(x.final_contrast(), 7)} if x.contrast else {})} for s, x in logs]}
    return ens, log


def seeded_pems(model, tokenizer, rows: list[dict], cfg: ReleaseConfig, n: int, *, seed: int, desc: str, **kw):
    """Yield (seed, peft model, log) for ``n`` forget PEMs trained on the same rows from seeds ``seed + 7919 j``; each
    trains on the base model the previous one leaves (its LoRA layers unloaded). What restarts pick from and an
    ensemble averages; a caller that keeps a member's weights must copy them before the next one is trained."""
    peft_model = None
    for j in range(n):
        if peft_model is not None:
            model = peft_model.unload()
        peft_model, log = train_pem(model, tokenizer, rows, cfg, seed=seed + 7919 * j, desc=f"{desc} ({j + 1}/{n})", **kw)
        yield seed + 7919 * j, peft_model, log
