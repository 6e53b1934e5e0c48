"""How the Q4_1 grid rounding shapes a round's keep-side cost: its jumps, and what the line search's choice costs
on keep texts it did not see.

On a recorded round (``release_record.py``), the config's edits are applied as a run's round applies them (each
at the strongest strength within its share of ``release.budget``, on the run's keep-side cost, every strength
snapped to the original's grid). Then the last edit is swept over a fine strength grid around its choice, with
and without the snapping, and every dev benign text's NLL is kept per strength (``benign``: the run's keep probe
is its first 200, ``held``: the rest plus the dev toxic prompts' non-toxic continuations, never seen by the
search), with the dev toxic continuations at a few strengths. Writes ``REC/grid_noise.json``.

``release_rec_toxicity_fs80/grid_noise_stride2.json`` was written before :func:`revrel.rounds.top_up` existed: its
``fill`` (suppression searched again on top of the negation, up to the whole budget) is what a round now does.

    python benchmarks/grid_noise.py --rec benchmarks/results/release_rec_toxicity_fs80 --stride 2 --points 11 \
        --config src/revrel/recipes/toxicity.yaml --out benchmarks/results/release_rec_toxicity_fs80/grid_noise_stride2.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from revrel.io import read_jsonl
from revrel.metrics.probes import Probe, ProbeText, items_from_json, items_to_json, paired_change, score
from revrel.models.loading import load_model
from revrel.release.budget import KEEP_TEXTS, KeepCost, keep_probe
from revrel.release.edit import parse_edits
from revrel.release.grid import Q41Grid
from revrel.rounds import apply_edits, edit_limits, round_data
from revrel.tasks import get_task


def dev_texts(split: str = "dev", calm_group: bool = False) -> Probe:
    """Every dev benign continuation (group ``benign``: the keep probe's texts first) and the toxic prompts'
    non-toxic continuations (``held``, with the benign ones past the keep probe; with ``calm_group`` these are a group
    of their own, ``calm``), and the toxic continuations (``toxic``), each scored after its prompt."""
    from revrel.tasks.toxicity import _tox, rtp_split

    benign = [r for r in rtp_split("nontoxic", split) if _tox(r) < 0.5]
    calm = [r for r in rtp_split("toxic", split) if _tox(r) < 0.5]
    toxic = [r for r in rtp_split("toxic", split) + rtp_split("nontoxic", split) if _tox(r) >= 0.5]
    texts = []
    groups = [("benign", benign[:KEEP_TEXTS]), ("held", benign[KEEP_TEXTS:]), ("calm", calm)] if calm_group else \
        [("benign", benign[:KEEP_TEXTS]), ("held", benign[KEEP_TEXTS:] + calm)]
    for group, rows in groups + [("toxic", toxic)]:
        for r in rows:
            p, c = r["prompt"]["text"], r["continuation"]["text"]
            texts.append(ProbeText(p + c, [(len(p), len(p) + len(c), group)]))
    return Probe(texts, target=["toxic"], utility=[g for g, _ in groups])


def only(p: Probe, groups: set[str]) -> Probe:
    return Probe([t for t in p.texts if t.spans[0][2] in groups], target=[g for g in p.target if g in groups],
                 utility=[g for g in p.utility if g in groups])


def apply_recorded(rec: Path, cfg, loaded, stride: int = 1, before_apply=None, offset: int = 0):
    """A run's round on a recorded Reveal, as the run applies it: the keep probe and its cost on the original, the
    config's edits on the record's rows (every ``stride``-th from ``offset``) under ``release.budget``, each strength snapped to the
    original's Q4_1 grid. ``before_apply(keep_probe)`` runs once the cost's baseline is scored, before any edit.
    Returns (edits, model, one entry per edit, the kept line-search step, the snap function or None)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from release_sweep import retain_prev

    tok, task = loaded.tokenizer, get_task(cfg.task)
    kp = keep_probe(task, tok, read_jsonl(rec / "probe.jsonl", allow_empty=True))
    cost = KeepCost(kp, tok, KeepCost.baseline(kp, loaded.model, tok))
    if before_apply is not None:
        before_apply(kp)
    edits = parse_edits(cfg.release.edits)
    data = round_data(cfg, task, rec, 1, read_jsonl(rec / "forget.jsonl")[offset::stride], retain_prev(rec, cfg, loaded))
    grid = Q41Grid.of(loaded.model)
    seed = cfg.seed * 1000 + 1
    snap = (lambda m: grid.snap(m, seed=seed)) if grid is not None else None
    model, done, kept, _ = apply_edits(loaded.model, tok, data, edits, cost, edit_limits(cfg, 1, len(edits)), cfg.release.line_search, snap=snap)
    return edits, model, done, kept, snap


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from release_sweep import record_cfg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rec", required=True)
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--span", type=float, default=1.5, help="sweep the last edit from its choice / SPAN to its choice * SPAN")
    ap.add_argument("--points", type=int, default=15)
    ap.add_argument("--stride", type=int, default=1, help="every STRIDE-th forget row only (a record of a larger Reveal)")
    ap.add_argument("--out")
    args = ap.parse_args()
    rec = Path(args.rec)
    out = Path(args.out or rec / "grid_noise.json")
    cfg = record_cfg(rec, args.config, args.set)
    loaded = load_model(cfg.model, dtype=cfg.dtype)
    tok = loaded.tokenizer
    probe = dev_texts()
    probes = {"keep": only(probe, {"benign", "held"}), "toxic": only(probe, {"toxic"})}
    t0 = time.time()
    before = {k: items_to_json(score(loaded.model, tok, p, batch_size=16)) for k, p in probes.items()}
    edits, model, done, kept, snap = apply_recorded(rec, cfg, loaded, args.stride)
    last = edits[-1]
    chosen = last.strength
    print(f"run's choice: {[(d['edit'], d['strength']) for d in done]} cost {kept and kept['keep_cost']} ({time.time() - t0:.0f}s)", flush=True)
    xs = [float(x) for x in chosen * np.geomspace(1 / args.span, args.span, args.points)]
    rows = []
    b = {k: items_from_json(v) for k, v in before.items()}

    def scored(m, with_toxic: bool) -> dict:
        r = {}
        for k in ("keep", "toxic") if with_toxic else ("keep",):
            items = score(m, tok, probes[k], batch_size=16)
            r |= {f"items_{k}": items_to_json(items)} | {g: paired_change(b[k][g], items[g]) for g in items}
        return r

    def measure(x: float, snapped: bool, with_toxic: bool) -> dict:
        last.after_set = snap if snapped else None
        r = {"strength": x, "snapped": snapped} | scored(last.to(x), with_toxic)
        print(f"  x={x:.4f} snapped={snapped}: " + ", ".join(f"{g} {r[g]['change']:+.4f}" for g in ("benign", "held", "toxic") if g in r), flush=True)
        return r

    for i, x in enumerate(xs):
        rows.append(measure(x, True, i in (0, len(xs) // 2, len(xs) - 1)) | {"chosen": i == len(xs) // 2})
    for x in xs[:: max(1, len(xs) // 5)]:
        rows.append(measure(x, False, False))
    out.write_text(json.dumps({"done": [{k: v for k, v in d.items() if k != "top"} for d in done], "chosen": chosen,
                               "before": before, "rows": rows, "seconds": round(time.time() - t0, 1)}))
    print(f"wrote {out} ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
