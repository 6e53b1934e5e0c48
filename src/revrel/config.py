"""Run configuration: typed dataclasses, loaded from YAML and ``--set section.key=value`` flags.

Every value is checked once, here, so the stages downstream can trust their inputs; a bad value is
a :class:`RevrelError` that names the key and the allowed range.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from revrel.errors import RevrelError

# unlearning methods by name: revrel (revrel.release.loop) + the baselines registered in revrel.release.baselines.METHODS
RELEASE_METHODS = ("revrel", "ga", "graddiff", "npo", "simnpo", "pem-negation")


@dataclass
class RevealConfig:
    """Reveal: which instructions make the model show what it knows about the target."""

    optimizer: str = "neuralucb"  # "neuralucb" | "random" | "fixed" (seed instructions only)
    candidates: list[str] = field(default_factory=lambda: ["pool", "compose", "soft"])  # kinds of candidates
    n_paraphrases: int = 2  # model-written variants per seed instruction
    n_soft: int = 8  # INSTINCT soft-prompt candidates
    soft_dim: int = 10
    soft_tokens: int = 5
    extra_instructions: list[str] = field(default_factory=list)  # your own seed instructions, added to the task's
    seed_first: bool = True  # score the hand-written seeds first (they anchor the surrogate)
    n_init: int = 0  # random arms before UCB (after the seeds)
    pca_dim: int = 16  # NeuralUCB input: top principal directions of the hidden-state features (0: all)
    budget: int = 6  # UCB choices after the seeds and n_init
    # NeuralUCB exploration weight and reward scaling: fitting z-scored rewards with a small nu keeps the
    # confidence term from swamping score differences of a few hundredths (benchmarks/reveal_replay.py)
    nu: float = 0.001
    scale_rewards: bool = True
    subset: int = 64  # candidates scored by UCB per step
    arms_per_step: int = 4  # UCB picks this many distinct arms per step and samples them in one batch (speed; 1 = classic)
    k: int = 6  # responses per scored instruction
    top: int = 4  # pulls (or instructions, see forget_from) whose responses form the forget set
    # "pulls": the top-scoring pulls (one instruction scored on k responses), each judged on its own responses;
    # "instructions": every response of the top instructions ranked on all their pulls together;
    # "greedy": from every response, as many as the top pulls hold, chosen for the set's relevance x diversity
    forget_from: str = "pulls"
    alpha: float = 0.5  # weight of diversity in the harmonic mean
    embedder: str = "self"  # "self" | "minilm"
    oracle: str = ""  # empty: the task's default oracle
    relevance_threshold: float = 0.3  # keep responses at least this relevant
    # every round's Reveal draws the same random numbers (common random numbers): round-to-round changes in
    # relevance then reflect the model, not the luck of the draw; false: a fresh stream per round
    same_draws: bool = True
    forget_samples: int = 0  # extra responses sampled from each top instruction after the search (bigger forget set)
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 0.95
    batch_size: int = 16


@dataclass
class ReleaseConfig:
    """Release: train a forget PEM on the revealed data and negate it into the weights."""

    method: str = "revrel"
    rounds: int = 2  # max rounds of reveal -> release
    rank: int = 8
    lora_alpha: float = 16.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj", "up_proj", "down_proj"])
    lr: float = 1e-3
    epochs: int = 2
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 128
    train_dtype: str = "auto"  # autocast for training (master weights stay float32): auto (bf16 on CUDA, float32 on CPU) | float32 | bfloat16
    lambda_neg: float = 1.0
    lambda_orth: float = 0.1
    retain_anchor: float = 0.0  # weight of the squared change of retain-token log-probs while training a forget PEM (0: off)
    keep_contrast: float = 0.0  # weight of a DPO-style term that trains the forget PEM to raise forget text more than keep text (0: off)
    span_contrast: float = 0.0  # the same contrast inside the forget text: target spans vs the task's keep spans (needs span_loss)
    pem_ensemble: int = 1  # train this many forget PEMs (other seeds) and negate their mean update (one adapter of rank n * rank)
    pem_restarts: int = 1  # train this many forget PEMs (other seeds) and keep the one whose span contrast ends lowest (needs span_contrast)
    span_contrast_retain: bool = False  # the keep side's own entities (Task.keep_spans on retain.jsonl) join span contrast's rejected side
    contrast_beta: float = 5.0  # its sharpness: the margin (nats/token) saturates near a few / contrast_beta
    anchor_lambda: float = 0.0  # where the anchor looks: 0 on W + delta (first order); lam > 0 on the negated model W - lam * delta
    merge: bool = True  # false: model/ keeps the original weights; the rounds live on as adapters/negated_round_k (load_stacked)
    budget_pacing: bool = True  # round k may spend utility_budget ** (k / rounds), so early rounds leave room for later ones
    final_reveal: bool = True  # one more Reveal after the last round: its relevance is the run's end point
    line_search: int = 3  # lambda_neg, lambda_neg/2, ... tried until the round's utility budget holds; none does: revert, stop
    orth_norm: str = "l1"  # "l1" (sum |A_prev A_new^T|) | "fro" (squared Frobenius)
    retain_pem: bool = True
    # extract before subtract: project each forget update off the retain PEM's column / row space before negating
    ext_sub: str = "none"  # none | col | row | both
    negate_only: str = ""  # regex on module names: negate the PEM only there (e.g. "mlp"); empty: every module
    negate_rank: int = 0  # k > 0: negate only each module's top-k singular directions of B A; k < 0: all but the top |k|; 0: all
    span_loss: bool = False  # train the forget PEM only on the tokens the task marks as target (Task.target_spans)
    # selective pruning (Pochinkov & Schoots 2024): zero this share of all MLP neurons per round, the ones most active on
    # the revealed target spans relative to the self-generated keep side (0: off); halved by the line search like lambda
    prune: float = 0.0
    prune_steps: int = 1  # prune the share in this many steps, measuring the activity again after each
    negate: bool = True  # train a forget PEM and negate it; false: the round only prunes / suppresses (needs prune or suppress)
    # output suppression: lower the logits of this many tokens, the ones most specific to the revealed target spans against
    # the keep side (release.prune_keep), by about suppress_strength nats (an edit of the untied LM head; 0: off)
    suppress: int = 0
    suppress_strength: float = 8.0  # nats; halved by the line search like lambda
    suppress_unit: str = ""  # the spans whose tokens are suppressed: empty = release.span_unit; e.g. word while the PEM learns sentences
    suppress_prior: bool = False  # also count on the keep side how often the model expects each token (its summed
    # next-token probabilities), so a common word piece a small keep set lacks is not taken for a target token
    suppress_min_chars: int = 0  # suppress only tokens with at least this many characters besides a leading space: shorter
    # pieces ('n', ' D', ' b', 'st') are building blocks of ordinary words, and lowering one lowers every word it starts (0: any)
    prune_keep: str = "retain"  # the keep side pruning spares: retain (the self-generated keep-side texts) | keep_spans (the
    # task's keep spans inside the forget text, e.g. the clean words beside profane ones) | both (the larger activity of the two)
    edit_keep: int = 0  # this many more self-generated keep-side texts (answers to the task's keep instructions, keep.jsonl) join
    # the retain rows on pruning's and suppression's keep side only (never trained on): 128 texts are too few to show which
    # word pieces ordinary text uses, so a small keep side lets 'st' or ' T' pass for target tokens (0: the retain rows only)
    span_unit: str = "task"  # which spans: the task's own (task) or another unit it declares (Task.span_units, e.g. toxicity: word)
    retain_file: str = ""  # JSONL with instruction/response; empty: self-generated
    retain_from: str = "generic"  # self-generated retain set from: generic benign chat | task (the task's keep side)
    n_retain: int = 16
    relevance_target: float = 0.1  # stop when revealed relevance falls below this
    utility_budget: float = 1.5  # stop when retain-probe perplexity grows by more than this factor
    # baselines (method != revrel): ga | graddiff | npo | simnpo | pem-negation
    forget_source: str = "self"  # self: one Reveal on the original model | real: the task's real forget data
    forget_file: str = ""  # JSONL with instruction/response, overrides forget_source
    baseline_steps: int = 16  # optimizer steps for ga / graddiff / npo / simnpo
    baseline_lr: float = 1e-5
    baseline_lora: bool = False  # LoRA variant instead of full-parameter
    retain_weight: float = 1.0  # weight of the retain NLL (graddiff, npo, simnpo)
    npo_beta: float = 0.1
    simnpo_gamma: float = 0.0


@dataclass
class EvalConfig:
    """Before/after measurements written to report.json.

    Sizes left at 0 come from the profile the task declares (``quick``: the README run's sizes;
    ``full``: e.g. toxicity 400 prompts x 4 samples of 25 tokens as in the RTP protocol). ``split``
    picks the slice of every evaluation set (``revrel.data.splits``): tune on ``dev``, report ``test``.
    """

    profile: str = "quick"
    split: str = "test"
    n_prompts: int = 0
    samples: int = 0
    max_new_tokens: int = 0
    n_ppl: int = 0
    n_math: int = 0  # code task: GSM8K problems
    probe_items: int = 0  # likelihood probe: texts per group
    probes: bool = True
    probe_rounds: bool = False  # also score the probe after every Release round (evaluation only; the method never reads it)
    batch_size: int = 32  # generation rows per batch (32: 308 tokens/s vs 220 at 16 on 2 cores, bf16)
    dataset: str = ""  # task-specific choice, e.g. ner: conll2003 | wnut17 (empty: the task's default)


@dataclass
class RunConfig:
    task: str = "toxicity"
    model: str = "smollm2-135m-instruct"
    out: str = "runs/demo"
    seed: int = 0
    dtype: str = "float32"  # master weights: "float32" | "bfloat16"
    gen_backend: str = "hf"  # Reveal's sampler: "hf" (transformers, batched) | "vllm" (optional, GPU; see README)
    gen_dtype: str = "auto"  # generation copy: "auto" (bf16 where the CPU has native bf16) | "float32" | "bfloat16"
    reveal: RevealConfig = field(default_factory=RevealConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Range checks that types alone cannot express."""
        r, s, e = self.reveal, self.release, self.eval
        _check(self.dtype in ("float32", "bfloat16"), "dtype must be float32 or bfloat16")
        _check(self.gen_backend in ("hf", "vllm"), "gen_backend must be hf or vllm")
        _check(self.gen_dtype in ("auto", "float32", "bfloat16"), "gen_dtype must be auto, float32 or bfloat16")
        _check(r.optimizer in ("neuralucb", "random", "fixed"), "reveal.optimizer must be neuralucb, random or fixed")
        _check(bool(r.candidates) and set(r.candidates) <= {"pool", "compose", "soft"},
               "reveal.candidates must be a non-empty subset of [pool, compose, soft]")
        _check(r.embedder in ("self", "minilm"), "reveal.embedder must be self or minilm")
        _check(r.forget_from in ("pulls", "instructions", "greedy"), "reveal.forget_from must be pulls, instructions or greedy")
        _check(0.0 <= r.alpha <= 1.0, "reveal.alpha must be in [0, 1]")
        _check(0.0 <= r.relevance_threshold <= 1.0, "reveal.relevance_threshold must be in [0, 1]")
        _check(0.0 < r.top_p <= 1.0, "reveal.top_p must be in (0, 1]")
        _check(0.0 <= r.temperature <= 10.0, "reveal.temperature must be in [0, 10]")
        _check(s.train_dtype in ("auto", "float32", "bfloat16"), "release.train_dtype must be auto, float32 or bfloat16")
        _check(s.orth_norm in ("l1", "fro"), "release.orth_norm must be l1 or fro")
        _check(s.retain_from in ("generic", "task"), "release.retain_from must be generic or task")
        _check(s.ext_sub in ("none", "col", "row", "both"), "release.ext_sub must be none, col, row or both")
        _check(s.ext_sub == "none" or s.retain_pem, "release.ext_sub needs release.retain_pem: true (it projects off the retain PEM)")
        _check(s.method in RELEASE_METHODS, f"release.method must be one of {', '.join(RELEASE_METHODS)}")
        _check(s.forget_source in ("self", "real"), "release.forget_source must be self or real")
        _check(0.0 < s.baseline_lr <= 1.0, "release.baseline_lr must be in (0, 1]")
        _check(s.npo_beta > 0, "release.npo_beta must be > 0")
        _check(s.retain_weight >= 0, "release.retain_weight must be >= 0")
        _check(0.0 < s.lr <= 1.0, "release.lr must be in (0, 1]")
        _check(s.lambda_neg >= 0 and s.lambda_neg <= 100, "release.lambda_neg must be in [0, 100]")
        _check(s.retain_anchor >= 0, "release.retain_anchor must be >= 0")
        _check(s.keep_contrast >= 0, "release.keep_contrast must be >= 0")
        _check(s.contrast_beta > 0, "release.contrast_beta must be > 0")
        _check(s.span_contrast >= 0, "release.span_contrast must be >= 0")
        _check(s.pem_restarts >= 1, "release.pem_restarts must be >= 1")
        _check(1 <= s.pem_ensemble <= 16, "release.pem_ensemble is a number of PEMs to average and must be in [1, 16]")
        _check(s.pem_ensemble == 1 or s.pem_restarts == 1, "release.pem_ensemble averages PEMs and pem_restarts picks one: set only one of them")
        _check(s.pem_restarts == 1 or s.span_contrast > 0, "release.pem_restarts picks by the span contrast: set release.span_contrast > 0")
        _check(not s.span_contrast_retain or s.span_contrast > 0, "release.span_contrast_retain needs release.span_contrast > 0 (it widens that contrast)")
        _check(s.span_contrast == 0 or s.span_loss, "release.span_contrast needs release.span_loss: true (it contrasts the target spans)")
        _check(s.span_unit == "task" or s.span_loss, "release.span_unit needs release.span_loss: true (it picks the span loss's spans)")
        if s.negate_only:
            import re

            try:
                re.compile(s.negate_only)
            except re.error as exc:
                raise RevrelError(f"release.negate_only is not a valid regular expression: {exc}") from None
        _check(abs(s.negate_rank) < s.rank, "release.negate_rank must be between -(rank - 1) and rank - 1 (0: the whole update)")
        _check(0.0 <= s.prune <= 0.5, "release.prune is a share of the MLP neurons and must be in [0, 0.5]")
        _check(s.negate or s.prune > 0 or s.suppress > 0,
               "release.negate=false needs release.prune > 0 or release.suppress > 0 (otherwise a round changes nothing)")
        _check(0 <= s.suppress <= 5000, "release.suppress is a number of output tokens and must be in [0, 5000]")
        _check(s.suppress_strength > 0, "release.suppress_strength must be > 0 (nats by which the tokens' logits are lowered)")
        _check(s.suppress == 0 or s.merge, "release.suppress needs release.merge: true (the edited LM head is not an adapter to stack)")
        _check(s.prune == 0 or s.merge, "release.prune needs release.merge: true (zeroed neurons are not an adapter to stack)")
        _check(s.prune_keep in ("retain", "keep_spans", "both"), "release.prune_keep must be retain, keep_spans or both")
        _check(s.prune_keep == "retain" or s.span_loss, "release.prune_keep=keep_spans/both needs release.span_loss: true (keep spans sit beside the target spans)")
        _check(1 <= s.prune_steps <= 100, "release.prune_steps must be in [1, 100]")
        _check(s.suppress_min_chars >= 0, "release.suppress_min_chars must be >= 0")
        _check(0 <= s.edit_keep <= 100000, "release.edit_keep is a number of self-generated keep-side texts and must be in [0, 100000]")
        _check(s.anchor_lambda >= 0, "release.anchor_lambda must be >= 0 (the negation strength the anchor is measured at)")
        _check(e.split in ("dev", "test"), "eval.split must be dev (tune on it) or test (report it)")
        _check(bool(e.profile), "eval.profile must name a profile (quick or full)")
        _check(e.probes or not e.probe_rounds, "eval.probe_rounds needs eval.probes=true (it scores the likelihood probe after each round)")
        _check(s.lambda_orth >= 0, "release.lambda_orth must be >= 0")
        _check(s.utility_budget >= 1.0, "release.utility_budget is a perplexity ratio and must be >= 1")
        _check(bool(s.target_modules), "release.target_modules must not be empty")
        limits = {
            "reveal.forget_samples": (r.forget_samples, 0, 10_000), "reveal.n_paraphrases": (r.n_paraphrases, 0, 100), "reveal.n_soft": (r.n_soft, 0, 10_000),
            "reveal.soft_dim": (r.soft_dim, 1, 1024), "reveal.soft_tokens": (r.soft_tokens, 1, 64),
            "reveal.n_init": (r.n_init, 0, 10_000), "reveal.pca_dim": (r.pca_dim, 0, 100_000), "reveal.budget": (r.budget, 0, 100_000),
            "reveal.subset": (r.subset, 1, 1_000_000), "reveal.arms_per_step": (r.arms_per_step, 1, 1024), "reveal.k": (r.k, 1, 1024), "reveal.top": (r.top, 1, 10_000),
            "reveal.max_new_tokens": (r.max_new_tokens, 1, 4096), "reveal.batch_size": (r.batch_size, 1, 4096),
            "release.rounds": (s.rounds, 1, 1000), "release.line_search": (s.line_search, 1, 20), "release.rank": (s.rank, 1, 1024),
            "release.epochs": (s.epochs, 1, 1000), "release.batch_size": (s.batch_size, 1, 4096),
            "release.grad_accum": (s.grad_accum, 1, 4096), "release.max_length": (s.max_length, 8, 32768),
            "release.n_retain": (s.n_retain, 1, 100_000), "release.baseline_steps": (s.baseline_steps, 1, 1_000_000),
            "eval.n_prompts": (e.n_prompts, 0, 100_000), "eval.samples": (e.samples, 0, 1024),
            "eval.max_new_tokens": (e.max_new_tokens, 0, 4096), "eval.n_ppl": (e.n_ppl, 0, 100_000),
            "eval.n_math": (e.n_math, 0, 100_000), "eval.probe_items": (e.probe_items, 0, 100_000),
            "eval.batch_size": (e.batch_size, 1, 4096), "seed": (self.seed, 0, 2**32 - 1),
        }
        for key, (value, lo, hi) in limits.items():
            _check(lo <= value <= hi, f"{key}={value} is out of range; use a value in [{lo}, {hi}]")
        _check(s.lora_alpha > 0, "release.lora_alpha must be > 0")
        return self


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RevrelError(message)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against a dataclass field type (int/float/str/bool/list[str]/nested)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RevrelError(f"config key '{key}' must be a mapping of settings, got {type(value).__name__}")
        return _build(tp, value, prefix=f"{key}.")
    if origin in (list, typing.List):  # noqa: UP006
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise RevrelError(f"config key '{key}' must be a list, got {type(value).__name__}")
        return [_coerce(v, inner, f"{key}[]") for v in value]
    if origin in (typing.Union, types.UnionType):
        raise RevrelError(f"config key '{key}': unsupported type")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RevrelError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RevrelError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf"):
            return float(value)
        raise RevrelError(f"config key '{key}' must be a finite number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise RevrelError(f"config key '{key}' must be a string, got {value!r}")
    raise RevrelError(f"config key '{key}': unsupported type")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise RevrelError(f"unknown config key '{prefix}{unknown[0]}'; known keys: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()})


def merge_dicts(base: dict, extra: dict) -> dict:
    """``extra`` laid over ``base``, nested mappings merged key by key (neither is modified)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_set(items: list[str]) -> dict:
    """Turn ``["reveal.k=4", "release.rounds=3"]`` into a nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise RevrelError(f"--set '{item}' must look like section.key=value (e.g. reveal.k=4)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RevrelError(f"--set '{item}' conflicts with another --set for '{p}'")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Defaults <- YAML file <- overrides (CLI flags), then validated."""
    data: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise RevrelError(f"config file {p} does not exist; check the --config path")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise RevrelError(f"config file {p} is not UTF-8 text; re-save it as UTF-8") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise RevrelError(f"config file {p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
        except RecursionError as exc:
            raise RevrelError(f"config file {p} is nested too deeply to be a revrel config") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise RevrelError(f"config file {p} must be a YAML mapping (key: value), got {type(loaded).__name__}")
        data = loaded
    if overrides:
        data = merge_dicts(data, overrides)
    if not all(isinstance(k, str) for k in data):
        raise RevrelError("config keys must be strings")
    return _build(RunConfig, data).validate()
