"""Sweep selective MLP-neuron pruning (``revrel.release.prune``) on a recorded round against the dev probes.

Reads a folder written by ``release_record.py``: the revealed forget set (its target spans are the
"target" side) and the self-generated retain set (the keep side). For every ``--fracs`` share of all
MLP neurons it prunes the most target-specific ones and scores the dev probe and the self-probe, as
``release_sweep.py`` does for negation strengths. ``--steps`` > 1 prunes each share in that many equal
steps, measuring the neurons' activity again after each (Pochinkov & Schoots' iterative variant).

    python benchmarks/prune_sweep.py --rec benchmarks/results/release_rec_code --fracs 0.005 0.01 0.02 0.04

Rows go to REC/sweep.jsonl beside the negation sweeps, with the share as ``lambda`` and the settings
``release.prune_steps`` (and ``release.prune_keep``), so the tables and the Pareto plot show both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from revrel.config import load_config
from revrel.io import read_jsonl
from revrel.models.loading import load_model
from revrel.release.loop import with_target_spans
from revrel.release.prune import down_projections, neuron_activity, prune_neurons, specificity
from revrel.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from release_sweep import DevAxes, append_row, plot  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rec", required=True)
    ap.add_argument("--fracs", nargs="+", type=float, default=[0.005, 0.01, 0.02, 0.04])
    ap.add_argument("--steps", type=int, default=1, help="prune each share in this many steps, re-measuring activity")
    ap.add_argument("--keep", choices=["retain", "keep_spans"], default="retain",
                    help="the keep side: the retain set's responses, or the task's keep spans inside the forget text")
    ap.add_argument("--unit", default="task", help="span unit for the target side (release.span_unit)")
    ap.add_argument("--max-length", type=int, default=0)
    args = ap.parse_args()
    rec = Path(args.rec)
    base_cfg = yaml.safe_load((rec / "config.yaml").read_text())
    cfg = load_config(None, base_cfg)
    task = get_task(cfg.task)
    forget, retain = (read_jsonl(rec / f"{n}.jsonl", allow_empty=True) for n in ("forget", "retain"))
    out = rec / "sweep.jsonl"
    settings = {"release.prune_steps": str(args.steps), "release.prune_keep": args.keep}
    if args.unit != "task":
        settings["release.span_unit"] = args.unit
    done = {r["lambda"] for r in read_jsonl(out, allow_empty=True) if r["settings"] == settings} if out.is_file() else set()
    loaded = load_model(base_cfg["model"], dtype=base_cfg["dtype"])
    model, tok = loaded.model, loaded.tokenizer
    axes = DevAxes(rec, cfg, loaded)
    rows, info = with_target_spans(task, forget, keep=args.keep == "keep_spans", unit=args.unit)
    keep_rows = ([dict(r, spans=r["keep_spans"]) for r in rows if r.get("keep_spans")] if args.keep == "keep_spans" else retain)
    max_length = args.max_length or cfg.release.max_length
    original = [d.weight.detach().clone() for d in down_projections(model)]
    t0 = time.time()
    keep_act = neuron_activity(model, tok, keep_rows, max_length)
    pruned, have = None, 0.0
    for frac in sorted(args.fracs):
        t1 = time.time()
        for s in range(args.steps):  # from the share pruned so far up to frac, in equal steps
            goal = have + (frac - have) * (s + 1) / args.steps
            if s == 0 and pruned is None or args.steps > 1:
                target_act = neuron_activity(model, tok, rows, max_length)
                if args.steps > 1:
                    keep_act = neuron_activity(model, tok, keep_rows, max_length)
            score = specificity(target_act, keep_act)
            pruned = prune_neurons(model, score, goal - (0 if pruned is None else pruned.float().mean().item()), pruned)
        have = frac
        if frac in done:
            continue
        row = {"settings": settings, "lambda": frac, **axes.score(model), "train": {"neurons": int(pruned.sum())},
               "train_seconds": round(t1 - t0, 1), "score_seconds": round(time.time() - t1, 1), "span_loss": info,
               "forget_rows": len(rows), "per_layer": pruned.sum(dim=1).tolist()}
        append_row(out, row, f"{settings} share={frac:g}")
    for d, w in zip(down_projections(model), original):
        d.weight.data.copy_(w)
    plot(out)
    print(json.dumps({"seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
