"""Where a Release point's target change sits: on the tokens the task's oracle marks, or on the text around them.

The dev probe's target spans are cut by the task's span unit (``--unit``: ``task`` = ``Task.target_spans``,
or a ``Task.span_units`` key, e.g. toxicity's ``word`` = profane words) into ``<group>:in`` and
``<group>:out``, and each recorded sweep point (``release_sweep.py`` settings and strengths, rebuilt from the
record and its PEMs on disk) is scored on that split probe, paired against the original model. The
share of target tokens inside the marks times their change is what forgetting only those tokens can
give the probe's mean: the ceiling of a method that finds them and nothing else.

    python benchmarks/probe_parts.py --rec benchmarks/results/release_rec_toxicity --unit word \\
        --set release.span_loss=true --set release.span_unit=word --set release.negate=false \\
        --set release.prune_keep=keep_spans --lambdas 0.0025 0.005

Appends one row per setting x strength to ``REC/parts.jsonl`` (rows already there are skipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from release_sweep import done_keys, negation_point, settings_of  # noqa: E402

from revrel.config import load_config  # noqa: E402
from revrel.metrics import probes  # noqa: E402
from revrel.io import read_jsonl  # noqa: E402
from revrel.models.loading import load_model  # noqa: E402
from revrel.rounds import span_fns  # noqa: E402
from revrel.tasks import get_task  # noqa: E402


def parts_probe(task, cfg, tokenizer, unit: str) -> probes.Probe:
    """The task's dev probe with its target spans split by ``unit``'s marks."""
    ecfg = task.eval_config(cfg.eval)
    return probes.split_probe(task.probe(ecfg.split, ecfg.probe_items, tokenizer, ecfg.dataset), span_fns(task, unit)[0])


def part_stats(before: dict, after: dict, probe: probes.Probe) -> dict:
    """Per group: paired change ± SE, tokens, and the share of the role's tokens; plus each target part's
    contribution (share x change) to the target change."""
    ch = probes.compare(before, after, probe)
    tokens = {g: int(before[g][:, 1].sum()) for g in probe.groups}
    tgt_tokens = sum(tokens[g] for g in probe.target)
    groups = {g: dict(ch["groups"][g], tokens=tokens[g]) for g in probe.groups}
    for g in probe.target:
        share = tokens[g] / max(tgt_tokens, 1)
        groups[g].update(share=round(share, 4), contribution=None if groups[g]["change"] is None else share * groups[g]["change"])
    return {"groups": groups, "target": ch["target"], "utility": ch["utility"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rec", required=True)
    ap.add_argument("--unit", default="task", help="task (Task.target_spans) or a Task.span_units key, e.g. word")
    ap.add_argument("--set", action="append", default=[], help="the sweep setting (as release_sweep.py --set)")
    ap.add_argument("--lambdas", nargs="+", type=float, required=True)
    ap.add_argument("--out", help="default: REC/parts.jsonl")
    args = ap.parse_args()
    rec = Path(args.rec)
    base_cfg = yaml.safe_load((rec / "config.yaml").read_text())
    cfg = load_config(None, base_cfg)
    task = get_task(cfg.task)
    if args.unit != "task" and args.unit not in task.span_units:
        raise SystemExit(f"error: --unit {args.unit!r}: {cfg.task} has units task, {', '.join(task.span_units) or '(none other)'}")
    out = Path(args.out or rec / "parts.jsonl")
    settings = settings_of(args.set)
    done = done_keys(out, "unit", "lambda")
    todo = [lam for lam in args.lambdas if (json.dumps(settings), args.unit, lam) not in done]
    if not todo:
        return
    loaded = load_model(base_cfg["model"], dtype=base_cfg["dtype"])
    probe = parts_probe(task, cfg, loaded.tokenizer, args.unit)
    bs = task.eval_config(cfg.eval).batch_size
    before = probes.score(loaded.model, loaded.tokenizer, probe, batch_size=bs)
    forget, retain = (read_jsonl(rec / f"{n}.jsonl", allow_empty=True) for n in ("forget", "retain"))
    p = negation_point(rec, base_cfg, args.set, loaded, task, forget, retain, {})
    for lam in todo:
        t0 = time.time()
        stats = part_stats(before, probes.score(p.sweep.set(lam), loaded.tokenizer, probe, batch_size=bs), probe)
        row = {"settings": settings, "unit": args.unit, "lambda": lam, **stats, "score_seconds": round(time.time() - t0, 1)}
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        parts = "  ".join(f"{g} {v['change']:+.3f} ({v['tokens']} tok" + (f", {v['share']:.0%} of target)" if "share" in v else ")")
                          for g, v in stats["groups"].items())
        print(f"{settings} lambda={lam:g}: {parts}", flush=True)


if __name__ == "__main__":
    main()
