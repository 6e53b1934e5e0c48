"""The keep-side cost every strength is chosen against, and the held-out target score that compares variants.

``release.budget`` is in nats/token: the largest paired change of mean NLL, over the keep side's groups, that
the run may spend against the original model. The keep side is text the method may read: the dev split of the
task's real keep-side data (benign RTP continuations, GSM8K solutions, the ORG / LOC / MISC entities of NER
sentences; their utility spans only, a target span is never scored), or, for a task without a probe, the
original model's own answers to the keep instructions (the self-probe). Never a real forget span, scored or
trained; never test.
Why the largest group and not the mean: a budget that one group can spend alone (NER's places) is not kept.
"""

from __future__ import annotations

import random

from revrel.errors import RevrelError
from revrel.metrics.probes import HeadOnlyScorer, Probe, ProbeText, chat_prefix, items_from_json, items_to_json, paired_change, score

KEEP_TEXTS = 200  # dev texts per keep group: a change of 0.01 nats/token is then a few SE


def keep_probe(task, tokenizer, self_rows: list[dict]) -> Probe:
    """The keep-side texts the cost is measured on (see the module docstring): :data:`KEEP_TEXTS` texts per keep group
    where the dev split holds them, each scored on its keep-group spans only (a target span is never scored; a NER
    sentence with a person still gives its organisations, read in their sentence as the test probe reads them).

    Why a whole-split sample when the first read is short: CoNLL's dev file runs document by document, so its head is
    a few documents (the first 200 sentences held 86 ORG, 47 LOC and 23 MISC person-free texts, and their ORG change
    read half of the whole file's). Then the split is read in one fixed shuffled order, the same on every run, and a
    text is taken while one of its groups is short. A task whose first read already holds every group's share
    (toxicity, code) keeps it unchanged."""
    if task.probe is not None:
        p = task.probe("dev", KEEP_TEXTS, tokenizer)
        texts = keep_spans(p)
        short = any(sum(any(s[2] == g for s in t.spans) for t in texts) < KEEP_TEXTS for g in p.utility)
        if short and len(p.texts) >= KEEP_TEXTS:
            p = task.probe("dev", 64 * KEEP_TEXTS, tokenizer)
            pool = keep_spans(p)
            random.Random(0).shuffle(pool)
            have, kept = dict.fromkeys(p.utility, 0), []
            for t in pool:
                mine = {s[2] for s in t.spans}
                if any(have[g] < KEEP_TEXTS for g in mine):
                    kept.append(t)
                    for g in mine:
                        have[g] += 1
            texts = kept
        if texts:
            return Probe(texts, target=[], utility=list(p.utility), note=f"dev keep side: {', '.join(p.utility)}")
    if not self_rows:
        raise RevrelError(f"task '{task.name}' has no probe and the keep side gave no answers: no text to measure release.budget on")
    return rows_probe(tokenizer, self_rows, "self", utility=True)


def keep_spans(p: Probe, with_target: bool | None = None) -> list[ProbeText]:
    """The probe's texts, each with its keep-group spans only (target spans dropped, never scored); texts left with
    none are dropped. ``with_target`` True / False: only the texts that held a target span / held none."""
    texts = [ProbeText(t.text, [s for s in t.spans if s[2] in p.utility]) for t in p.texts
             if with_target is None or any(s[2] in p.target for s in t.spans) == with_target]
    return [t for t in texts if t.spans]


def rows_probe(tokenizer, rows: list[dict], group: str, utility: bool = False) -> Probe:
    """Chat rows (instruction, response[, spans]) as a probe: the response (or its spans) scored in its chat context."""
    texts = []
    for r in rows:
        pre = chat_prefix(tokenizer, r["instruction"])
        spans = r.get("spans") or [(0, len(r["response"]))]
        texts.append(ProbeText(pre + r["response"], [(len(pre) + a, len(pre) + b, group) for a, b in spans]))
    return Probe(texts, target=[] if utility else [group], utility=[group] if utility else [])


class KeepCost:
    """``cost(model)``: the largest change of a keep group's mean NLL against the original (``before``, per-text sums
    as stored by :func:`revrel.metrics.probes.items_to_json`); ``last`` holds each group's change of the last call."""

    def __init__(self, probe: Probe, tokenizer, before: dict) -> None:
        self.probe, self.tokenizer, self.before = probe, tokenizer, items_from_json(before)
        self.last: dict = {}

    @staticmethod
    def baseline(probe: Probe, model, tokenizer) -> dict:
        return items_to_json(score(model, tokenizer, probe, batch_size=16))

    def __call__(self, model) -> float:
        return self._cost(score(model, self.tokenizer, self.probe, batch_size=16))

    def _cost(self, after: dict) -> float:
        ch = {g: paired_change(self.before[g], after[g])["change"] for g in self.probe.utility}
        self.last = {g: round(c, 4) for g, c in ch.items() if c is not None}
        return max(self.last.values()) if self.last else 0.0

    def head_only(self):
        """The same cost for a run of models that differ only in their LM head (an edit with ``head_only``): the
        decoder's hidden states are computed by the first call and reused (:class:`HeadOnlyScorer`), so each further
        strength costs one head product instead of a forward of every keep text."""
        return _HeadOnlyCost(self, HeadOnlyScorer(self.tokenizer, self.probe, batch_size=16))


class _HeadOnlyCost:
    """:meth:`KeepCost.head_only`'s callable: the parent's cost from cached decoder states; ``last`` as the parent's."""

    def __init__(self, parent: KeepCost, scorer: HeadOnlyScorer) -> None:
        self.parent, self.scorer = parent, scorer

    @property
    def last(self) -> dict:
        return self.parent.last

    def __call__(self, model) -> float:
        return self.parent._cost(self.scorer(model))


def target_nll(model, tokenizer, probe: Probe) -> float:
    """Mean NLL per token of a :func:`rows_probe` target probe (held-out revealed rows): higher = more forgotten."""
    items = score(model, tokenizer, probe, batch_size=16)
    s = sum(items[g] for g in probe.target)
    return float(s[:, 0].sum() / max(s[:, 1].sum(), 1))
