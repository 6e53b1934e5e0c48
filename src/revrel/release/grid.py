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
        self.hinv: dict[str, torch.Tensor] = {}  # per tensor name, after :meth:`calibrate`: snap rounds it with GPTQ
        self._snapped: dict[str, torch.Tensor] = {}  # the last GPTQ result per tensor (a weight left there is not redone)

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
    def calibrate(self, model: torch.nn.Module, tokenizer, texts: list[str]) -> None:
        """From now on :meth:`snap` rounds each on-grid tensor whose inputs it has seen with GPTQ (Frantar et al.,
        2023): column by column, each rounding error pushed onto the columns not yet rounded, weighted by the inverse
        Hessian of the layer's inputs on ``texts`` (the run's own keep and revealed rows), so the layer's outputs on
        that text stay close to the edit's. Why: stochastic rounding is unbiased but noisy, and its noise cost the
        toxicity round's keep side 0.009-0.015 nats/token of a 0.04 budget on dev (benchmarks/grid_noise.py)."""
        from revrel.models.gptq_q4_1 import gptq_inverse, input_hessians

        hs = input_hessians(model, tokenizer, texts)
        self.hinv, self._snapped = {}, {}
        for name in self.tensors:
            if f"{name}.weight" in hs:
                self.hinv[name] = gptq_inverse(hs.pop(f"{name}.weight"))

    @torch.no_grad()
    def snap(self, model: torch.nn.Module, seed: int) -> torch.nn.Module:
        """Round ``model``'s weights of every on-grid tensor (found by module name) onto the original's grid: with
        GPTQ where :meth:`calibrate` saw the tensor's inputs, else stochastically (unbiased); a tensor no edit touched
        stays exactly where it is. Returns ``model``, changed in place."""
        from revrel.models.gptq_q4_1 import gptq_round_q4_1

        for i, (name, t) in enumerate(self.tensors.items()):
            w = model.get_submodule(name).weight.data
            if torch.equal(w, t.original) or (name in self._snapped and torch.equal(w, self._snapped[name])):
                continue  # untouched, or left as the last snap made it (each tensor draws from its own stream)
            if name in self.hinv:
                w.copy_(gptq_round_q4_1(w, grid=(t.lo, t.step, t.ends), hinv=self.hinv[name]))
                self._snapped[name] = w.clone()
                continue
            gen = torch.Generator().manual_seed(seed * 100_003 + i)
            w.view(-1, BLOCK).copy_(round_q4_1_stochastic(w.view(-1, BLOCK), t.lo, t.step, t.ends, gen))
        return model
