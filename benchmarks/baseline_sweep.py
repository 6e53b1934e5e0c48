"""Sweep a gradient baseline's strength (its optimizer steps) on a recorded round's dev probe, in one training run.

    python benchmarks/baseline_sweep.py --rec benchmarks/results/release_rec_code_real --method npo --steps 4 8 16 32

Trains ``--method`` (npo, graddiff, ga, simnpo: :data:`revrel.release.baselines.METHODS`) on the record's
forget set, with its retain term on the record's keep side, for ``max(--steps)`` steps. After each listed
step it scores the task's dev probe (paired change vs the original, nats/token) and the self-generated
retain probe, and appends a row to ``REC/sweep.jsonl`` in ``release_sweep.py``'s format: settings
``{"method": M, ...--set}`` and ``lambda`` = steps. The sweep table, the Pareto plot and docs/results.md
then show the baseline's curve beside Release's on the same axes. Use a ``release_record.py --real``
record: these baselines assume real forget data.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from revrel.config import load_config, parse_set
from revrel.io import read_jsonl
from revrel.models.loading import load_model
from revrel.release.baselines import METHODS
from revrel.release.checkpoint import RunDir
from revrel.rounds import Context
from revrel.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from release_sweep import DevAxes, append_row, plot  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rec", required=True)
    ap.add_argument("--method", required=True, choices=sorted(m for m in METHODS if m != "pem-negation"))
    ap.add_argument("--steps", nargs="+", type=int, default=[4, 8, 16, 32])
    ap.add_argument("--set", action="append", default=[], help="overrides, e.g. release.baseline_lr=2e-5")
    ap.add_argument("--out", help="default: REC/sweep.jsonl")
    args = ap.parse_args()
    rec = Path(args.rec)
    out = Path(args.out or rec / "sweep.jsonl")
    settings = {"method": args.method, **{kv.split("=", 1)[0]: kv.split("=", 1)[1] for kv in args.set}}
    done = {r["lambda"] for r in read_jsonl(out, allow_empty=True) if r["settings"] == settings} if out.is_file() else set()
    todo = sorted(set(args.steps) - done)
    if not todo:
        print(f"{settings}: every step already in {out}")
        return
    record = json.loads((rec / "record.json").read_text())  # for forget_source
    over = parse_set(args.set)
    over.setdefault("release", {}).update(method=args.method, baseline_steps=max(todo))
    cfg = load_config(rec / "config.yaml", over)
    forget, retain = (read_jsonl(rec / f"{n}.jsonl", allow_empty=True) for n in ("forget", "retain"))
    loaded = load_model(cfg.model, dtype=cfg.dtype)
    axes = DevAxes(rec, cfg, loaded)
    t_score = 0.0
    t0 = time.time()

    def on_step(step: int, model) -> None:
        nonlocal t_score
        if step not in todo:
            return
        t1 = time.time()
        row = {"settings": settings, "lambda": step, **axes.score(model),
               "train": {"steps": step, "lr": cfg.release.baseline_lr, "batch_size": cfg.release.batch_size,
                         "retain_weight": cfg.release.retain_weight, "lora": cfg.release.baseline_lora},
               "train_seconds": round(t1 - t0 - t_score, 1), "score_seconds": round(time.time() - t1, 1),
               "forget_rows": len(forget), "forget_source": record.get("forget_source", "self-generated (Reveal)")}
        t_score += time.time() - t1
        append_row(out, row, f"{settings} steps={step}")

    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(loaded=loaded, task=get_task(cfg.task), oracle=None, embed=None, cfg=cfg, run=RunDir(Path(tmp)), on_step=on_step)
        METHODS[args.method](ctx, forget, retain)
    plot(out)


if __name__ == "__main__":
    main()
