"""Reveal: find instructions that make the current model show the forget target, and collect the
responses they elicit as the self-generated forget set."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from revrel.config import RevealConfig
from revrel.models.generation import GenerationConfig, generate
from revrel.progress import progress_bar
from revrel.reveal.bandit import run_bandit
from revrel.reveal.candidates import Candidate, compositions, dedupe, features, paraphrases, soft_prompts
from revrel.reveal.forget_set import best_per_instruction, build_forget_set
from revrel.reveal.scoring import diversity, harmonic_score
from revrel.tasks.base import Oracle, Task


@dataclass
class RevealResult:
    forget: list[dict]  # instruction, response, relevance, provenance
    evaluated: list[dict]  # every scored instruction, in the order it was scored
    generations: int  # responses generated while scoring (the generation budget)
    relevance: float  # mean relevance of every response generated this round
    seconds: float = 0.0
    candidates: list[dict] = field(default_factory=list)

    @property
    def seed_relevance(self) -> float | None:
        """Mean relevance of the responses to the hand-written seeds only: the same instructions every
        round, so round-to-round changes are not confounded by what the optimizer chose to try."""
        rel = [r for e in self.evaluated if e["kind"] == "seed" for r in e["relevances"]]
        return float(np.mean(rel)) if rel else None

    def table(self, n: int = 10) -> list[dict]:
        rows = best_per_instruction(self.evaluated)[:n]
        return [{k: e[k] for k in ("instruction", "kind", "relevance", "diversity", "score")} for e in rows]


def build_candidates(model, tokenizer, task: Task, cfg: RevealConfig, seed: int) -> list[Candidate]:
    """Seed instructions (the task's and ``cfg.extra_instructions``), plus model-written paraphrases and soft-prompt
    instructions if configured."""
    seeds = [*task.seed_instructions, *cfg.extra_instructions]
    cands = [Candidate(s, "seed", s) for s in seeds]
    if cfg.optimizer == "fixed":
        return dedupe(cands)
    if "pool" in cfg.candidates:
        cands += paraphrases(model, tokenizer, seeds, cfg.n_paraphrases, seed, cfg.batch_size)
    if "compose" in cfg.candidates:
        cands += compositions(seeds, task.modifiers)
    if "pool" not in cfg.candidates:
        cands = [c for c in cands if c.kind != "seed" and c.kind != "paraphrase"]
    if "soft" in cfg.candidates:
        cands += soft_prompts(model, tokenizer, cfg.n_soft, cfg.soft_dim, cfg.soft_tokens, task.soft_template,
                              seeds, seed, cfg.batch_size)
    return dedupe(cands) or [Candidate(s, "seed", s) for s in seeds]


def reveal(model, tokenizer, task: Task, oracle: Oracle, embed, cfg: RevealConfig, *, seed: int = 0, round_: int = 0,
           candidates: list[Candidate] | None = None) -> RevealResult:
    """Score instructions (fixed / random / NeuralUCB) by relevance x diversity and build the forget set."""
    t0 = time.time()
    cands = candidates if candidates is not None else build_candidates(model, tokenizer, task, cfg, seed)
    gcfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size)
    evaluated: list[dict] = []
    seeds = [i for i, c in enumerate(cands) if c.kind == "seed"] if cfg.seed_first else []
    n_arms = len(cands) if cfg.optimizer == "fixed" else len(seeds) + cfg.n_init + cfg.budget
    bar = progress_bar(total=n_arms, desc=f"reveal round {round_}: instructions")
    draw = 0 if cfg.same_draws else round_  # random-number stream: shared by every round (common random numbers) or per round

    def score_many(idx: list[int]) -> list[float]:
        prompts = [cands[i].text for i in idx for _ in range(cfg.k)]
        gcfg.seed = seed * 1000 + draw * 100 + len(evaluated)
        gens = generate(model, tokenizer, prompts, gcfg, desc="reveal: sample")
        texts = [g.text for g in gens]
        rel = oracle(texts)
        out = []
        for j, i in enumerate(idx):
            resp, r = texts[j * cfg.k : (j + 1) * cfg.k], rel[j * cfg.k : (j + 1) * cfg.k]
            relevance = float(np.mean(r))
            div = diversity(embed(resp))
            score = harmonic_score(relevance, div, cfg.alpha)
            evaluated.append({"instruction": cands[i].text, "kind": cands[i].kind, "relevance": relevance, "diversity": div,
                              "score": score, "responses": resp, "relevances": [float(x) for x in r], "round": round_})
            out.append(score)
            bar.update(1)
            bar.set_postfix(best=f"{max(e['score'] for e in evaluated):.3f}")
        return out

    if cfg.optimizer == "fixed":
        score_many(list(range(len(cands))))
    elif cfg.optimizer == "random":
        # the same schedule as NeuralUCB, only the choice rule differs: the seeds first (seed_first), then
        # n_init + budget arms drawn uniformly from the other candidates
        if seeds:
            score_many(seeds)
        score_many(random_arms(len(cands), seeds, cfg.n_init + cfg.budget, np.random.default_rng(seed * 1000 + draw)))
    else:
        feats = features(model, tokenizer, cands, cfg.batch_size)
        run_bandit(feats, lambda i: score_many([i])[0], n_init=cfg.n_init, budget=cfg.budget, subset=cfg.subset, seed=seed * 1000 + draw,
                   init=seeds, pca_dim=cfg.pca_dim, batch=cfg.arms_per_step, reward_many=score_many, nu=cfg.nu,
                   scale_rewards=cfg.scale_rewards)
    bar.close()
    if cfg.forget_samples and evaluated:
        _exploit(best_per_instruction(evaluated, cfg.alpha)[: cfg.top], evaluated, cfg.forget_samples, model, tokenizer, oracle, gcfg,
                 seed * 1000 + draw * 100 + 99)
    forget = build_forget_set(evaluated, top=cfg.top, threshold=cfg.relevance_threshold, alpha=cfg.alpha, by=cfg.forget_from,
                              embed=embed if cfg.forget_from == "greedy" else None)
    all_rel = [r for e in evaluated for r in e["relevances"]]
    return RevealResult(forget=forget, evaluated=evaluated, generations=len(all_rel), relevance=float(np.mean(all_rel)),
                        seconds=time.time() - t0, candidates=[c.to_dict() for c in cands])


def random_arms(n_cands: int, seeds: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """``n`` arms drawn uniformly from the candidates other than ``seeds`` (all of them when only seeds
    exist), with replacement only when there are fewer than ``n``: random choice's part of the schedule."""
    taken = set(seeds)
    rest = [i for i in range(n_cands) if i not in taken] or list(range(n_cands))
    return [rest[int(i)] for i in rng.choice(len(rest), size=n, replace=len(rest) < n)]


def _exploit(top: list[dict], evaluated: list[dict], n: int, model, tokenizer, oracle: Oracle, gcfg: GenerationConfig,
             seed: int) -> None:
    """``n`` more responses from each top instruction, appended to its first scored entry: a bigger
    forget set for the PEM (more of what the best instructions reveal) and more samples behind the
    round's relevance."""
    gcfg.seed = seed
    gens = generate(model, tokenizer, [e["instruction"] for e in top for _ in range(n)], gcfg, desc="reveal: forget samples")
    texts = [g.text for g in gens]
    rel = oracle(texts)
    first = {}
    for e in evaluated:
        first.setdefault(e["instruction"], e)
    for j, t in enumerate(top):
        e = first[t["instruction"]]
        e["responses"] = e["responses"] + texts[j * n : (j + 1) * n]
        e["relevances"] = e["relevances"] + [float(x) for x in rel[j * n : (j + 1) * n]]
        e["extra_samples"] = n
