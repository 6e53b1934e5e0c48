"""O-LoRA orthogonality (Wang et al., 2023): keep a new LoRA's A matrices orthogonal to earlier ones.

loss = sum over target modules of |A_prev A_new^T| (sum of absolute entries, ``l1``) or its squared
Frobenius norm (``fro``), where A_prev stacks the A matrices (rows = rank directions) of the retain
PEM and of every earlier forget PEM for that module.
"""

from __future__ import annotations

import torch

from revrel.release.lora import lora_modules


def lora_A(peft_model, adapter: str = "default") -> dict[str, torch.Tensor]:
    """Module name -> A matrix (rank x in_features) of ``adapter``, as live parameters."""
    return {_key(name): module.lora_A[adapter].weight for name, module in lora_modules(peft_model, adapter)}


def _key(name: str) -> str:
    # "base_model.model.model.layers.0.self_attn.q_proj" -> "model.layers.0.self_attn.q_proj"
    return name.removeprefix("base_model.model.")


def stack_previous(previous: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack earlier PEMs' A matrices per module (rows concatenated)."""
    out: dict[str, list[torch.Tensor]] = {}
    for As in previous:
        for k, a in As.items():
            out.setdefault(k, []).append(a.detach())
    return {k: torch.cat(v, 0) for k, v in out.items()}


def orthogonality_loss(prev: dict[str, torch.Tensor], new: dict[str, torch.Tensor], norm: str = "l1") -> torch.Tensor:
    terms = []
    for k, a in new.items():
        if k in prev:
            p = prev[k].to(a.dtype)
            m = p @ a.T
            terms.append(m.abs().sum() if norm == "l1" else m.pow(2).sum())
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()
