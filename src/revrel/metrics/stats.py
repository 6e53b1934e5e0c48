"""Uncertainty for every number revrel reports.

Sampled metrics (expected max toxicity, pass@1, accuracy, F1, fluency) get percentile-bootstrap
95% intervals over prompts; likelihood probes get standard errors of a ratio estimator (sum of NLL
over sum of tokens, clustered by text). All vectorised: a 1,000-resample bootstrap over 400 prompts
is one (1000 x 400) index draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

N_BOOT = 1000


def _draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_mean(values: Sequence[float], *, n_boot: int = N_BOOT, seed: int = 0) -> list[float] | None:
    """95% percentile interval of the mean of ``values`` (resampling the values); None when empty."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return None
    means = v[_draws(v.size, n_boot, seed)].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def bootstrap_ratio(num: Sequence[float], den: Sequence[float], *, n_boot: int = N_BOOT, seed: int = 0, transform=None) -> list[float] | None:
    """95% interval of sum(num) / sum(den) resampling (num, den) pairs; ``transform`` maps the ratio
    (e.g. exp of a mean NLL gives a perplexity). Used for F1 (2tp / (2tp + fp + fn)) and fluency."""
    n, d = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if n.size == 0:
        return None
    idx = _draws(n.size, n_boot, seed)
    ratio = n[idx].sum(1) / np.maximum(d[idx].sum(1), 1e-12)
    if transform is not None:
        ratio = transform(ratio)
    return [float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))]


def paired_bootstrap(before: Sequence[float], after: Sequence[float], *, n_boot: int = N_BOOT, seed: int = 0) -> list[float] | None:
    """95% percentile interval of mean(after - before) over paired units (the same prompt before and after),
    resampling the units; None unless both have the same, non-zero length.

    Why beside the two separate intervals: how toxic a continuation gets depends on its prompt far more than on
    the model's edit, and that prompt-to-prompt spread sits in both intervals but cancels in the difference, so
    the paired interval sees a change several times smaller with the same generations."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.size == 0 or b.shape != a.shape:
        return None
    return bootstrap_mean(a - b, n_boot=n_boot, seed=seed)


def ratio_se(num: Sequence[float], den: Sequence[float]) -> float:
    """Standard error of sum(num) / sum(den) with items as clusters (delta method)."""
    n, d = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    m = n.size
    if m < 2 or d.sum() <= 0:
        return float("nan")
    r = n.sum() / d.sum()
    return float(math.sqrt(m / (m - 1) * np.sum((n - r * d) ** 2)) / d.sum())


def overlap(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def fmt_ci(value: float | None, ci: Sequence[float] | None, digits: int = 3) -> str:
    """``0.365 [0.31, 0.42]``: the value with its interval (2 fewer digits on the bounds, at least 2)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if ci is None:
        return f"{value:.{digits}f}"
    d = max(digits - 1, 2)
    return f"{value:.{digits}f} [{ci[0]:.{d}f}, {ci[1]:.{d}f}]"


def verdict(before_ci: Sequence[float] | None, after_ci: Sequence[float] | None, change_ci: Sequence[float] | None = None) -> str:
    """'changed' when the paired interval of the change (``change_ci``, when there is one) excludes 0, else when the
    two 95% intervals do not overlap; otherwise 'no detectable change'."""
    if change_ci is not None:
        return "no detectable change" if change_ci[0] <= 0 <= change_ci[1] else "changed"
    if before_ci is None or after_ci is None:
        return ""
    return "no detectable change" if overlap(before_ci, after_ci) else "changed"
