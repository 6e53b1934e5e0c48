"""Negate a trained LoRA into the base weights: W <- W - lambda * (alpha / r) * B A."""

from __future__ import annotations

import torch

from revrel.errors import RevrelError
from revrel.release.lora import lora_modules


@torch.no_grad()
def negate_into_base(peft_model, lam: float, adapter: str = "default"):
    """Subtract ``lam`` times each LoRA delta from its base weight, then strip the LoRA layers.

    Returns the plain base model (same object peft wrapped), now unlearned. ``get_delta_weight``
    already includes the scaling alpha / r (and any fan-in/fan-out transpose).
    """
    for _, module in lora_modules(peft_model, adapter):
        base = module.get_base_layer()
        delta = module.get_delta_weight(adapter)
        if not torch.isfinite(delta).all():
            raise RevrelError("the trained LoRA has non-finite weights (training diverged); lower release.lr and rerun with --resume")
        base.weight.sub_((lam * delta).to(base.weight.dtype))
    return peft_model.unload()


@torch.no_grad()
def negate_only(peft_model, pattern: str, adapter: str = "default") -> dict:
    """Keep the PEM's update only in modules whose name matches ``pattern`` (a regex searched in the
    module name, e.g. ``mlp`` or ``layers\\.(1[5-9]|2\\d)\\.``); the others' B is zeroed.

    Why: training touches every target module, but the target-specific part of the update may live
    in some of them (MLP layers are said to store knowledge, attention the format of a reply). A
    filter applied after training costs nothing to sweep: the same PEM, fewer modules negated.
    """
    import re

    rx = re.compile(pattern)
    kept = zeroed = 0
    for name, module in lora_modules(peft_model, adapter):
        if rx.search(name):
            kept += 1
        else:
            module.lora_B[adapter].weight.zero_()
            zeroed += 1
    if not kept:
        raise RevrelError(f"release.negate_only={pattern!r} matches no LoRA module; names look like 'model.layers.3.mlp.up_proj'")
    return {"pattern": pattern, "kept": kept, "zeroed": zeroed}


@torch.no_grad()
def negate_rank(peft_model, k: int, adapter: str = "default") -> dict:
    """Keep only part of each module's update B A, by its singular directions: k > 0 the top k, k < 0 all but the top |k|.

    Why: a PEM trained on lists of names may put what every name shares (a capitalised word opens the line) in its
    strongest direction and what makes a *person* in weaker ones, or the other way round; a truncation after
    training costs nothing to sweep on the same PEM. B and A are rewritten in place as U_k S_k and V_k^T (the
    dropped directions as zero rows), so the adapter keeps its shape, scaling and file format.
    Returns the mean share of the update's squared norm (sum of s^2) that was kept.
    """
    kept = []
    for _, module in lora_modules(peft_model, adapter):
        A, B = module.lora_A[adapter].weight, module.lora_B[adapter].weight  # (r, in), (out, r)
        U, S, Vh = torch.linalg.svd(B.float() @ A.float(), full_matrices=False)
        r = A.shape[0]
        U, S, Vh = U[:, :r], S[:r], Vh[:r]
        mask = torch.zeros(r, dtype=S.dtype)
        if k > 0:
            mask[:k] = 1
        else:
            mask[-k:] = 1
        kept.append(float((S**2 * mask).sum() / (S**2).sum().clamp_min(1e-30)))
        B.copy_((U * (S * mask)).to(B.dtype))
        A.copy_(Vh.to(A.dtype))
    if not kept:
        raise RevrelError("release.negate_rank: the model has no LoRA modules to truncate")
    return {"negate_rank": k, "energy_kept": round(sum(kept) / len(kept), 4)}


def negation_filters(peft_model, s) -> dict | None:
    """Apply the release config's after-training filters to a trained PEM, in order: ``negate_only`` (which modules),
    then ``negate_rank`` (which singular directions of each). Returns what they did (None: no filter), for the report.
    One place for Release rounds and the sweeps, so both negate the same update."""
    only = negate_only(peft_model, s.negate_only) if s.negate_only else None
    if s.negate_rank:
        only = (only or {}) | negate_rank(peft_model, s.negate_rank)
    return only


def save_negated_adapter(src, dst, lam: float) -> None:
    """Write a copy of the LoRA adapter in ``src`` whose B matrices are multiplied by ``-lam``.

    Loaded with peft on the weights the adapter was trained on, it *is* the negation
    (W + s * (-lam B) A = W - lam * s * B A), so a run can keep its rounds as separate, unmerged
    adapters: inspect one, switch one off, or stack them all with :func:`load_stacked`.
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


def load_stacked(base_model, folders):
    """Wrap ``base_model`` (the original weights) with every negated adapter in ``folders``, all active.

    The result computes W0 x + sum_k s B'_k A_k x, which equals the merged unlearned model (negations
    are additive); ``model.disable_adapter()`` gives back the original model for comparison.
    """
    from peft import PeftModel

    folders = [str(f) for f in folders]
    if not folders:
        raise RevrelError("no negated adapters to stack; the run kept no round (see report.json 'stopped')")
    model = PeftModel.from_pretrained(base_model, folders[0], adapter_name="neg_0")
    for i, f in enumerate(folders[1:], 1):
        model.load_adapter(f, adapter_name=f"neg_{i}")
    model.base_model.set_adapter([f"neg_{i}" for i in range(len(folders))])
    return model.eval()
