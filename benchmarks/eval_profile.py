"""Time the eval profiles on the original model and check that the probes are deterministic.

For each task: the ``full`` profile once (timed: the target is under 5 minutes per task on 2 CPU
cores), then the ``quick`` profile at several eval seeds. The sampled metrics move with the seed;
the likelihood probes must not (teacher-forced NLL of fixed text), and the JSON records the largest
spread of each.

    python benchmarks/eval_profile.py --tasks toxicity ner code --split test --out benchmarks/results/eval_profiles.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from revrel.config import load_config
from revrel.models.loading import load_model
from revrel.pipeline import evaluate_model
from revrel.tasks import get_task


def probe_nlls(metrics: dict) -> dict[str, float]:
    p = metrics.get("probes", {})
    out = {f"group:{g}": v["nll"] for g, v in p.get("groups", {}).items()}
    out.update({role: p[role]["nll"] for role in ("target", "utility") if role in p})
    return out


def strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("probe_items", "examples")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["toxicity", "ner", "code"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/eval_profiles.json")
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    loaded = load_model(args.model)
    for name in args.tasks:
        task = get_task(name)
        oracle = task.oracle()
        res: dict = {"model": args.model, "split": args.split}
        if not args.skip_full:
            cfg = load_config(None, {"task": name, "model": args.model, "seed": 0, "eval": {"profile": "full", "split": args.split}})
            t0 = time.time()
            full = evaluate_model(loaded, task, oracle, cfg)
            res["full"] = {"seconds": round(time.time() - t0, 1), "metrics": strip(full)}
            print(f"{name}: full profile {res['full']['seconds']:.0f} s", flush=True)
        quick = []
        for seed in args.seeds:
            cfg = load_config(None, {"task": name, "model": args.model, "seed": seed, "eval": {"profile": "quick", "split": args.split}})
            t0 = time.time()
            m = evaluate_model(loaded, task, oracle, cfg)
            quick.append({"seed": seed, "seconds": round(time.time() - t0, 1), "probes": probe_nlls(m),
                          "sampled": {k: m.get(k) for k in m.get("intervals", {})}, "intervals": m.get("intervals")})
        keys = quick[0]["probes"]
        res["quick_seeds"] = quick
        res["probe_max_spread"] = max((max(q["probes"][k] for q in quick) - min(q["probes"][k] for q in quick) for k in keys), default=None)
        res["sampled_spread"] = {k: max(q["sampled"][k] for q in quick if q["sampled"][k] is not None)
                                 - min(q["sampled"][k] for q in quick if q["sampled"][k] is not None)
                                 for k in quick[0]["sampled"] if all(q["sampled"][k] is not None for q in quick)}
        res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        results[name] = res
        print(f"{name}: probe spread over seeds {res['probe_max_spread']}; sampled spread {res['sampled_spread']}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
