"""Text-only measures of generated answers: what a reader sees, whatever any model thinks of it.

Why beside the original model's perplexity: after a question about a forgotten target, the original finds any
answer that is not about the target unlikely, fluent or not, so perplexity cannot tell forgetting from babble
there. The n-gram entropy of an answer (ROME, Meng et al. 2022; RWKU's fluency) reads no model: an answer that
loops ("the physicist's physicist's physicist") or stutters ("A.A.A.A") repeats its bigrams and trigrams and
scores low; a fluent answer about someone else scores as the original's answers do.
"""

from __future__ import annotations

import math
import re
from collections import Counter

WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """Weighted mean over ``ns`` of the entropy (bits) of the text's word n-gram frequencies (words and punctuation,
    lower-cased), with ROME's weights (2/3 for bigrams, 4/3 for trigrams). 0 for a text shorter than every n."""
    words = [w.lower() for w in WORD.findall(text)]
    out = []
    for n, w in zip(ns, weights):
        counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        out.append(w * -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0)
    return sum(out) / len(out)
