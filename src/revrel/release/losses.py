"""Unlearning objectives as plain functions of per-sequence log-probabilities (easy to check by hand).

``logp`` is the summed log-probability of each response given its prompt, ``n`` its token count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ga_loss(logp: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: minimise the negative of the forget NLL (per token)."""
    return (logp / n).mean()


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al., 2024): -(2/beta) * mean log sigmoid(-beta * (log pi - log pi_ref))."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def simnpo_loss(logp: torch.Tensor, n: torch.Tensor, beta: float, gamma: float = 0.0) -> torch.Tensor:
    """SimNPO (Fan et al., 2024): reference-free, length-normalised NPO with margin gamma."""
    return -(2.0 / beta) * F.logsigmoid(-(beta / n) * logp - gamma).mean()


def seq_logp(model, tokenizer, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed response log-prob, response token count >= 1) per sequence, with gradients."""
    from revrel.models.generation import token_logprobs

    lp, n = token_logprobs(model, tokenizer, batch)
    return lp, n.clamp(min=1).float()
