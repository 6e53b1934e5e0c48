"""Selective pruning (Pochinkov & Schoots, 2024): zero the MLP neurons that fire far more on the
revealed target than on the keep side.

Why beside PEM negation: a negated PEM is trained on the whole response style of the model's own
forget text, and what it removes is largely shared with the keep side (code vs math answers, toxic vs
benign continuations: about 2-3:1 on the dev probes). A neuron's mean activation on the target tokens
against its mean activation on the keep side is a per-unit, training-free measure of how specific it
is; zeroing the most specific ones removes the target with little of what the keep side needs.
revrel's own data only: the target tokens are the task's spans in the *revealed* forget set, the keep
side is the self-generated retain set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from revrel.errors import RevrelError
from revrel.models.encoding import encode_pair, pad_batch
from revrel.release.edit import Edit, RoundData

DOWN = re.compile(r"layers\.(\d+)\.mlp\.down_proj$")


def down_projections(model) -> list[torch.nn.Linear]:
    """Each decoder layer's MLP output projection, in layer order: its input is the MLP's neurons."""
    found = {int(m.group(1)): mod for name, mod in model.named_modules() if (m := DOWN.search(name)) and isinstance(mod, torch.nn.Linear)}
    if not found:
        raise RevrelError("prune: the model has no 'layers.N.mlp.down_proj' modules (a LLaMA-style MLP is needed)")
    return [found[i] for i in sorted(found)]


@torch.no_grad()
def neuron_activity(model, tokenizer, rows: list[dict], max_length: int, batch_size: int = 8) -> torch.Tensor:
    """Mean |activation| of every MLP neuron, shape (layers, d_ff), over the positions that predict a
    learned token of ``rows`` (the whole response, or only the ``spans`` where a row carries them):
    position t's activations produce token t+1, so those are the ones that carry the target."""
    downs = down_projections(model)
    sums = [torch.zeros(d.in_features, dtype=torch.float64) for d in downs]
    count = 0
    mask: list[torch.Tensor] = []

    def hook(i):
        def f(_mod, args):
            a = args[0].detach().abs().to(torch.float64)
            sums[i].add_((a * mask[0].unsqueeze(-1)).sum(dim=(0, 1)))
        return f

    handles = [d.register_forward_pre_hook(hook(i)) for i, d in enumerate(downs)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        encoded = [encode_pair(tokenizer, r["instruction"], r["response"], max_length, r.get("spans")) for r in rows]
        for b in range(0, len(encoded), batch_size):
            chunk = encoded[b:b + batch_size]
            ids, att, labels = pad_batch([c[0] for c in chunk], pad, left=False, label_seqs=[c[1] for c in chunk])
            m = torch.zeros(labels.shape, dtype=torch.float64)
            m[:, :-1] = (labels[:, 1:] != -100).to(torch.float64)
            mask[:] = [m]
            count += int(m.sum())
            model(input_ids=ids, attention_mask=att)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not count:
        raise RevrelError("prune: no learned tokens in the rows (every span empty or cut by max_length)")
    return torch.stack(sums) / count


def specificity(target: torch.Tensor, keep: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """How much more a neuron fires on the target than on the keep side: target / (keep + eps * mean keep).
    The floor keeps neurons silent on both sides from ranking first on noise."""
    return target / (keep + eps * keep.mean())


def prune_neurons(model, score: torch.Tensor, frac: float, already: torch.Tensor | None = None) -> torch.Tensor:
    """Zero the down-projection columns of the ``frac`` share of all MLP neurons with the highest ``score``
    (ranked across layers), skipping the ones in ``already`` and the ones an earlier round already zeroed
    (their activation still looks specific, but their output is gone). Returns the boolean (layers, d_ff)
    mask of every neuron pruned by this call and ``already``; a zero column removes the neuron's output."""
    downs = down_projections(model)
    done = torch.zeros(score.shape, dtype=torch.bool) if already is None else already.clone()
    n = int(round(frac * score.numel()))
    if n <= 0:
        return done
    dead = torch.stack([(d.weight == 0).all(dim=0).cpu() for d in downs])
    flat = score.flatten().clone().to(torch.float64)
    flat[(done | dead).flatten()] = float("-inf")
    pick = torch.topk(flat, min(n, int((~(done | dead)).sum()))).indices
    done.view(-1)[pick] = True
    with torch.no_grad():
        for i, d in enumerate(downs):
            cols = done[i].nonzero().flatten()
            if len(cols):
                d.weight[:, cols.to(d.weight.device)] = 0
    return done


def keep_activity(model, tokenizer, keep_rows: list[dict], max_length: int, extra_keep: list[dict] | None = None) -> torch.Tensor:
    """The keep side's activity; with ``extra_keep`` (a second keep set, e.g. the clean words inside the forget
    text beside the self-generated keep-side texts) the larger of the two per neuron, so a neuron busy on
    either kind of kept text is spared."""
    act = neuron_activity(model, tokenizer, keep_rows, max_length)
    return torch.maximum(act, neuron_activity(model, tokenizer, extra_keep, max_length)) if extra_keep else act


@dataclass
class PruneConfig:
    strength: float = 0.01  # the share of all MLP neurons zeroed: where the line search starts (it keeps the largest within budget)
    unit: str = "task"  # the target side: the task's target spans (task), another span unit of the task, or "" (whole responses)

    def check(self, where: str) -> None:
        if not 0.0 <= self.strength <= 0.5:
            raise RevrelError(f"{where}.strength is a share of the MLP neurons and must be in [0, 0.5]")


class Prune(Edit):
    """Selective pruning as an edit: ``set(share)`` gives the model with ``share`` of its MLP neurons pruned from the
    weights it was prepared on (the activities of that model are measured once, in :meth:`prepare`)."""

    name = "prune"
    Config = PruneConfig
    max_strength = 0.5

    def prepare(self, model, tokenizer, data: RoundData):
        c = self.cfg
        self.rows, self.span_info = data.target_rows(c.unit, keep=data.keep_side != "retain")
        keep, self.extra_keep = data.keep_rows(self.rows)
        self.model, self.max_length = model, data.pem.max_length
        self.original = [d.weight.detach().clone() for d in down_projections(model)]
        self.keep_act = keep_activity(model, tokenizer, keep, self.max_length, self.extra_keep)
        self.target_act = neuron_activity(model, tokenizer, self.rows, self.max_length)
        self.mask: torch.Tensor | None = None
        return model

    def set(self, strength: float):
        _restore(down_projections(self.model), self.original)
        self.mask = prune_neurons(self.model, specificity(self.target_act, self.keep_act), strength) if strength > 0 else None
        self.strength = strength
        return self.model

    def save(self, folder, k: int) -> None:
        from safetensors.torch import save_file

        from revrel.io import atomic_path

        with atomic_path(folder / f"pruned_round_{k}.safetensors") as tmp:
            save_file({"mask": self.mask.to(torch.uint8).contiguous()}, str(tmp), metadata={"share": str(self.strength)})

    def at_strength(self) -> dict:
        return {"neurons": int(self.mask.sum()) if self.mask is not None else 0}

    def info(self) -> dict:
        m = self.mask
        return {"neurons": int(m.sum()) if m is not None else 0, "of": int(self.keep_act.numel()), "spans": self.span_info,
                "per_layer": m.sum(dim=1).tolist() if m is not None else None}


def _restore(downs: list[torch.nn.Linear], weights: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for d, w in zip(downs, weights):
            d.weight.copy_(w)
