"""Sweep Release settings on a recorded round against the dev likelihood probes, without generating.

Reads a folder written by ``release_record.py``. For every combination of ``--grid`` values it trains
the retain PEM (cached per retain-relevant setting) and the forget PEM on the recorded data, applies
Ext-Sub when asked, and then, reusing that one PEM (``NegationSweep``), scores every ``--lambdas``
strength on the task's dev probe (paired change vs the original, nats/token) and on the method's own
keep-side signal (the self-generated retain probe's perplexity ratio, what the line search sees).

    python benchmarks/release_sweep.py --rec benchmarks/results/release_rec_code \\
        --grid release.ext_sub=none,both --grid release.span_loss=false,true --lambdas 0.5 1 2 4

With ``release.negate=false`` and ``release.suppress=N`` the strengths are nats of output suppression
(``revrel.release.suppress.SuppressSweep``; a ``release.prune`` share, if set, is pruned first).
With ``release.negate=true`` and ``release.suppress=N`` a point is a negation curve on top of a fixed suppression
(``release.suppress_strength`` nats, applied first and trained under, as a Release round does; lambda 0 is the original).
With ``release.negate=false`` alone a point is a pruning curve instead (``release.prune``): its "lambdas" are the
shares of MLP neurons pruned, measured once on the original model (``revrel.release.prune.PruneSweep``):

    python benchmarks/release_sweep.py --rec benchmarks/results/release_rec_code \
        --set release.span_loss=true --set release.negate=false --lambdas 0.0025 0.005 0.01 0.02 0.04

``--sampled N`` also scores each point's sampled metrics on N dev prompts (expected max toxicity, function share,
with bootstrap intervals; fluency under the original), and the original's once (``REC/sampled_original_N.json``):
what a likelihood probe cannot say, e.g. whether a toxicity edit changes what the model writes.

Writes ``sweep.jsonl`` (one row per setting x lambda; rows already there are skipped, so a sweep
resumes) and ``pareto.png`` (target change vs utility change, one curve per setting).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from revrel.config import load_config, merge_dicts, parse_set
from revrel.io import read_jsonl
from revrel.models.generation import perplexity, sequence_logprobs
from revrel.models.loading import load_model
from revrel.pipeline import round_prober
from revrel.release.checkpoint import load_adapter_A, save_adapter
from revrel.release.ext_sub import adapter_deltas, extract, retain_subspaces
from revrel.rounds import with_keep_spans, with_target_spans
from revrel.release.negate import negation_filters
from revrel.release.orthogonality import stack_previous
from revrel.release.pem import train_pem, train_pem_restarts
from revrel.release.prune import PruneSweep, keep_sides
from revrel.release.sweep import NegationSweep
from revrel.tasks import get_task

RETAIN_KEYS = ("rank", "lora_alpha", "target_modules", "lr", "epochs", "batch_size", "max_length")


def settings_of(kvs: list[str]) -> dict:
    """A sweep row's ``settings``: its --set strings as {key: value text}, the row's identity for resuming."""
    return {kv.split("=", 1)[0]: kv.split("=", 1)[1] for kv in kvs}


def done_keys(out: Path, *fields: str) -> set[tuple]:
    """(settings JSON, *fields) of the rows already in ``out``: a resumed sweep skips these points."""
    if not out.is_file():
        return set()
    return {(json.dumps(r["settings"]), *(r[f] for f in fields)) for r in read_jsonl(out, allow_empty=True)}


def grid_points(grids: list[str]) -> list[dict]:
    """``["release.ext_sub=none,both", "release.lr=1e-3"]`` -> every combination as --set style strings."""
    axes = []
    for g in grids:
        key, values = g.split("=", 1)
        axes.append([f"{key}={v}" for v in values.split(",")])
    return [list(c) for c in itertools.product(*axes)] if axes else [[]]


def probe_ratio(model, tok, rows: list[dict], ppl0: float) -> float:
    return perplexity(sequence_logprobs(model, tok, [r["instruction"] for r in rows], [r["response"] for r in rows], batch_size=16)) / ppl0


class DevAxes:
    """What every sweep point is scored on: a record's dev probe (paired against the original's per-text
    sums in record.json) and its self-generated retain probe (as a perplexity ratio to the original)."""

    def __init__(self, rec: Path, cfg, loaded) -> None:
        record = json.loads((rec / "record.json").read_text())
        self.tok = loaded.tokenizer
        self.dev = round_prober(get_task(cfg.task), cfg, self.tok, record["dev_probe_items"])
        self.probe_rows = read_jsonl(rec / "probe.jsonl", allow_empty=True)
        self.ppl0 = probe_ratio(loaded.model, self.tok, self.probe_rows, 1.0)

    def score(self, model) -> dict:
        """The sweep row's measurement fields for ``model``."""
        return self.dev(model) | {"self_probe_ppl_ratio": round(probe_ratio(model, self.tok, self.probe_rows, self.ppl0), 4)}


class DevSampled:
    """The task's sampled metrics on ``n`` dev prompts (bootstrap intervals over prompts), fluency scored under a
    second copy of the original; the original's own are computed once and kept in ``REC/sampled_original_N.json``."""

    def __init__(self, rec: Path, cfg, loaded, n: int) -> None:
        self.task, self.tok = get_task(cfg.task), loaded.tokenizer
        self.cfg = load_config(None, merge_dicts(cfg.to_dict(), {"eval": {"split": "dev", "profile": "full", "n_prompts": n, "n_math": n}}))
        self.ecfg, self.oracle = self.task.eval_config(self.cfg.eval), self.task.oracle(self.cfg.reveal.oracle)
        self.reference = load_model(cfg.model, dtype=cfg.dtype).model
        path = rec / f"sampled_original_{n}.json"
        if not path.is_file():
            path.write_text(json.dumps(self.score(loaded.model), indent=1))
        self.original = json.loads(path.read_text())

    def score(self, model) -> dict:
        from revrel.models.loading import inference_view

        c, t0 = self.cfg, time.time()
        m = self.task.evaluate(inference_view(model, c.gen_dtype), self.tok, self.ecfg, self.oracle,
                               seed=c.seed, reference=inference_view(self.reference, c.gen_dtype))
        return {k: v for k, v in m.items() if k != "examples"} | {"seconds": round(time.time() - t0, 1)}


def append_row(out: Path, row: dict, label: str) -> None:
    with open(out, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"{label}: target {row['target']['change']:+.3f} utility {row['utility']['change']:+.3f} "
          f"selectivity {row['selectivity']['change']:+.3f} self-probe ratio {row['self_probe_ppl_ratio']:.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rec", required=True)
    ap.add_argument("--set", action="append", default=[], help="fixed overrides for every point")
    ap.add_argument("--grid", action="append", default=[], help="KEY=v1,v2,... (combined as a product)")
    ap.add_argument("--lambdas", nargs="+", type=float, default=[0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--out", help="default: REC/sweep.jsonl")
    ap.add_argument("--sampled", type=int, default=0, metavar="N", help="also the sampled metrics on N dev prompts per point")
    ap.add_argument("--table", action="store_true", help="only print the markdown table of what the sweep file holds")
    args = ap.parse_args()
    rec = Path(args.rec)
    if args.table:
        print(table(Path(args.out or rec / "sweep.jsonl")))
        return
    base_cfg = yaml.safe_load((rec / "config.yaml").read_text())
    forget, retain = (read_jsonl(rec / f"{n}.jsonl", allow_empty=True) for n in ("forget", "retain"))
    out = Path(args.out or rec / "sweep.jsonl")
    done = done_keys(out, "lambda")
    loaded = load_model(base_cfg["model"], dtype=base_cfg["dtype"])
    task = get_task(base_cfg["task"])
    axes = DevAxes(rec, load_config(None, base_cfg), loaded)
    sampled = DevSampled(rec, load_config(None, base_cfg), loaded, args.sampled) if args.sampled else None
    retain_cache: dict[str, Path] = {}
    for point in grid_points(args.grid):
        settings = settings_of(args.set + point)
        todo = [lam for lam in args.lambdas if (json.dumps(settings), lam) not in done]
        if not todo:
            continue
        p = negation_point(rec, base_cfg, args.set + point, loaded, task, forget, retain, retain_cache)
        for lam in todo:
            t1 = time.time()
            model = p.sweep.set(lam)
            row = {"settings": settings, "lambda": lam, **axes.score(model),
                   **({"sampled": sampled.score(model), "sampled_original": sampled.original} if sampled else {}),
                   "train": p.train, "train_seconds": p.train_seconds, "score_seconds": round(time.time() - t1, 1),
                   "ext_sub": p.ext_sub, "negate_only": p.negate_only, "span_loss": p.span_loss, "forget_rows": p.forget_rows}
            append_row(out, row, f"{settings} lambda={lam:g}")
        loaded.model = p.sweep.set(0.0)
    plot(out)


@dataclass
class Point:
    """One sweep setting's trained forget PEM, ready to be negated at any strength (``sweep.set(lam)``)."""

    sweep: NegationSweep
    train: dict
    train_seconds: float
    ext_sub: dict | None
    negate_only: dict | None
    span_loss: dict | None
    forget_rows: int


def negation_point(rec: Path, base_cfg: dict, kvs: list[str], loaded, task, forget: list[dict], retain: list[dict],
                   retain_cache: dict[str, Path]) -> Point:
    """The forget PEM of one setting (``kvs``: --set strings; ``sweep.*`` keys are sweep-only knobs) on a record's
    data, with its retain PEM, Ext-Sub and negate-only applied as a Release round would. Both PEMs are kept on
    disk under the record (keyed by the settings that shape them), so a second sweep or the test-split bench
    reloads them instead of training again. ``loaded.model`` must be the original model."""
    over = parse_set([kv for kv in kvs if not kv.startswith("sweep.")])
    if over.get("release", {}).get("negate") is False and not over["release"].get("suppress"):
        over["release"].setdefault("prune", 0.01)  # a pruning curve: its strengths are the pruned shares (release.prune)
    cfg = load_config(None, merge_dicts(base_cfg, over))
    s = cfg.release
    settings = settings_of(kvs)
    t0 = time.time()
    keep_texts = retain + record_keep(rec, s.edit_keep)  # pruning's and suppression's keep side (release.edit_keep)
    if not s.negate:
        return (suppress_point if s.suppress else prune_point)(loaded, task, forget, keep_texts, s, settings, t0)
    suppressed = None
    if s.suppress:  # suppression first, at its fixed strength: the forget PEM trains under it, as in a Release round
        from revrel.release.suppress import SuppressSweep

        rows_s, _, keep_s, extra_s = edit_rows(task, forget, keep_texts, s, unit=s.suppress_unit or s.span_unit)
        suppressed = SuppressSweep.from_config(loaded.model, loaded.tokenizer, rows_s, keep_s, s, extra_s)
        suppressed.set(s.suppress_strength)
    prev_A, retain_dir = None, None
    if s.retain_pem and (s.lambda_orth > 0 or s.ext_sub != "none" or "sweep.retain_contrast" in settings):
        key = json.dumps({k: getattr(s, k) for k in RETAIN_KEYS})
        if key not in retain_cache:  # one retain PEM per retain-relevant setting, kept on disk across sweeps
            retain_cache[key] = rec / "retain_pems" / hashlib.sha1(key.encode()).hexdigest()[:12]
            if not (retain_cache[key] / "key.json").is_file():
                pm, _ = train_pem(loaded.model, loaded.tokenizer, retain, s, seed=cfg.seed + 7, desc="retain PEM")
                save_adapter(pm, retain_cache[key])
                (retain_cache[key] / "key.json").write_text(key)
                loaded.model = pm.unload()
        retain_dir = retain_cache[key]
        prev_A = stack_previous([load_adapter_A(retain_dir)]) if s.lambda_orth > 0 else None
    rows, span_info = with_target_spans(task, forget, keep=s.span_contrast > 0, unit=s.span_unit) if s.span_loss else (forget, None)
    # ext_sub, negate_only, negate_rank and retain_contrast act after training: one forget PEM for all of them, kept on disk
    fkey = json.dumps({k: v for k, v in sorted(settings.items()) if k not in ("release.ext_sub", "release.negate_only", "release.negate_rank", "sweep.retain_contrast")})
    fdir = rec / "forget_pems" / hashlib.sha1(fkey.encode()).hexdigest()[:12]
    if (fdir / "train.json").is_file():
        from peft import PeftModel

        pm, tsum = PeftModel.from_pretrained(loaded.model, str(fdir)), json.loads((fdir / "train.json").read_text())
    else:
        pm, tlog = train_pem_restarts(loaded.model, loaded.tokenizer, rows, s, seed=cfg.seed * 1000 + 1, prev_A=prev_A, desc="forget PEM",
                             retain_rows=with_keep_spans(task, retain, s.span_unit) if s.span_contrast_retain else retain)
        tsum = tlog.summary()
        save_adapter(pm, fdir)
        (fdir / "train.json").write_text(json.dumps(dict(tsum, key=fkey)))
    ext = extract(pm, retain_subspaces(retain_dir), s.ext_sub) if s.ext_sub != "none" else None
    only = negation_filters(pm, s)
    mu = float(settings.get("sweep.retain_contrast", 0))  # sweep-only knob: negate delta_forget - mu * delta_retain
    sweep = NegationSweep(pm, minus=adapter_deltas(retain_dir) if mu else None, mu=mu)
    if suppressed is not None:
        sweep = HeldUnder(suppressed, s.suppress_strength, sweep)
    return Point(sweep, tsum, round(time.time() - t0, 1), ext, only, span_info, len(rows))


def record_keep(rec: Path, n: int) -> list[dict]:
    """The first ``n`` of a record's extra keep-side texts (keep.jsonl, ``release_record.py --edit-keep``) for release.edit_keep."""
    if not n:
        return []
    rows = read_jsonl(rec / "keep.jsonl", allow_empty=True) if (rec / "keep.jsonl").is_file() else []
    if len(rows) < n:
        raise SystemExit(f"release.edit_keep={n}: {rec} holds {len(rows)} extra keep-side texts; "
                         f"run release_record.py --out {rec} --task T --edit-keep {n} first")
    return rows[:n]


def edit_rows(task, forget: list[dict], retain: list[dict], s, unit: str = "") -> tuple[list[dict], dict | None, list[dict], list[dict] | None]:
    """The target rows (their spans with span_loss, in ``unit`` or release.span_unit, and keep spans when
    release.prune_keep needs them), their span info, and the keep side: what a pruning or a suppression curve measures on."""
    rows, span_info = (with_target_spans(task, forget, keep=s.prune_keep != "retain", unit=unit or s.span_unit) if s.span_loss else (forget, None))
    return (rows, span_info, *keep_sides(rows, retain, s.prune_keep))


def prune_point(loaded, task, forget: list[dict], retain: list[dict], s, settings: dict, t0: float) -> Point:
    """A pruning curve (release.negate=false): the target side is the forget rows' spans (with span_loss), the keep
    side as ``release.prune_keep`` says; ``sweep.set(share)`` prunes that share of the MLP neurons from the original weights."""
    rows, span_info, keep, extra = edit_rows(task, forget, retain, s)
    sweep = PruneSweep(loaded.model, loaded.tokenizer, rows, keep, s.prune_steps, s.max_length, extra)
    return Point(sweep, {"activity_rows": len(rows), "keep_rows": len(keep)}, round(time.time() - t0, 1), None, None, span_info, len(rows))


def suppress_point(loaded, task, forget: list[dict], retain: list[dict], s, settings: dict, t0: float) -> Point:
    """An output-suppression curve (release.negate=false, release.suppress=N): the strengths are nats by which the
    N most target-specific tokens' logits are lowered; with release.prune > 0 that share is pruned first (fixed)."""
    from revrel.release.suppress import SuppressSweep

    rows, span_info, keep, extra = edit_rows(task, forget, retain, s)
    prune = PruneSweep(loaded.model, loaded.tokenizer, rows, keep, s.prune_steps, s.max_length, extra) if s.prune > 0 else None
    if prune:
        prune.set(s.prune)
    # as in a Release round: pruning reads release.span_unit's spans, suppression release.suppress_unit's when set;
    # the spans are found again only when that unit differs
    unit = s.suppress_unit or s.span_unit
    rows_s, _, keep_s, extra_s = edit_rows(task, forget, retain, s, unit=unit) if unit != s.span_unit else (rows, None, keep, extra)
    sweep = SuppressSweep.from_config(loaded.model, loaded.tokenizer, rows_s, keep_s, s, extra_s)
    info = {"tokens": len(sweep.tokens), "fit": sweep.fit, "pruned_first": s.prune or None, "top": [t["token"] for t in sweep.table[:20]]}
    return Point(HeldUnder(prune, s.prune, sweep) if prune else sweep, info, round(time.time() - t0, 1), None, None, span_info, len(rows))


@dataclass
class HeldUnder:
    """One edit held at a fixed strength under the sweep of another (pruning under suppression, suppression under
    negation), as a Release round applies them in turn; ``set(0)`` lifts both and gives back the original model."""

    held: object
    at: float
    swept: object

    def set(self, x: float):
        self.held.set(self.at if x > 0 else 0.0)
        return self.swept.set(x)


def at_budget(pts: list[tuple[float, float]], budget: float = 0.05) -> float | None:
    """Target change at a utility change of ``budget`` nats/token, interpolated along a setting's lambda
    curve (points sorted by lambda); None when the curve never reaches the budget."""
    prev = (0.0, 0.0)  # lambda = 0: the original model
    for u, t in pts:
        if u >= budget:
            return prev[1] + (t - prev[1]) * (budget - prev[0]) / (u - prev[0]) if u > prev[0] else t
        prev = (u, t)
    return None


def setting_name(settings: dict) -> str:
    """``{"release.span_loss": "true"}`` -> ``span_loss=true`` (markdown-safe), or ``plain negation``."""
    return (", ".join(f"{k.split('.')[-1]}={v}" for k, v in settings.items()) or "plain negation").replace("|", "\\|")


def curves(rows: list[dict]) -> dict[str, list[dict]]:
    """Sweep rows grouped by setting (in first-seen order), each sorted by lambda."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(setting_name(r["settings"]), []).append(r)
    return {name: sorted(mine, key=lambda r: r["lambda"]) for name, mine in out.items()}


def at_budget_by_setting(rows: list[dict], budget: float = 0.05) -> dict[str, float | None]:
    """Per setting, the target change at ``budget`` nats/token of utility change (see :func:`at_budget`)."""
    return {name: at_budget([(r["utility"]["change"], r["target"]["change"]) for r in mine], budget) for name, mine in curves(rows).items()}


def table(path: Path) -> str:
    """Markdown: one row per setting x lambda (paired changes +- SE on the dev probe), and per setting
    the target change at +0.05 nats/token of utility cost."""
    rows = read_jsonl(path, allow_empty=True)
    fmt = lambda c: f"{c['change']:+.3f} ± {c['se']:.3f}"  # noqa: E731
    out = ["| setting | lambda (steps for a gradient method; share of MLP neurons pruned with negate=false) | target change | utility change | selectivity | self-probe ppl ratio |", "| --- | --- | --- | --- | --- | --- |"]
    for name, mine in curves(rows).items():
        out += [f"| {name} | {r['lambda']:g} | {fmt(r['target'])} | {fmt(r['utility'])} | {fmt(r['selectivity'])} | {r['self_probe_ppl_ratio']:.3f} |"
                for r in mine]
    best = [f"| {name} | {'-' if t is None else f'{t:+.3f}'} |" for name, t in at_budget_by_setting(rows).items()]
    return "\n".join(out + ["", "| setting | target change at utility +0.05 (interpolated) |", "| --- | --- |"] + best)


def plot(path: Path) -> Path:
    """Pareto view: target NLL change (up = more forgotten) against utility NLL change, one curve per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(path, allow_empty=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key in dict.fromkeys(json.dumps(r["settings"]) for r in rows):
        pts = sorted((r["utility"]["change"], r["target"]["change"], r["lambda"]) for r in rows if json.dumps(r["settings"]) == key)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=", ".join(f"{k.split('.')[-1]}={v}" for k, v in json.loads(key).items()) or "defaults")
    ax.axvline(0.05, ls="--", c="gray", lw=0.8)
    ax.set(xlabel="utility NLL change (nats/token, dev)", ylabel="target NLL change (nats/token, dev)", title=f"Release sweep: {path.parent.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = path.with_name("pareto.png" if path.name == "sweep.jsonl" else f"{path.stem}_pareto.png")  # one plot per sweep file
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


if __name__ == "__main__":
    main()
