"""Negate a trained LoRA into the base weights: W <- W - lambda * (alpha / r) * B A."""

from __future__ import annotations

import torch

from revrel.errors import RevrelError


@torch.no_grad()
def negate_into_base(peft_model, lam: float, adapter: str = "default"):
    """Subtract ``lam`` times each LoRA delta from its base weight, then strip the LoRA layers.

    Returns the plain base model (same object peft wrapped), now unlearned. ``get_delta_weight``
    already includes the scaling alpha / r (and any fan-in/fan-out transpose).
    """
    for module in peft_model.modules():
        if hasattr(module, "lora_A") and adapter in module.lora_A:
            base = module.get_base_layer()
            delta = module.get_delta_weight(adapter)
            if not torch.isfinite(delta).all():
                raise RevrelError("the trained LoRA has non-finite weights (training diverged); lower release.lr and rerun with --resume")
            base.weight.sub_((lam * delta).to(base.weight.dtype))
    return peft_model.unload()
