"""Negation strength without retraining: W(lambda) = W0 - lambda * delta for one trained PEM.

Tuning Release means asking "how strong?" many times for one forget PEM; retraining or reloading per
point would dominate the cost. :class:`NegationSweep` keeps each target layer's original weight and
the PEM's delta (after any Ext-Sub projection) and sets the weights for any lambda in place, exactly
as :func:`revrel.release.negation.negate_into_base` would (same formula, same float32 arithmetic).
"""

from __future__ import annotations

import torch

from revrel.errors import RevrelError
from revrel.release.lora import lora_modules


class NegationSweep:
    """Wraps a trained peft model; ``model`` is the plain base model whose weights ``set(lam)`` controls."""

    @torch.no_grad()
    def __init__(self, peft_model, adapter: str = "default", minus: dict[str, torch.Tensor] | None = None, mu: float = 0.0) -> None:
        """``minus``/``mu``: negate delta - mu * minus[module] instead (e.g. the retain PEM's update,
        :func:`revrel.release.ext_sub.adapter_deltas`): what forget and retain training share cancels."""
        from revrel.release.ext_sub import module_key

        self.layers: list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = []
        for name, module in lora_modules(peft_model, adapter):
            base = module.get_base_layer()
            delta = module.get_delta_weight(adapter).detach().clone()
            if minus is not None and mu:
                delta -= mu * minus[module_key(name)].to(delta.dtype)
            if not torch.isfinite(delta).all():
                raise RevrelError("the trained LoRA has non-finite weights (training diverged); lower release.lr")
            self.layers.append((base, base.weight.detach().clone(), delta))
        self.model = peft_model.unload()
        self.lam = 0.0

    @torch.no_grad()
    def set(self, lam: float):
        """Weights = W0 - lam * delta (lam = 0: the weights the PEM was trained on, bit for bit)."""
        for base, w0, delta in self.layers:
            base.weight.copy_(w0 - (lam * delta).to(w0.dtype) if lam else w0)
        self.lam = lam
        return self.model


def halving_search(sweep, start: float, tries: int, measure, limit: float, key: str, note=None) -> tuple[float | None, list[dict], float | None]:
    """The line search of a Release that has a strength: ``sweep.set(x)`` from ``start``, halved (at most ``tries``)
    while ``measure(model)`` (the self-probe perplexity ratio) exceeds ``limit``. Returns the strength kept (None when
    none met the budget: then ``sweep.set(0.0)`` restored the original), what was tried (``{key: x, **note(),
    "probe_ppl_ratio": r}`` each) and the last ratio. Shared by pruning (a share) and suppression (nats)."""
    x, searched, ratio = start, [], None
    for _ in range(tries):
        model = sweep.set(x)
        ratio = measure(model)
        searched.append({key: x, **(note() if note else {}), "probe_ppl_ratio": round(ratio, 4)})
        if ratio <= limit:
            return x, searched, ratio
        x /= 2
    sweep.set(0.0)
    return None, searched, ratio
