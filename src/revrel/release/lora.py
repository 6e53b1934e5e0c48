"""Walking a peft model's LoRA layers: every edit of a trained PEM (negation, truncation, Ext-Sub projection,
orthogonality, ensembling) visits the same modules, so the test for "this module carries the adapter" lives here once."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def lora_modules(peft_model: torch.nn.Module, adapter: str = "default") -> Iterator[tuple[str, torch.nn.Module]]:
    """(name, module) of each LoRA layer of ``peft_model`` that carries ``adapter``, in module order."""
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and adapter in module.lora_A:
            yield name, module
