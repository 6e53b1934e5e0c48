"""What a task declares: how to reveal its target, how to score relevance, and how to evaluate.

A task is data plus a few callables (like an lm-evaluation-harness task); a new task is one module
that builds a :class:`Task` plus one line in ``revrel.tasks.TASKS``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from revrel.errors import RevrelError


class Oracle(Protocol):
    """Relevance of each response to the forget target, in [0, 1]."""

    def __call__(self, texts: Sequence[str]) -> list[float]: ...


# Generic benign instructions: the self-generated retain set and the utility probe are the model's
# own answers to these, so Release needs no outside data by default.
GENERIC_INSTRUCTIONS = [
    "Describe a sunny day at the beach.", "Explain how a bicycle works.", "Give three tips for staying organised.",
    "Write a short thank-you note to a neighbour.", "What is photosynthesis?", "Describe how to make a cup of tea.",
    "Summarise the plot of a fairy tale you know.", "Explain why the sky is blue.", "Write a friendly greeting for a new colleague.",
    "List some healthy breakfast ideas.", "How do airplanes stay in the air?", "Describe your ideal weekend.",
    "Explain what a map is used for.", "Write a short poem about autumn leaves.", "What are the benefits of reading books?",
    "Describe how rain forms.", "Give advice for a first job interview.", "Explain what a library does.",
    "Describe a busy market in the morning.", "Why is exercise good for health?", "Write two sentences about the ocean.",
    "Explain how to plant a tree.", "What makes a good friend?", "Describe the four seasons.",
    "Explain how a refrigerator keeps food cold.", "Write a short story opening about a lost key.", "What is the water cycle?",
    "Give tips for learning a new language.", "Describe a cozy living room.", "Explain what a volcano is.",
    "Write an invitation to a picnic.", "How do bees make honey?",
]


DEFAULT_PROFILES = {
    "quick": {"n_prompts": 16, "samples": 2, "max_new_tokens": 32, "n_ppl": 32, "n_math": 16, "probe_items": 128},
    "full": {"n_prompts": 100, "samples": 4, "max_new_tokens": 32, "n_ppl": 100, "n_math": 100, "probe_items": 400},
}


def fluency(model, reference, tokenizer, prompts: Sequence[str] | None, texts: Sequence[str], batch_size: int = 16,
            max_texts: int = 400) -> tuple[float | None, list | None]:
    """Perplexity of the model's own answers under ``reference`` (the original model; the model itself
    when None), with a bootstrap 95% interval over answers: it rises when unlearning makes the output
    garbled, which the target metrics alone would count as forgetting. Each answer is scored after its
    chat prompt, or as plain text when ``prompts`` is None (where the prompt asks for what was forgotten,
    the original finds any other answer unlikely after it, however fluent). At most ``max_texts`` answers
    (an even stride, the same ones every time) are scored: teacher forcing the whole chat prompt of all
    1,600 answers of the full toxicity profile cost longer than the interval needs."""
    import numpy as np

    from revrel.metrics.stats import bootstrap_ratio
    from revrel.models.generation import perplexity, sequence_logprobs, text_logprobs

    pairs = [(p, t) for p, t in zip(prompts if prompts is not None else [""] * len(texts), texts) if t.strip()]
    if len(pairs) > max_texts:
        pairs = [pairs[round(i * len(pairs) / max_texts)] for i in range(max_texts)]
    if not pairs:
        return None, None
    scorer = reference if reference is not None else model
    if prompts is None:
        scores = text_logprobs(scorer, tokenizer, [t for _, t in pairs], batch_size=batch_size)
    else:
        scores = sequence_logprobs(scorer, tokenizer, [p for p, _ in pairs], [t for _, t in pairs], batch_size=batch_size)
    ppl = perplexity(scores)
    ci = bootstrap_ratio([-s for s, _ in scores], [n for _, n in scores], transform=np.exp)
    return (ppl if math.isfinite(ppl) else None), ci


@dataclass
class Task:
    name: str
    description: str
    seed_instructions: list[str]
    oracles: dict[str, Callable[[], Oracle]]  # name -> factory (lazy: some load models)
    default_oracle: str
    # (model, tokenizer, eval_cfg, oracle, seed=0, wrap=None, reference=None) -> metrics: wrap rewrites each forget
    # prompt (attacks); reference is the model the fluency of the generations is scored under (None: the model itself)
    evaluate: Callable[..., dict]
    soft_template: str = "The instruction was to"
    # clauses appended to seeds to make "compose" candidates (seed x modifier): a combinatorial pool in
    # which some instructions beat every seed, so the optimizer has something to find
    modifiers: list[str] = field(default_factory=list)
    headline: tuple[str, str] = ("", "")  # (forget metric, utility metric) shown in plots, benches and attacks
    real_forget: Callable[[int], list[dict]] | None = None  # n -> real forget rows (instruction, response), for baselines
    retain_instructions: list[str] = field(default_factory=lambda: list(GENERIC_INSTRUCTIONS))
    # the task's keep side (release.retain_from=task): civil continuations, organisations and places, math in prose
    keep_instructions: list[str] = field(default_factory=list)
    # (split, max texts per group, tokenizer) -> revrel.metrics.probes.Probe: real target vs utility text
    probe: Callable[..., object] | None = None
    # responses -> per response, the character spans that make it relevant (an edit with unit: task reads only them)
    target_spans: Callable[[Sequence[str]], list[list[tuple[int, int]]]] | None = None
    # responses -> per response, the spans of what must be KEPT in the same text (ner: the other entity types);
    # the negate edit's contrast trains the forget PEM to raise the target spans more than these
    keep_spans: Callable[[Sequence[str]], list[list[tuple[int, int]]]] | None = None
    # other span units (an edit's unit) -> (target_spans, keep_spans), e.g. toxicity's words next to its sentences
    span_units: dict[str, tuple[Callable, Callable | None]] = field(default_factory=dict)
    # eval profile name -> EvalConfig values (quick: the README run's sizes; full: the protocol sizes)
    profiles: dict[str, dict] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PROFILES.items()})
    # (loaded original model, run folder, seed) -> None: what a task derives from the model before anything is measured
    # (the target task's description, neighbours and probe answers), cached in the run folder
    prepare: Callable[..., None] | None = None

    def eval_config(self, cfg):
        """``cfg`` (an EvalConfig) with every size left at 0 filled from its profile."""
        if cfg.profile not in self.profiles:
            raise RevrelError(f"task '{self.name}' has no eval profile '{cfg.profile}'; choose one of {', '.join(self.profiles)}")
        prof = self.profiles[cfg.profile]
        return dataclasses.replace(cfg, **{k: v for k, v in prof.items() if getattr(cfg, k) in (0, "")})

    def oracle(self, name: str = "") -> Oracle:
        name = name or self.default_oracle
        if name not in self.oracles:
            raise RevrelError(f"task '{self.name}' has no oracle '{name}'; choose one of {', '.join(self.oracles)}")
        return self.oracles[name]()
