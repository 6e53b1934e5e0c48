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

LAYER_CHOICES = ("all", "upper", "lower", "auto")
LAYER_INDEX = re.compile(r"layers\.(\d+)\.")


@dataclass
class NegateConfig:
    strength: float = 1.0  # lambda, how many times the PEM's update is subtracted: where the line search starts (it keeps the largest within budget)
    unit: str = ""  # the PEM learns: "" whole responses | task (the task's target spans) | another span unit of the task (toxicity: word)
    contrast: float = 0.0  # weight of the span contrast: raise the target spans more than the keep spans of the same text (needs unit)
    ensemble: int = 1  # train this many PEMs (other seeds) and negate their mean update: less seed variance, n x the training
    # where the update is negated, by depth: all | upper (the upper half of the decoder layers) | lower | auto (each of the
    # three at its own budget strength; the one that raises the held-out revealed rows' target NLL most is kept)
    layers: str = "all"

    def check(self, where: str) -> None:
        if not 0 <= self.strength <= 100:
            raise RevrelError(f"{where}.strength must be in [0, 100]")
        if self.contrast < 0:
            raise RevrelError(f"{where}.contrast must be >= 0")
        if self.contrast and not self.unit:
            raise RevrelError(f"{where}.contrast needs a unit (task or a task's span unit): it contrasts the target spans")
        if not 1 <= self.ensemble <= 16:
            raise RevrelError(f"{where}.ensemble is a number of PEMs to average and must be in [1, 16]")
        if self.layers not in LAYER_CHOICES:
            raise RevrelError(f"{where}.layers must be one of {', '.join(LAYER_CHOICES)}")


class Negate(Edit):
    """Train the forget PEM (orthogonal to ``data.prev_A``) and negate it at any strength, in all layers or by depth."""

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
        self.orth = float(orthogonality_loss(data.prev_A, lora_A(peft_model)).detach()) if data.prev_A else None
        self.folder = data.adapters / f"round_{data.round}" if data.adapters else None
        if self.folder:
            save_adapter(peft_model, self.folder)
        named = [(name, base, delta) for (name, _), (base, delta) in zip(lora_modules(peft_model), lora_deltas(peft_model))]
        self.depth = depth_groups([name for name, _, _ in named])
        self.layers_w = [(name, base, base.weight.detach().clone(), delta) for name, base, delta in named]
        self.model = peft_model.unload()
        self.use(c.layers if c.layers != "auto" else "all")
        return self.model

    def variants(self) -> list[str]:
        return ["all", "upper", "lower"] if self.cfg.layers == "auto" else [self.cfg.layers]

    def use(self, variant: str) -> None:
        """Negate only in the modules of ``variant`` (all | upper | lower) from now on; the strength goes back to 0."""
        self.set(0.0)
        self.variant, self.active = variant, self.depth[variant]

    @torch.no_grad()
    def set(self, strength: float):
        """Weights = W0 - strength * delta in the active modules, W0 elsewhere (0: the weights the PEM was trained on)."""
        for name, base, w0, delta in self.layers_w:
            on = strength and name in getattr(self, "active", ())
            base.weight.copy_(w0 - (strength * delta).to(w0.dtype) if on else w0)
        self.strength = strength
        return self.model

    def save(self, folder, k: int) -> None:
        if self.folder:
            save_negated_adapter(self.folder, folder / f"negated_round_{k}", self.strength, keep=self.active)

    def info(self) -> dict:
        return {"train": self.train, "rows": self.rows, "spans": self.span_info, "layers": self.variant,
                "modules": len(self.active), "orth_final": self.orth}


def depth_groups(names: list[str]) -> dict[str, set[str]]:
    """LoRA module names by depth: all, upper (decoder layers in the upper half) and lower, from the layer index in
    the name (``model.layers.12.mlp.up_proj``). A rule on the model's own depth, so it fits every model."""
    idx = {n: int(m.group(1)) for n in names if (m := LAYER_INDEX.search(n))}
    if not idx:
        return {"all": set(names), "upper": set(names), "lower": set(names)}
    half = (max(idx.values()) + 1) / 2
    upper = {n for n, i in idx.items() if i >= half}
    return {"all": set(names), "upper": upper, "lower": set(names) - upper}


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


def save_negated_adapter(src, dst, lam: float, keep: set[str] | None = None) -> None:
    """Write a copy of the LoRA adapter in ``src`` whose B matrices are multiplied by ``-lam`` (and zeroed in the
    modules not in ``keep``, LoRA module names as in ``lora_modules``, when given).

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
    def factor(key: str) -> float:
        if ".lora_B." not in key:
            return 1.0
        return -lam if keep is None or key.split(".lora_B.")[0] in keep else 0.0

    scaled = {k: (factor(k) * v if ".lora_B." in k else v).contiguous() for k, v in tensors.items()}
    with atomic_folder(dst, "adapter") as tmp:
        shutil.copy2(src / "adapter_config.json", Path(tmp) / "adapter_config.json")
        save_file(scaled, str(Path(tmp) / "adapter_model.safetensors"), metadata={"format": "pt", "revrel_lambda_neg": str(lam)})


def negated_adapters(adapters_dir) -> list:
    """The ``negated_round_K`` folders under a run's ``adapters/``, in round order."""
    from pathlib import Path

    return sorted(Path(adapters_dir).glob("negated_round_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
