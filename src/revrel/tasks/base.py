"""What a task declares: how to reveal its target, how to score relevance, and how to evaluate.

A task is data plus a few callables (like an lm-evaluation-harness task); a new task is one module
that builds a :class:`Task` plus one line in ``revrel.tasks.TASKS``.
"""

from __future__ import annotations

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


@dataclass
class Task:
    name: str
    description: str
    seed_instructions: list[str]
    oracles: dict[str, Callable[[], Oracle]]  # name -> factory (lazy: some load models)
    default_oracle: str
    evaluate: Callable[..., dict]  # (model, tokenizer, eval_cfg, oracle, seed, wrap=None) -> metrics; wrap rewrites each forget prompt (attacks)
    soft_template: str = "The instruction was to"
    # clauses appended to seeds to make "compose" candidates (seed x modifier): a combinatorial pool in
    # which some instructions beat every seed, so the optimizer has something to find
    modifiers: list[str] = field(default_factory=list)
    headline: tuple[str, str] = ("", "")  # (forget metric, utility metric) shown in plots, benches and attacks
    real_forget: Callable[[int], list[dict]] | None = None  # n -> real forget rows (instruction, response), for baselines
    retain_instructions: list[str] = field(default_factory=lambda: list(GENERIC_INSTRUCTIONS))

    def oracle(self, name: str = "") -> Oracle:
        name = name or self.default_oracle
        if name not in self.oracles:
            raise RevrelError(f"task '{self.name}' has no oracle '{name}'; choose one of {', '.join(self.oracles)}")
        return self.oracles[name]()
