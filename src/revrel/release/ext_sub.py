"""Extract before subtract (Ext-Sub, Hu et al., AAAI 2024): negate only what the forget PEM does
that the retain PEM does not.

Plain negation of a forget PEM also negates everything it shares with ordinary text (fluency,
formatting, the chat frame), which is why negation alone is not selective. Here each layer's forget
update B_f A_f is projected off the subspaces of the retain PEM's update B_r A_r before it is
negated: off its column space (span B_r, the output directions the retain data uses), off its row
space (span A_r^T, the input directions), or both. The projection acts on the LoRA factors,
B_f <- (I - Q_c Q_c^T) B_f and A_f <- A_f (I - Q_r Q_r^T), so the result is still a LoRA of the same
rank: the saved round adapter, the line search and the unmerged stacked adapters all stay exact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from revrel.release.lora import lora_modules

MODES = ("none", "col", "row", "both")


def _basis(m: torch.Tensor, rel_tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis of the column space of ``m`` (directions with singular value above tolerance)."""
    u, s, _ = torch.linalg.svd(m.float(), full_matrices=False)
    return u[:, s > rel_tol * s.max().clamp(min=1e-30)]


def retain_subspaces(adapter_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per LoRA module of a saved adapter: bases of its update's column space (span B) and row space (span A^T)."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    out = {}
    for key, a in tensors.items():
        if ".lora_A." in key:
            name = key.split(".lora_A.")[0]
            out[name] = (_basis(tensors[key.replace(".lora_A.", ".lora_B.")]), _basis(a.T))
    return out


def module_key(name: str) -> str:
    """peft's module name as saved in adapter files (the adapter name is not part of either)."""
    return name if name.startswith("base_model.model.") else f"base_model.model.{name}"


@torch.no_grad()
def extract(peft_model, subspaces: dict[str, tuple[torch.Tensor, torch.Tensor]], mode: str, adapter: str = "default") -> dict:
    """Project the forget PEM's factors off the retain subspaces in place; returns the share of the
    update's Frobenius norm removed (over all modules), a check of how much the two PEMs shared."""
    if mode == "none":
        return {"mode": mode}
    before = after = 0.0
    for name, module in lora_modules(peft_model, adapter):
        key = module_key(name)
        if key not in subspaces:
            continue
        q_col, q_row = subspaces[key]
        A, B = module.lora_A[adapter].weight, module.lora_B[adapter].weight
        before += float((B.float() @ A.float()).norm() ** 2)
        if mode in ("col", "both"):
            B.copy_(B - q_col.to(B.dtype) @ (q_col.T.to(B.dtype) @ B))
        if mode in ("row", "both"):
            A.copy_(A - (A @ q_row.to(A.dtype)) @ q_row.T.to(A.dtype))
        after += float((B.float() @ A.float()).norm() ** 2)
    return {"mode": mode, "norm_share_removed": round(1 - (after / before) ** 0.5, 4) if before else None}


def adapter_deltas(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """Per LoRA module of a saved adapter (keyed as in the file): its weight update (alpha / r) * B A."""
    import json

    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    conf = json.loads((adapter_dir / "adapter_config.json").read_text())
    scale = conf["lora_alpha"] / conf["r"]
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return {key.split(".lora_A.")[0]: scale * (tensors[key.replace(".lora_A.", ".lora_B.")].float() @ a.float())
            for key, a in tensors.items() if ".lora_A." in key}
