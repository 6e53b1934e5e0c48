"""Sweep Release strengths on a recorded round against the dev likelihood probe, without generating.

Reads a folder written by ``release_record.py`` (Reveal's forget set, the keep side, the original's dev probe).
A point is a list of ``release.edits``, prepared on the recorded data by the very objects a Release round uses
(``revrel.release.edit.Stack``): every edit but the last held at its configured strength, the last swept over
``--strengths``. Each strength is scored on the task's dev probe (paired change vs the original, nats/token)
and on the self-probe perplexity ratio (what the line search sees).

    python benchmarks/release_sweep.py --rec benchmarks/results/release_rec_toxicity --config src/revrel/recipes/toxicity.yaml \\
        --strengths 0.015625 0.03125 0.0625
    python benchmarks/release_sweep.py --rec benchmarks/results/release_rec_code --config src/revrel/recipes/code.yaml \\
        --grid 'release.edits=[{prune: {unit: task}}],[{prune: {unit: ""}}]' --strengths 0.01 0.02

``--auto`` instead applies the edits as a run's round does (each at the strongest strength within its share of
``release.budget``, on the run's keep-side cost) and scores the result: what the default rule chooses on dev.

``--sampled N`` also scores the task's sampled metrics on N dev prompts (with bootstrap intervals).
Writes ``sweep.jsonl`` (one row per setting x strength; rows already there are skipped, so a sweep resumes)
and ``pareto.png`` (target change vs utility change, one curve per setting).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import time
from pathlib import Path

import yaml

from revrel.config import load_config, merge_dicts, parse_set
from revrel.io import read_jsonl
from revrel.models.generation import perplexity, sequence_logprobs
from revrel.models.loading import load_model
from revrel.pipeline import round_prober
from revrel.release.budget import KeepCost, keep_probe
from revrel.release.checkpoint import load_adapter_A, save_adapter
from revrel.release.edit import Stack, parse_edits
from revrel.release.pem import train_pem
from revrel.rounds import apply_edits, edit_limits, round_data
from revrel.tasks import get_task


def settings_of(kvs: list[str]) -> dict:
    """A sweep row's ``settings``: its --set strings as {key: value text}, the row's identity for resuming."""
    return {kv.split("=", 1)[0]: kv.split("=", 1)[1] for kv in kvs}


def done_keys(out: Path, *fields: str) -> set[tuple]:
    """(settings JSON, *fields) of the rows already in ``out``: a resumed sweep skips these points."""
    if not out.is_file():
        return set()
    return {(json.dumps(r["settings"]), *(r[f] for f in fields)) for r in read_jsonl(out, allow_empty=True)}


def grid_points(grids: list[str]) -> list[list[str]]:
    """``["reveal.k=4,8"]`` -> every combination as --set style strings. A value list that holds commas inside
    brackets (``release.edits=[{...}],[{...}]``) is split at the top level only."""
    axes = []
    for g in grids:
        key, values = g.split("=", 1)
        parts, depth, cur = [], 0, ""
        for ch in values:
            depth += ch in "[{" and 1 or 0
            depth -= ch in "]}" and 1 or 0
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        axes.append([f"{key}={v}" for v in [*parts, cur]])
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
        return self.dev(model) | {"self_probe_ppl_ratio": round(probe_ratio(model, self.tok, self.probe_rows, self.ppl0), 4)}


class DevSampled:
    """The task's sampled metrics on ``n`` dev prompts, fluency under a second copy of the original; the
    original's own are computed once and kept in ``REC/sampled_original_N.json``."""

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


def record_cfg(rec: Path, config: str | None, kvs: list[str]):
    """The record's run config (task, model, seed, reveal, eval on dev) with ``config``'s release section and ``kvs`` laid over."""
    base = yaml.safe_load((rec / "config.yaml").read_text())
    if config:
        base["release"] = yaml.safe_load(Path(config).read_text()).get("release", {})
    return load_config(None, merge_dicts(base, parse_set(kvs)))


def retain_prev(rec: Path, cfg, loaded) -> list:
    """The retain PEM's A matrices for O-LoRA, as a run's round 1 has them (one epoch, cached under the record)."""
    import dataclasses

    s = cfg.release
    if not (any(e.name == "negate" for e in parse_edits(s.edits)) and s.pem.lambda_orth > 0):
        return []
    pem = dataclasses.replace(s.pem, epochs=1)
    key = json.dumps({k: getattr(pem, k) for k in ("rank", "lr", "epochs", "batch_size", "max_length")}, sort_keys=True)
    folder = rec / "retain_pem" / hashlib.sha1(key.encode()).hexdigest()[:12]
    if not (folder / "adapter_model.safetensors").is_file():
        pm, _ = train_pem(loaded.model, loaded.tokenizer, read_jsonl(rec / "retain.jsonl"), pem, seed=cfg.seed + 7, desc="retain PEM")
        save_adapter(pm, folder)
        loaded.model = pm.unload()
    return [load_adapter_A(folder)]


def prepare_point(rec: Path, cfg, loaded, task) -> Stack:
    """``cfg.release.edits`` prepared on the record's data as round 1 of a run prepares them (same seeds, same
    retain PEM for O-LoRA, same keep side), ready to be set at any strength of the last edit. ``loaded.model``
    must be the original model. The retain PEM is cached under the record (it depends only on the PEM settings)."""
    s = cfg.release
    edits = parse_edits(s.edits)
    if s.keep_texts:
        have = len(read_jsonl(rec / "keep.jsonl", allow_empty=True)) if (rec / "keep.jsonl").is_file() else 0
        if have < s.keep_texts:
            raise SystemExit(f"release.keep_texts={s.keep_texts}: {rec} holds {have}; run release_record.py --out {rec} --keep-texts N")
    prev = retain_prev(rec, cfg, loaded)
    data = round_data(cfg, task, rec, 1, read_jsonl(rec / "forget.jsonl"), prev)
    return Stack.prepare(edits, loaded.model, loaded.tokenizer, data)


def auto_point(rec: Path, cfg, loaded, task) -> dict:
    """The record's round released as a run releases it: every strength chosen under ``release.budget``."""
    s = cfg.release
    probe = keep_probe(task, loaded.tokenizer, read_jsonl(rec / "probe.jsonl", allow_empty=True))
    cost = KeepCost(probe, loaded.tokenizer, KeepCost.baseline(probe, loaded.model, loaded.tokenizer))
    edits = parse_edits(s.edits)
    data = round_data(cfg, task, rec, 1, read_jsonl(rec / "forget.jsonl"), retain_prev(rec, cfg, loaded))
    t0 = time.time()
    model, done, kept, reverted = apply_edits(loaded.model, loaded.tokenizer, data, edits, cost, edit_limits(cfg, 1, len(edits)), s.line_search)
    loaded.model = model
    return {"edits": [{k: v for k, v in d.items() if k != "top"} for d in done], "keep_cost": kept["keep_cost"] if kept else None, "reverted": reverted,
            "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rec", required=True)
    ap.add_argument("--config", help="a preset whose release section is swept (default: the record's)")
    ap.add_argument("--set", action="append", default=[], help="fixed overrides for every point")
    ap.add_argument("--grid", action="append", default=[], help="KEY=v1,v2,... (combined as a product)")
    ap.add_argument("--strengths", nargs="+", type=float, help="strengths of the last edit")
    ap.add_argument("--auto", action="store_true", help="the strengths a run would choose under release.budget (no --strengths)")
    ap.add_argument("--out", help="default: REC/sweep.jsonl")
    ap.add_argument("--sampled", type=int, default=0, metavar="N", help="also the sampled metrics on N dev prompts per point")
    args = ap.parse_args()
    rec = Path(args.rec)
    out = Path(args.out or rec / "sweep.jsonl")
    done = done_keys(out, "strength")
    cfg0 = record_cfg(rec, args.config, args.set)
    loaded = load_model(cfg0.model, dtype=cfg0.dtype)
    task = get_task(cfg0.task)
    axes = DevAxes(rec, cfg0, loaded)
    sampled = DevSampled(rec, cfg0, loaded, args.sampled) if args.sampled else None
    if args.auto:
        for point in grid_points(args.grid):
            cfg = record_cfg(rec, args.config, args.set + point)
            settings = {"edits": json.dumps(cfg.release.edits), "budget": cfg.release.budget} | settings_of(args.set + point)
            if (json.dumps(settings), "auto") in done:
                continue
            loaded.model = load_model(cfg0.model, dtype=cfg0.dtype).model
            chosen = auto_point(rec, cfg, loaded, task)
            row = {"settings": settings, "strength": "auto", **axes.score(loaded.model), "auto": chosen,
                   **({"sampled": sampled.score(loaded.model), "sampled_original": sampled.original} if sampled else {})}
            append_row(out, row, f"{setting_name(settings)} auto: " + " + ".join(f"{e['edit']} {e['strength']}" for e in chosen["edits"]))
        return
    if not args.strengths:
        raise SystemExit("give --strengths, or --auto")
    for point in grid_points(args.grid):
        settings = {"edits": json.dumps(record_cfg(rec, args.config, args.set + point).release.edits)} | settings_of(args.set + point)
        todo = [x for x in args.strengths if (json.dumps(settings), x) not in done]
        if not todo:
            continue
        cfg = record_cfg(rec, args.config, args.set + point)
        t0 = time.time()
        stack = prepare_point(rec, cfg, loaded, task)
        prepared = round(time.time() - t0, 1)
        for x in todo:
            t1 = time.time()
            model = stack.set(x)
            row = {"settings": settings, "strength": x, **axes.score(model),
                   **({"sampled": sampled.score(model), "sampled_original": sampled.original} if sampled else {}),
                   "edits": [{"edit": e.name, "strength": e.strength, **{k: v for k, v in e.info().items() if k != "top"}} for e in stack.edits],
                   "prepare_seconds": prepared, "score_seconds": round(time.time() - t1, 1)}
            append_row(out, row, f"{setting_name(settings)} strength={x:g}")
        loaded.model = stack.set(0.0)
    plot(out)


def at_budget(pts: list[tuple[float, float]], budget: float = 0.05) -> float | None:
    """Target change at a utility change of ``budget`` nats/token, interpolated along a setting's strength
    curve (points sorted by strength); None when the curve never reaches the budget."""
    prev = (0.0, 0.0)  # strength 0: the original model
    for u, t in pts:
        if u >= budget:
            return prev[1] + (t - prev[1]) * (budget - prev[0]) / (u - prev[0]) if u > prev[0] else t
        prev = (u, t)
    return None


def setting_name(settings: dict) -> str:
    """A row's settings as one short markdown-safe label."""
    return (", ".join(f"{k.split('.')[-1]}={v}" for k, v in settings.items()) or "defaults").replace("|", "\\|")


def curves(rows: list[dict]) -> dict[str, list[dict]]:
    """Sweep rows grouped by setting (in first-seen order), each sorted by strength."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(setting_name(r["settings"]), []).append(r)
    return {name: sorted(mine, key=lambda r: r["strength"]) for name, mine in out.items()}


def plot(path: Path) -> Path:
    """Pareto view: target NLL change (up = more forgotten) against utility NLL change, one curve per setting,
    the legend outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, mine in curves(read_jsonl(path, allow_empty=True)).items():
        ax.plot([r["utility"]["change"] for r in mine], [r["target"]["change"] for r in mine], marker="o", label=name[:80])
    ax.axvline(0.05, ls="--", c="gray", lw=0.8)
    ax.set(xlabel="utility NLL change (nats/token, dev)", ylabel="target NLL change (nats/token, dev)", title=f"Release sweep: {path.parent.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    png = path.with_name("pareto.png" if path.name == "sweep.jsonl" else f"{path.stem}_pareto.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    main()
