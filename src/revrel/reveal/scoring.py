"""Score an instruction by the responses it elicits: relevance x diversity (weighted harmonic mean)."""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-6


def vendi_score(emb: torch.Tensor) -> float:
    """Vendi score: exp(Shannon entropy of the eigenvalues of K/n), K = cosine-similarity matrix.

    1 for identical responses, n for n mutually orthogonal ones (Friedman & Dieng, 2023).
    """
    if emb.shape[0] == 0:
        return 0.0
    x = torch.nn.functional.normalize(emb.double(), dim=-1)
    n = x.shape[0]
    # the non-zero eigenvalues of X X^T / n equal those of X^T X / n; use the smaller matrix
    k = (x @ x.T if n <= x.shape[1] else x.T @ x) / n
    return float(_vendi_from_kernel(k))


def _vendi_from_kernel(k: torch.Tensor) -> torch.Tensor:
    """exp(entropy of the eigenvalues) of one or a batch (..., s, s) of normalised similarity matrices;
    eigenvalues at or below 1e-12 are numerical zeros and contribute nothing."""
    ev = torch.linalg.eigvalsh(k)
    ev = torch.where(ev > 1e-12, ev, torch.ones_like(ev))  # 1 * log 1 = 0
    return torch.exp(-(ev * ev.log()).sum(-1))


def diversity(emb: torch.Tensor) -> float:
    """Vendi score divided by the number of responses, so it lies in (0, 1]."""
    return vendi_score(emb) / max(emb.shape[0], 1)


def harmonic_score(relevance, div, alpha: float = 0.5):
    """1 / (alpha / v + (1 - alpha) / r): high only when both relevance and diversity are high.
    Floats in, float out; tensors in, elementwise tensor out (the greedy set selection scores a batch)."""
    return 1.0 / (alpha / (div + EPS) + (1.0 - alpha) / (relevance + EPS))


def size_matched_scores(sets: list[tuple], alpha: float = 0.5, draws: int = 10, seed: int = 0) -> list[float]:
    """Relevance x diversity of forget sets compared at equal size. ``sets``: (relevances, (n, d)
    embeddings) per set. Vendi/n falls as n grows, so every set larger than the smallest is scored on
    random subsets of the smallest one's size (mean over ``draws``); all 0 when a set is empty."""
    m = min(len(rel) for rel, _ in sets)
    if m == 0:
        return [0.0] * len(sets)
    rng = np.random.default_rng(seed)
    out = []
    for rel, emb in sets:
        rel = np.asarray(rel, dtype=float)
        vals = []
        for _ in range(draws if len(rel) > m else 1):
            pick = rng.choice(len(rel), size=m, replace=False)
            vals.append(harmonic_score(float(rel[pick].mean()), diversity(emb[torch.as_tensor(pick)]), alpha))
        out.append(float(np.mean(vals)))
    return out


def greedy_diverse_subset(relevance, emb: torch.Tensor, n: int, alpha: float = 0.5) -> list[int]:
    """Indices of ``n`` items chosen greedily to maximise the set's relevance x diversity (the harmonic
    score of mean relevance and Vendi/n), the same objective an instruction is scored by.

    Each step adds the item that gives the best score; all candidates are tried in one batched
    eigendecomposition of their (s+1) x (s+1) similarity matrices.
    """
    rel = torch.as_tensor(np.asarray(relevance, dtype=float), dtype=torch.float64)
    x = torch.nn.functional.normalize(emb.double(), dim=-1)
    sim = x @ x.T
    free = torch.ones(len(rel), dtype=torch.bool)
    chosen: list[int] = []
    for _ in range(min(n, len(rel))):
        rest = free.nonzero().squeeze(1)
        idx = torch.cat([torch.tensor(chosen, dtype=torch.long).expand(len(rest), -1), rest[:, None]], 1)  # (r, s+1)
        s = idx.shape[1]
        vendi = _vendi_from_kernel(sim[idx[:, :, None], idx[:, None, :]] / s)
        j = int(rest[int(torch.argmax(harmonic_score(rel[idx].mean(1), vendi / s, alpha)))])
        chosen.append(j)
        free[j] = False
    return chosen
