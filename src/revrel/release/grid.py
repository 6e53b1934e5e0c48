"""Edits that survive a GGUF Q4_1 export: keep the weights on the original model's quantization grid.

A model that arrives as a Q4_1 GGUF (the default does) has every Linear weight on its block's grid
``min + k * d`` (blocks of 32 inputs, k in 0..15). Exporting an edited model back to Q4_1 with
llama.cpp's round-to-nearest sends every weight that moved less than half a step back to where it
was: most of a negation (a small change spread over many weights) disappears, and the export keeps
only what moved far (17% of the NER default's change, 77% of the toxicity default's).

:class:`Q41Grid` finds the tensors of the original model that lie on such a grid and, after every
strength the line search tries, rounds the edited weights onto that same grid stochastically: a weight
that moved a tenth of a step moves one whole step with probability 0.1, so the edit is kept in
expectation, and the block's min and max stay where they were, so the exporter recomputes the same grid
and reproduces the weights exactly. The keep-side cost is measured on the snapped weights, so the
budget sees the rounding noise and the strength chosen already accounts for it. The uniform draws are
fixed per run and round (common random numbers): a stronger edit moves a superset of the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from revrel.models.gguf_export import Q4_1_LEVELS as LEVELS
from revrel.models.gguf_export import round_q4_1_stochastic

BLOCK = 32


@dataclass
class _Tensor:
    original: torch.Tensor  # the weights on the grid (a tensor equal to them is skipped)
    lo: torch.Tensor  # (blocks, 1) block minimum
    step: torch.Tensor  # (blocks, 1) grid step d
    ends: torch.Tensor  # (blocks, 2) positions of the block's min and max (they keep the grid in place)


def _blocks(b: torch.Tensor):
    """Each block's (row of ``b``) min and max (values and positions) and Q4_1 grid step (max - min) / 15."""
    lo, hi = b.min(1, keepdim=True), b.max(1, keepdim=True)
    return lo, hi, (hi.values - lo.values) / LEVELS


def _aligned(b: torch.Tensor, lo: torch.Tensor, step: torch.Tensor, tol: float) -> bool:
    """Whether every block lies on its grid lo + k * step, within ``tol`` of a step (a constant block has none)."""
    if not bool((step > 0).all()):
        return False
    x = (b - lo) / step
    return float((x - x.round()).abs().max()) <= tol


class Q41Grid:
    """The Q4_1 grid of every Linear weight of the original model that lies on one."""

    def __init__(self, tensors: dict[str, _Tensor]) -> None:
        self.tensors = tensors

    @classmethod
    @torch.no_grad()
    def of(cls, model: torch.nn.Module, tol: float = 1e-3) -> Q41Grid | None:
        """The grid of ``model``'s on-grid Linear weights (within ``tol`` of a step), or None when none is on one."""
        tensors = {}
        for name, mod in model.named_modules():
            w = getattr(mod, "weight", None)
            if not isinstance(mod, torch.nn.Linear) or w is None or w.dtype != torch.float32 or w.shape[-1] % BLOCK:
                continue
            b = w.detach().reshape(-1, BLOCK)
            head = b[:256]  # a prefix first: most tensors of a model that is not on a grid fail it cheaply
            lo, _, step = _blocks(head)
            if not _aligned(head, lo.values, step, tol):
                continue
            lo, hi, step = _blocks(b)
            if not _aligned(b, lo.values, step, tol):
                continue
            tensors[name] = _Tensor(w.detach().clone(), lo.values, step, torch.cat([lo.indices, hi.indices], 1))
        return cls(tensors) if tensors else None

    def info(self) -> dict:
        return {"format": "q4_1", "tensors": len(self.tensors), "weights": sum(t.original.numel() for t in self.tensors.values())}

    @torch.no_grad()
    def snap(self, model: torch.nn.Module, seed: int) -> torch.nn.Module:
        """Round ``model``'s weights of every on-grid tensor (found by module name) onto the original's grid,
        stochastically (unbiased); a weight already on the grid stays exactly where it is, and so does a tensor no
        edit touched. Returns ``model``, changed in place."""
        for i, (name, t) in enumerate(self.tensors.items()):
            w = model.get_submodule(name).weight.data
            if torch.equal(w, t.original):
                continue  # untouched (each tensor draws from its own stream, so skipping shifts no other's draws)
            gen = torch.Generator().manual_seed(seed * 100_003 + i)
            w.view(-1, BLOCK).copy_(round_q4_1_stochastic(w.view(-1, BLOCK), t.lo, t.step, t.ends, gen))
        return model
