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

# unlearning methods by name: revrel (revrel.rounds) + the baselines registered in revrel.release.baselines.METHODS
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
    batch_size: int = 64  # generation rows per batch: 64 decodes ~1.3x the tokens/s of 32 on 2 cores (float32)


@dataclass
class PemConfig:
    """Training of a LoRA "PEM" (the forget PEMs that ``negate`` negates, the retain PEM, the pem-negation baseline)."""

    rank: int = 8  # LoRA rank (lora_alpha is 2 * rank, so the update's scale does not change with the rank)
    lr: float = 1e-3
    epochs: int = 2
    batch_size: int = 8
    max_length: int = 128  # tokens per instruction + response (also what pruning and suppression read)
    lambda_orth: float = 0.1  # O-LoRA weight keeping forget PEMs orthogonal to the retain PEM and earlier rounds (0: no retain PEM)


@dataclass
class ReleaseConfig:
    """Release: an ordered list of edits (``revrel.release.edits``), each set as strong as the round's budget allows.

    ``edits`` is a list of one-key mappings, e.g. ``[{suppress: {tokens: 50, strength: 8, unit: word}},
    {negate: {strength: 0.03125, unit: word, contrast: 8}}]``; each edit's own settings are checked by its
    config dataclass when the run starts (:func:`revrel.release.edits.parse_edits`).
    """

    rounds: int = 2  # max rounds of reveal -> release
    edits: list[dict] = field(default_factory=lambda: [{"negate": {}}])
    # keep-side cost the run may spend, nats/token: the largest change of a keep group's mean NLL (revrel.release.budget);
    # round k of n may reach budget * k / n, and each edit is set to the strongest strength within its share
    budget: float = 0.05
    line_search: int = 8  # keep-side measurements per edit to find that strength (up, down, then inside the bracket: revrel.release.edit.line_search)
    # the paper's stop rule: stop when a round's Reveal (on the model the last round edited) finds relevance no lower than
    # the last round's; false: run every round (rounds also stop when Reveal finds nothing relevant or the budget is spent)
    stop_on_plateau: bool = True
    retain_from: str = "generic"  # the self-generated keep side: generic (benign chat) | task (the task's keep instructions) | a JSONL path
    n_retain: int = 16  # keep-side answers generated for training (the self-probe takes a quarter of the instructions besides)
    keep_side: str = "retain"  # what prune / suppress spare: retain (the keep-side texts) | spans (the task's keep spans inside
    # the forget text) | both (the larger of the two)
    keep_texts: int = 0  # this many more keep-side answers (keep.jsonl) for prune / suppress only: 128 texts are too few to
    # show which word pieces ordinary text uses, so a small keep side lets 'st' or ' T' pass for target tokens
    pem: PemConfig = field(default_factory=PemConfig)


@dataclass
class BaselineConfig:
    """The one-stage baselines (``method``: ga, graddiff, npo, simnpo, pem-negation; ``revrel.release.baselines``)."""

    forget_source: str = "self"  # self: one Reveal on the original model | real: the task's real forget data | a JSONL path
    steps: int = 16  # optimizer steps (ga / graddiff / npo / simnpo)
    lr: float = 1e-5
    lora: bool = False  # LoRA variant instead of full-parameter
    retain_weight: float = 1.0  # weight of the retain NLL (graddiff, npo, simnpo)
    beta: float = 0.1  # npo / simnpo
    gamma: float = 0.0  # simnpo
    strength: float = 1.0  # pem-negation's lambda


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
    reveal_after: bool = True  # Reveal once more on the final model: the revealed relevance after the last round (report only)
    batch_size: int = 64  # generation / scoring rows per batch (64: ~1.3x the tokens/s of 32 on 2 cores, float32)
    dataset: str = ""  # task-specific choice, e.g. ner: conll2003 | wnut17 (empty: the task's default)


@dataclass
class TargetConfig:
    """``task: target``: what to forget, given by name (``revrel.tasks.target``); everything else comes from the model."""

    name: str = ""  # e.g. "William Shakespeare"
    about: str = ""  # a few words that disambiguate it, e.g. "English playwright"
    keep: list[str] = field(default_factory=list)  # neighbours to keep besides those the model names
    eval_file: str = ""  # your own texts about the target (JSONL: text, or question + answer), a second target probe group
    n_neighbours: int = 4  # neighbours in all (the keep list first, then those the model names)


@dataclass
class RunConfig:
    task: str = "toxicity"
    model: str = "smollm2-135m-instruct"
    out: str = "runs/demo"
    seed: int = 0
    dtype: str = "float32"  # master weights: "float32" | "bfloat16"
    gen_backend: str = "hf"  # Reveal's sampler: "hf" (transformers, batched) | "vllm" (optional, GPU; see README)
    gen_dtype: str = "auto"  # generation copy: "auto" (bf16 where the CPU has native bf16) | "float32" | "bfloat16"
    method: str = "revrel"  # revrel (Reveal and Release rounds) or a baseline: ga | graddiff | npo | simnpo | pem-negation
    reveal: RevealConfig = field(default_factory=RevealConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    target: TargetConfig = field(default_factory=TargetConfig)

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
        p, b = s.pem, self.baseline
        _check(self.method in RELEASE_METHODS, f"method must be one of {', '.join(RELEASE_METHODS)}")
        _check(s.retain_from in ("generic", "task") or s.retain_from.endswith(".jsonl"),
               "release.retain_from must be generic, task or the path of a .jsonl file of instruction/response rows")
        _check(s.keep_side in ("retain", "spans", "both"), "release.keep_side must be retain, spans or both")
        _check(b.forget_source in ("self", "real") or b.forget_source.endswith(".jsonl"),
               "baseline.forget_source must be self, real or the path of a .jsonl file of instruction/response rows")
        _check(0.0 < b.lr <= 1.0, "baseline.lr must be in (0, 1]")
        _check(b.beta > 0, "baseline.beta must be > 0")
        _check(b.retain_weight >= 0, "baseline.retain_weight must be >= 0")
        _check(0 <= b.strength <= 100, "baseline.strength must be in [0, 100]")
        _check(0.0 < p.lr <= 1.0, "release.pem.lr must be in (0, 1]")
        _check(p.lambda_orth >= 0, "release.pem.lambda_orth must be >= 0")
        _check(self.method != "revrel" or bool(s.edits), "release.edits must list at least one edit, e.g. [{negate: {}}]")
        _check(e.split in ("dev", "test"), "eval.split must be dev (tune on it) or test (report it)")
        _check(bool(e.profile), "eval.profile must name one of the task's profiles (quick, full; toxicity also standard)")
        _check(e.probes or not e.probe_rounds, "eval.probe_rounds needs eval.probes=true (it scores the likelihood probe after each round)")
        t = self.target
        _check(self.task != "target" or bool(t.name.strip()), "the target task needs a name: --target \"William Shakespeare\"")
        _check(not t.eval_file or Path(t.eval_file).is_file(), f"target.eval_file {t.eval_file} does not exist; check --eval-file")
        _check(0 <= t.n_neighbours <= 32, "target.n_neighbours must be in [0, 32]")
        _check(0.0 < s.budget <= 10.0, "release.budget is a keep-side NLL change in nats/token and must be in (0, 10]")
        limits = {
            "reveal.forget_samples": (r.forget_samples, 0, 10_000), "reveal.n_paraphrases": (r.n_paraphrases, 0, 100), "reveal.n_soft": (r.n_soft, 0, 10_000),
            "reveal.soft_dim": (r.soft_dim, 1, 1024), "reveal.soft_tokens": (r.soft_tokens, 1, 64),
            "reveal.n_init": (r.n_init, 0, 10_000), "reveal.pca_dim": (r.pca_dim, 0, 100_000), "reveal.budget": (r.budget, 0, 100_000),
            "reveal.subset": (r.subset, 1, 1_000_000), "reveal.arms_per_step": (r.arms_per_step, 1, 1024), "reveal.k": (r.k, 1, 1024), "reveal.top": (r.top, 1, 10_000),
            "reveal.max_new_tokens": (r.max_new_tokens, 1, 4096), "reveal.batch_size": (r.batch_size, 1, 4096),
            "release.rounds": (s.rounds, 1, 1000), "release.line_search": (s.line_search, 1, 20), "release.pem.rank": (p.rank, 1, 1024),
            "release.pem.epochs": (p.epochs, 1, 1000), "release.pem.batch_size": (p.batch_size, 1, 4096),
            "release.pem.max_length": (p.max_length, 8, 32768), "release.keep_texts": (s.keep_texts, 0, 100_000),
            "release.n_retain": (s.n_retain, 1, 100_000), "baseline.steps": (b.steps, 1, 1_000_000),
            "eval.n_prompts": (e.n_prompts, 0, 100_000), "eval.samples": (e.samples, 0, 1024),
            "eval.max_new_tokens": (e.max_new_tokens, 0, 4096), "eval.n_ppl": (e.n_ppl, 0, 100_000),
            "eval.n_math": (e.n_math, 0, 100_000), "eval.probe_items": (e.probe_items, 0, 100_000),
            "eval.batch_size": (e.batch_size, 1, 4096), "seed": (self.seed, 0, 2**32 - 1),
        }
        for key, (value, lo, hi) in limits.items():
            _check(lo <= value <= hi, f"{key}={value} is out of range; use a value in [{lo}, {hi}]")
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
        if isinstance(value, str) and inner is not dict:  # "a,b" for a list of names; an edit list must be YAML
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            hint = " written as YAML, e.g. [{negate: {strength: 1}}]; quote regexes with single quotes" if inner is dict else ""
            raise RevrelError(f"config key '{key}' must be a list{hint}, got {type(value).__name__}")
        return [_coerce(v, inner, f"{key}[]") for v in value]
    if tp is dict:  # an entry of release.edits: {name: {settings}} (or a bare name), checked by revrel.release.edit.parse_edits
        if isinstance(value, (dict, str)):
            return value
        raise RevrelError(f"config key '{key}' must be a mapping like negate: {{strength: 1}}, got {value!r}")
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


RECIPES = Path(__file__).parent / "recipes"


def recipe_path(task: str) -> Path | None:
    """The packaged recipe of a built-in task (``revrel/recipes/<task>.yaml``): its default that forgets."""
    p = RECIPES / f"{task}.yaml"
    return p if p.is_file() else None


def load_config(path: str | Path | None = None, overrides: dict | None = None, recipe: bool = True) -> RunConfig:
    """Defaults <- YAML file (none given: the task's packaged recipe, where it has one and ``recipe``) <- overrides
    (CLI flags), then validated."""
    data: dict = {}
    if not path and recipe:
        task = (overrides or {}).get("task", RunConfig.task)
        path = recipe_path(task) if isinstance(task, str) else None
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
