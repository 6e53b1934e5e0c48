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


def keep_contrast_loss(d_forget: torch.Tensor, d_keep: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO-style contrast with the keep side as the rejected answer, over every (forget, keep) pair.

    ``d_forget`` / ``d_keep``: each sequence's change of mean per-token log-prob from the reference
    model. The loss -(1/beta) log sigmoid(beta * (d_f - d_k)) pushes the forget PEM to raise the forget
    text *more than* the keep text, so its negation lowers the target more than what should be kept.
    The 1/beta keeps the gradient at a zero margin (-1/2) the same for every beta; beta sets where it
    saturates (a margin of a few / beta nats/token), which bounds how far the PEM pushes the keep side.
    """
    margin = d_forget[:, None] - d_keep[None, :]
    return -(1.0 / beta) * F.logsigmoid(beta * margin).mean()


def seq_logp(model, tokenizer, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed response log-prob, response token count >= 1) per sequence, with gradients."""
    from revrel.models.generation import token_logprobs

    lp, n = token_logprobs(model, tokenizer, batch)
    return lp, n.clamp(min=1).float()
