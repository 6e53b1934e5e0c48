"""The ``negate`` edit: train a LoRA "forget PEM" on the revealed rows, then W <- W - strength * (alpha / r) * B A.

The paper's Release. The PEM learns what the revealed text adds to the model (its target spans only, with
``unit``; raising them more than the keep spans beside them, with ``contrast``), and subtracting that update
lowers it. The strength is negation's lambda: :class:`Negate` keeps each target layer's weight and the PEM's
delta, so ``set(lam)`` is exact for any lambda without reloading the PEM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from revrel.errors import RevrelError
from revrel.release.edit import Edit, RoundData
from revrel.release.lora import lora_modules


@dataclass
class NegateConfig:
    strength: float = 1.0  # lambda: how many times the PEM's update is subtracted (halved by the line search)
    unit: str = ""  # the PEM learns: "" whole responses | task (the task's target spans) | another span unit of the task (toxicity: word)
    contrast: float = 0.0  # weight of the span contrast: raise the target spans more than the keep spans of the same text (needs unit)
    ensemble: int = 1  # train this many PEMs (other seeds) and negate their mean update: less seed variance, n x the training
    layers: str = ""  # regex on module names: negate the PEM only there (e.g. "mlp"); empty: every module

    def check(self, where: str) -> None:
        if not 0 <= self.strength <= 100:
            raise RevrelError(f"{where}.strength must be in [0, 100]")
        if self.contrast < 0:
            raise RevrelError(f"{where}.contrast must be >= 0")
        if self.contrast and not self.unit:
            raise RevrelError(f"{where}.contrast needs a unit (task or a task's span unit): it contrasts the target spans")
        if not 1 <= self.ensemble <= 16:
            raise RevrelError(f"{where}.ensemble is a number of PEMs to average and must be in [1, 16]")
        if self.layers:
            try:
                re.compile(self.layers)
            except re.error as exc:
                raise RevrelError(f"{where}.layers is not a valid regular expression: {exc}") from None


class Negate(Edit):
    """Train the forget PEM (orthogonal to ``data.prev_A``), keep only ``layers``, and negate it at any strength."""

    name = "negate"
    Config = NegateConfig

    def prepare(self, model, tokenizer, data: RoundData):
        from revrel.release.checkpoint import save_adapter
        from revrel.release.orthogonality import lora_A, orthogonality_loss
        from revrel.release.pem import train_pems

        c = self.cfg
        rows, self.span_info = data.target_rows(c.unit, keep=c.contrast > 0)
        peft_model, log = train_pems(model, tokenizer, rows, data.pem, c.ensemble, seed=data.seed, prev_A=data.prev_A,
                                     desc=f"round {data.round}: train forget PEM", contrast=c.contrast)
        self.train, self.rows = log.summary(), len(rows)
        self.layers = keep_layers(peft_model, c.layers) if c.layers else None
        self.orth = float(orthogonality_loss(data.prev_A, lora_A(peft_model)).detach()) if data.prev_A else None
        self.folder = data.adapters / f"round_{data.round}" if data.adapters else None
        if self.folder:
            save_adapter(peft_model, self.folder)
        self.layers_w = [(base, base.weight.detach().clone(), delta) for base, delta in lora_deltas(peft_model)]
        self.model = peft_model.unload()
        return self.model

    @torch.no_grad()
    def set(self, strength: float):
        """Weights = W0 - strength * delta (0: the weights the PEM was trained on, bit for bit)."""
        for base, w0, delta in self.layers_w:
            base.weight.copy_(w0 - (strength * delta).to(w0.dtype) if strength else w0)
        self.strength = strength
        return self.model

    def save(self, folder, k: int) -> None:
        if self.folder:
            save_negated_adapter(self.folder, folder / f"negated_round_{k}", self.strength)

    def info(self) -> dict:
        return {"train": self.train, "rows": self.rows, "spans": self.span_info, "layers": self.layers, "orth_final": self.orth}


@torch.no_grad()
def negate_into_base(peft_model, lam: float, adapter: str = "default"):
    """Subtract ``lam`` times each LoRA delta from its base weight, then strip the LoRA layers (pem-negation baseline).

    Returns the plain base model (same object peft wrapped), now unlearned. ``get_delta_weight``
    already includes the scaling alpha / r (and any fan-in/fan-out transpose).
    """
    for base, delta in lora_deltas(peft_model, adapter):
        base.weight.sub_((lam * delta).to(base.weight.dtype))
    return peft_model.unload()


@torch.no_grad()
def lora_deltas(peft_model, adapter: str = "default") -> list[tuple[torch.nn.Module, torch.Tensor]]:
    """(base layer, its LoRA update B A * alpha / r) for every LoRA module; a non-finite update (training diverged)
    is a RevrelError, so no negation ever writes NaN into the weights."""
    out = []
    for _, module in lora_modules(peft_model, adapter):
        delta = module.get_delta_weight(adapter).detach().clone()
        if not torch.isfinite(delta).all():
            raise RevrelError("the trained LoRA has non-finite weights (training diverged); lower release.pem.lr and rerun with --resume")
        out.append((module.get_base_layer(), delta))
    return out


@torch.no_grad()
def keep_layers(peft_model, pattern: str, adapter: str = "default") -> dict:
    """Keep the PEM's update only in modules whose name matches ``pattern`` (a regex searched in the module name,
    e.g. ``mlp``); the others' B is zeroed. Why: training touches every target module, but the target-specific part
    of the update may live in some of them; a filter applied after training costs nothing to sweep."""
    rx = re.compile(pattern)
    kept = zeroed = 0
    for name, module in lora_modules(peft_model, adapter):
        if rx.search(name):
            kept += 1
        else:
            module.lora_B[adapter].weight.zero_()
            zeroed += 1
    if not kept:
        raise RevrelError(f"negate layers={pattern!r} matches no LoRA module; names look like 'model.layers.3.mlp.up_proj'")
    return {"pattern": pattern, "kept": kept, "zeroed": zeroed}


def save_negated_adapter(src, dst, lam: float) -> None:
    """Write a copy of the LoRA adapter in ``src`` whose B matrices are multiplied by ``-lam``.

    Loaded with peft on the weights the adapter was trained on, it *is* the negation
    (W + s * (-lam B) A = W - lam * s * B A), so a run can keep its rounds as separate, unmerged
    adapters: inspect one, switch one off, or stack them (``revrel.models.vllm_backend.combine_negated``).
    """
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from revrel.io import atomic_folder

    src, dst = Path(src), Path(dst)
    tensors = load_file(str(src / "adapter_model.safetensors"))
    scaled = {k: (-lam * v if ".lora_B." in k else v).contiguous() for k, v in tensors.items()}
    with atomic_folder(dst, "adapter") as tmp:
        shutil.copy2(src / "adapter_config.json", Path(tmp) / "adapter_config.json")
        save_file(scaled, str(Path(tmp) / "adapter_model.safetensors"), metadata={"format": "pt", "revrel_lambda_neg": str(lam)})


def negated_adapters(adapters_dir) -> list:
    """The ``negated_round_K`` folders under a run's ``adapters/``, in round order."""
    from pathlib import Path

    return sorted(Path(adapters_dir).glob("negated_round_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
