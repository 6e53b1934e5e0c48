"""NeuralUCB (Zhou et al., 2020) with a diagonal design matrix, for any feature/reward pair.

Surrogate: a one-hidden-layer MLP f(x; theta) on z-scored features. For a candidate x with
gradient g = d f(x) / d theta, the score is

    UCB(x) = f(x) + sqrt( sum_j lambda * nu * g_j^2 / U_j )

with U initialised to lambda and, after each observation, U += g_chosen^2. After each observation
the MLP is refit with Adam on all observations so far (nanoGPT-style plain loop, no framework).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap


class NeuralUCB:
    def __init__(self, features: np.ndarray | torch.Tensor, *, hidden: int = 100, lam: float = 1.0, nu: float = 0.1,
                 lr: float = 1e-2, epochs: int = 50, seed: int = 0, pca_dim: int = 0, scale_rewards: bool = False) -> None:
        x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        self.mean, self.std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)
        self.x = (x - self.mean) / self.std  # all candidates, z-scored once
        if 0 < pca_dim < min(self.x.shape):
            # few observations, wide features (576-d hidden states): keep the top principal directions
            _, _, v = torch.linalg.svd(self.x, full_matrices=False)
            z = self.x @ v[:pca_dim].T
            self.x = z / z.std(0, unbiased=False).clamp(min=1e-6)
        self.lam, self.nu, self.lr, self.epochs = lam, nu, lr, epochs
        # fit on z-scored rewards: Reveal's scores differ by a few hundredths, too little for an MLP
        # from a random init to resolve, and nu then sets exploration relative to the spread of rewards
        self.scale_rewards = scale_rewards
        self.y_mean, self.y_std = 0.0, 1.0
        self.gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(self.x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.params = {k: v.detach() for k, v in self.net.named_parameters()}
        self.U = {k: torch.full_like(v, lam) for k, v in self.params.items()}
        self.obs_idx: list[int] = []
        self.obs_r: list[float] = []

    def _f(self, params, x):
        return functional_call(self.net, params, (x.unsqueeze(0),)).squeeze()

    def _grads(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return vmap(grad(self._f), in_dims=(None, 0))(self.params, self.x[idx])

    def ucb(self, idx: list[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, confidence width) for the candidates ``idx``."""
        idx_t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        with torch.no_grad():
            mu = self.net(self.x[idx_t]).squeeze(-1)
        g = self._grads(idx_t)
        var = sum(((self.lam * self.nu) * g[k].pow(2) / self.U[k]).flatten(1).sum(1) for k in g)
        return mu, var.sqrt()

    def predict(self, idx: list[int] | np.ndarray) -> np.ndarray:
        """The surrogate's mean reward for the candidates ``idx``, on the reward's own scale."""
        with torch.no_grad():
            mu = self.net(self.x[torch.as_tensor(np.asarray(idx), dtype=torch.long)]).squeeze(-1)
        return (mu * self.y_std + self.y_mean).numpy()

    def select(self, idx: list[int] | np.ndarray) -> int:
        """The candidate in ``idx`` with the highest UCB."""
        mu, width = self.ucb(idx)
        return int(np.asarray(idx)[int(torch.argmax(mu + width))])

    def select_batch(self, idx: list[int] | np.ndarray, q: int) -> list[int]:
        """``q`` distinct candidates of ``idx`` to score together (one batched generation call).

        Greedy, with "hallucinated" observations as in GP-BUCB: after each pick its g^2 is added to a
        scratch copy of U, so the confidence of that arm and of arms whose gradients resemble it
        shrinks before the next pick. The mean is left alone (no reward is invented), so the batch
        spreads over promising but different arms instead of q near-copies of the best one.
        """
        idx = np.asarray(idx)
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        with torch.no_grad():
            mu = self.net(self.x[idx_t]).squeeze(-1)
        g = self._grads(idx_t)
        U = {k: v.clone() for k, v in self.U.items()}
        chosen: list[int] = []
        for _ in range(min(q, len(idx))):
            var = sum(((self.lam * self.nu) * g[k].pow(2) / U[k]).flatten(1).sum(1) for k in g)
            score = mu + var.sqrt()
            if chosen:
                score[torch.tensor(chosen)] = -float("inf")
            j = int(torch.argmax(score))
            chosen.append(j)
            for k in U:
                U[k] += g[k][j].pow(2)
        return [int(idx[j]) for j in chosen]

    def update(self, i: int, reward: float, refit: bool = True) -> None:
        g = self._grads(torch.tensor([i]))
        for k in self.U:
            self.U[k] += g[k][0].pow(2)
        self.obs_idx.append(int(i))
        self.obs_r.append(float(reward))
        if refit:
            self._fit()

    def _fit(self) -> None:
        x = self.x[torch.tensor(self.obs_idx)]
        y = torch.tensor(self.obs_r, dtype=torch.float32)
        if self.scale_rewards and len(y) > 1:
            self.y_mean, self.y_std = float(y.mean()), max(float(y.std()), 1e-6)
            y = (y - self.y_mean) / self.y_std
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=1e-4)
        for _ in range(self.epochs):
            opt.zero_grad()
            loss = (self.net(x).squeeze(-1) - y).pow(2).mean()
            loss.backward()
            opt.step()
        self.params = {k: v.detach() for k, v in self.net.named_parameters()}


def run_bandit(features, reward_fn, *, n_init: int, budget: int, subset: int, seed: int = 0, init: list[int] | None = None,
               batch: int = 1, reward_many=None, keep: dict | None = None, **kw) -> list[tuple[int, float]]:
    """``init`` arms (e.g. the hand-written seeds) and ``n_init`` random ones, then ``budget`` UCB choices
    over a random subset of candidates, ``batch`` at a time.

    Returns the (candidate index, reward) history in order. ``reward_fn(i)`` evaluates candidate i;
    ``reward_many(list of i)``, when given, evaluates several at once (Reveal: one batched
    generation call instead of one per arm); the first arms always go as one batch. ``keep``, when
    given, receives the fitted surrogate under "bandit" (to rank arms by its predictions afterwards).
    """
    n = len(features)
    rng = np.random.default_rng(seed)
    bandit = NeuralUCB(features, seed=seed, **kw)
    if keep is not None:
        keep["bandit"] = bandit
    many = reward_many or (lambda idx: [reward_fn(int(i)) for i in idx])
    history: list[tuple[int, float]] = []

    def observe(idx: list[int]) -> None:
        rewards = many([int(i) for i in idx])
        for j, (i, r) in enumerate(zip(idx, rewards)):
            bandit.update(int(i), float(r), refit=j == len(idx) - 1)
            history.append((int(i), float(r)))

    rest = [i for i in range(n) if i not in set(init or [])]
    first = list(init or []) + [int(i) for i in rng.choice(rest, size=min(n_init, len(rest)), replace=False)]
    if first:
        observe(first)
    left = budget
    while left > 0:
        pool = rng.choice(n, size=min(subset, n), replace=False)
        q = min(batch, left)
        observe(bandit.select_batch(pool, q) if q > 1 else [bandit.select(pool)])
        left -= q
    return history
