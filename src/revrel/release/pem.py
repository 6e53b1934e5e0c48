"""Train a parameter-efficient module (LoRA via peft) on instruction/response pairs.

Loss is next-token cross-entropy on the response tokens only (the instruction is masked), plus the
optional O-LoRA orthogonality term against earlier PEMs. A plain loop: shuffle, batch, step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, get_peft_model

from revrel.config import PemConfig
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
    contrast: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    ensemble: dict | None = None  # with an ensemble of PEMs (the negate edit's ``ensemble``): each member's seed, steps, final loss
    epochs: int = 1

    def final_contrast(self) -> float:
        """Mean contrast loss over the last epoch's steps: how well the trained PEM tells target from keep spans
        in its own training text (one batch's value is too noisy to read)."""
        last = self.contrast[-max(1, math.ceil(len(self.contrast) / max(self.epochs, 1))):]
        return sum(last) / max(len(last), 1)

    def summary(self) -> dict:
        return {"steps": self.steps, "first_loss": self.loss[0] if self.loss else None, "last_loss": self.loss[-1] if self.loss else None,
                "first_orth": self.orth[0] if self.orth else None, "last_orth": self.orth[-1] if self.orth else None,
                "first_contrast": self.contrast[0] if self.contrast else None, "last_contrast": self.contrast[-1] if self.contrast else None,
                "final_contrast": round(self.final_contrast(), 7) if self.contrast else None,
                "tokens": self.tokens, "seconds": round(self.seconds, 2),
                **({"ensemble": self.ensemble} if self.ensemble else {})}


TARGET_MODULES = ("q_proj", "v_proj", "up_proj", "down_proj")  # the LLaMA / Qwen names of attention and MLP projections
CONTRAST_BETA = 5.0  # sharpness of the span contrast: its margin (nats/token) saturates near a few / CONTRAST_BETA


def lora_config(cfg: PemConfig) -> LoraConfig:
    """LoRA on :data:`TARGET_MODULES`, lora_alpha = 2 * rank (so alpha / r, the update's scale, is the same at every rank)."""
    return LoraConfig(r=cfg.rank, lora_alpha=2.0 * cfg.rank, target_modules=list(TARGET_MODULES), lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM")


def encode_rows(tokenizer, rows: list[dict], max_length: int, keep: bool = False) -> list[tuple]:
    """Rows with a ``spans`` list (see ``Task.target_spans``) learn only those characters of the response.

    With ``keep`` (the negate edit's contrast), rows that carry ``keep_spans`` become (ids, labels, keep_labels):
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


def train_autocast(model):
    """Mixed precision for a training step: bf16 matmuls with float32 master weights on CUDA, float32 elsewhere.

    On this CPU (AVX512-BF16) bf16 *generation* is 3.5x faster, but bf16 autocast *training* measured 5x slower forward and 25x slower backward than float32 (one
    thread, LoRA step on SmolLM2-135M, batch 4 x 96), so CPUs train in float32.
    """
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")


def mean_lp(lp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean log-prob over its labelled tokens (0 for a sequence with none)."""
    return (lp.float() * mask).sum(-1) / mask.sum(-1).clamp(min=1)


class SpanContrast:
    """The keep side as the negative *inside* the forget text (the negate edit's ``contrast``).

    A forget PEM trained on Person spans also raises the organisations and places written beside
    them: the same capitalised-name machinery. Here each forget row's other entity spans
    (``Task.keep_spans``) are the rejected side: the PEM is trained to raise the target tokens' mean
    log-prob more than the keep tokens', against the model without the LoRA, in the very contexts
    where the two compete. The model without the LoRA is scored once per row before training
    (:meth:`reference`); every batch must come from rows scored there.
    """

    def __init__(self, tokenizer, beta: float) -> None:
        self.tokenizer, self.beta = tokenizer, beta
        self.lp0: dict[tuple[int, ...], torch.Tensor] = {}

    @torch.no_grad()
    def reference(self, model, encoded, batch_size: int) -> None:
        """Score every row's tokens once under ``model`` (the weights before the LoRA): the reference the contrast
        measures the PEM's change against. The base weights never change while a PEM trains, so scoring them once
        replaces one forward per step, every epoch (and every ensemble member, who share this object)."""
        todo = list({tuple(e[0]): e for e in encoded if tuple(e[0]) not in self.lp0}.values())
        for s in range(0, len(todo), batch_size):
            batch = todo[s : s + batch_size]
            lp, _ = token_lp(model, self.tokenizer, batch)
            start = max(len(b[0]) for b in batch) - 1 - lp.shape[1]  # token_lp's first column predicts token start + 1
            for row, b in zip(lp.float(), batch):
                full = torch.zeros(len(b[0]) - 1)
                full[start:] = row[: len(b[0]) - 1 - start]
                self.lp0[tuple(b[0])] = full

    def reference_lp(self, batch, width: int, device) -> torch.Tensor:
        """The cached reference log-probs of a batch, aligned with ``token_lp``'s trailing ``width`` columns."""
        start = max(len(b[0]) for b in batch) - 1 - width
        out = torch.zeros(len(batch), width)
        for i, b in enumerate(batch):
            row = self.lp0[tuple(b[0])][start:]
            out[i, : len(row)] = row
        return out.to(device)

    def keep_mask(self, batch, width: int, device) -> torch.Tensor:
        """(batch, width) mask of the keep tokens, aligned with ``token_lp``'s trailing ``width`` columns."""
        from revrel.models.encoding import pad_batch

        keep = [b[2] if len(b) > 2 else [-100] * len(b[1]) for b in batch]
        _, _, labels = pad_batch([b[0] for b in batch], self.tokenizer.pad_token_id or 0, left=False, label_seqs=keep)
        return (labels[:, 1:][:, -width:] != -100).to(device)

    def __call__(self, train_model, batch):
        """(target-span NLL, contrast loss, target tokens, token log-probs, target mask) of one batch."""
        lp, mask = token_lp(train_model, self.tokenizer, batch)
        kmask = self.keep_mask(batch, lp.shape[1], lp.device) & mask
        fmask = mask & ~kmask
        ntok = int(fmask.sum())
        nll = -(lp * fmask).sum() / max(ntok, 1)
        has_f, has_k = fmask.any(-1), kmask.any(-1)
        if not has_f.any() or not has_k.any():
            return nll, torch.zeros(()), ntok, lp, fmask
        d = lp.float() - self.reference_lp(batch, lp.shape[1], lp.device)
        return nll, keep_contrast_loss(mean_lp(d, fmask)[has_f], mean_lp(d, kmask)[has_k], self.beta), ntok, lp, fmask


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


def train_pem(model, tokenizer, rows: list[dict], cfg: PemConfig, *, seed: int, prev_A: dict[str, torch.Tensor] | None = None,
              desc: str = "train PEM", contrast: float = 0.0, reference: SpanContrast | None = None):
    """Wrap ``model`` with a fresh LoRA, train it on ``rows``; returns (peft model, log).

    ``contrast`` > 0 (the negate edit's ``contrast``): rows carrying ``keep_spans`` also train the PEM to raise their
    target tokens more than the keep tokens of the same text (:class:`SpanContrast`), weighted by ``contrast``.

    Under ``accelerate launch`` (DDP) each rank takes every world_size-th batch and gradients are
    averaged, so all ranks end with identical adapters; nothing changes for the caller.
    """
    torch.manual_seed(seed)
    spans = (reference or SpanContrast(tokenizer, CONTRAST_BETA)) if contrast > 0 else None
    encoded = encode_rows(tokenizer, rows, cfg.max_length, keep=spans is not None)
    if spans:
        spans.reference(model, encoded, cfg.batch_size)
    peft_model = get_peft_model(model, lora_config(cfg))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
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
        with train_autocast(peft_model):
            if spans:  # one forward of the forget batch serves the NLL and the contrast
                loss, scon, ntok, _, _ = spans(train_model, batch)
            else:
                (loss, ntok), scon = batch_loss(train_model, tokenizer, batch), torch.zeros(())
        orth = orthogonality_loss(prev_A, lora_A(peft_model)) if prev_A else torch.zeros(())
        total_loss = loss + cfg.lambda_orth * orth + contrast * scon
        acc.backward(total_loss) if acc else total_loss.backward()
        opt.step()
        opt.zero_grad()
        log.steps, log.tokens = step, log.tokens + ntok
        log.loss.append(round(float(loss.detach()), 5))
        log.orth.append(round(float(orth.detach()), 5))
        log.contrast.append(round(float(scon.detach()), 5))
        bar.set_postfix(loss=f"{log.loss[-1]:.3f}", orth=f"{log.orth[-1]:.3g}")
    peft_model.eval()
    log.seconds = time.time() - t0
    return peft_model, log


def train_pems(model, tokenizer, rows: list[dict], cfg: PemConfig, n: int, *, seed: int, desc: str = "train PEM", **kw):
    """``train_pem`` ``n`` times from other seeds (``seed + 7919 j``) on the same rows; returns ONE adapter whose update is
    the members' mean, (1/n) sum_j B_j A_j: rank n * r, its A the members' A stacked and its B theirs side by side / n
    (lora_alpha n times larger, so the alpha / r scaling is unchanged). n = 1 is plain ``train_pem``.

    Why: on the same NER forget rows two training seeds moved the dev ORG probe by -0.09 and +0.08 at the same
    strength: the seed is as large a source of variance as Reveal's draw, and no signal the method can see tells the
    good seed. Averaging does not pick; it shrinks that variance (about 1/sqrt(n) of it) at n times the training time.
    """
    from dataclasses import replace

    if n <= 1:
        return train_pem(model, tokenizer, rows, cfg, seed=seed, desc=desc, **kw)
    kw.setdefault("reference", SpanContrast(tokenizer, CONTRAST_BETA))  # the members share the base model's scores
    members: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
    logs: list[tuple[int, TrainLog]] = []
    peft_model = None
    for j in range(n):
        if peft_model is not None:
            model = peft_model.unload()
        peft_model, log = train_pem(model, tokenizer, rows, cfg, seed=seed + 7919 * j, desc=f"{desc} ({j + 1}/{n})", **kw)
        members.append({name: (m.lora_A["default"].weight.detach().clone(), m.lora_B["default"].weight.detach().clone())
                        for name, m in lora_modules(peft_model)})
        logs.append((seed + 7919 * j, log))
    base = lora_config(cfg)
    ens = get_peft_model(peft_model.unload(), replace(base, r=n * cfg.rank, lora_alpha=n * base.lora_alpha))
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
