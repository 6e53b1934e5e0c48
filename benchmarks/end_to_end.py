"""End to end: the README main command vs the same run with full-parameter NPO, at equal optimizer steps.

1. ``revrel unlearn --task toxicity --out <dir>/revrel`` (the README command, defaults), under
   ``/usr/bin/time -v``: wall time and peak RSS.
2. Its report gives the number of LoRA optimizer steps Release took (retain PEM + every forget PEM).
3. ``revrel unlearn ... --set release.method=npo release.baseline_steps=<that number>``: NPO with its
   defaults (full parameters, a reference model, the retain NLL term), same wall/RSS measurement.
4. Optionally NPO without its retain term (``--npo-no-retain``), the like-for-like forget-only case.

"Release's wall time" is the Release stage: retain PEM + per round (train, negate, line search,
checkpoint), i.e. each round's seconds minus its Reveal. NPO's is its stage's seconds (train + probe).
The Reveals differ by design (Release reveals every round) and are reported separately.

Writes benchmarks/results/end_to_end.json.   python benchmarks/end_to_end.py [--out /tmp/e2e]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf import machine  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def timed_run(cmd: list[str]) -> dict:
    """Run ``cmd`` under GNU time when it exists (peak RSS), else plain wall time."""
    gnu = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    full = [gnu, "-v", *cmd] if gnu else cmd
    t = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return {"command": " ".join(cmd), "wall_s": round(wall, 1), "peak_rss_GB": round(int(rss.group(1)) / 1e6, 3) if rss else None}


def release_stage(report: dict) -> dict:
    rounds = [r for r in report["rounds"] if "train" in r]
    retain = report.get("retain_pem_train") or {}
    forget_steps = sum(r["train"]["steps"] for r in rounds)
    stage = sum(r["seconds"] - r.get("reveal_seconds", 0) for r in rounds) + retain.get("seconds", 0)
    return {"rounds": len(rounds), "retain_pem_steps": retain.get("steps", 0), "forget_pem_steps": forget_steps,
            "optimizer_steps": forget_steps + retain.get("steps", 0), "train_seconds": round(sum(r["train"]["seconds"] for r in rounds)
                                                                                          + retain.get("seconds", 0), 1),
            "stage_seconds": round(stage, 1), "reveal_seconds": round(sum(r.get("reveal_seconds", 0) for r in report["rounds"])
                                                                      + (report.get("final_reveal") or {}).get("seconds", 0), 1)}


def npo_stage(report: dict) -> dict:
    r = report["rounds"][0]
    return {"optimizer_steps": r["steps"], "train_seconds": r["train_seconds"], "stage_seconds": r["seconds"], "tokens": r["tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="toxicity")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", default="/tmp/revrel-e2e")
    ap.add_argument("--npo-no-retain", action="store_true", help="also time NPO without its retain term")
    args = ap.parse_args()
    out = Path(args.out)
    revrel = shutil.which("revrel") or str(Path(sys.executable).parent / "revrel")
    base = [revrel, "unlearn", "--task", args.task, "--model", args.model, "-q", "--overwrite"]
    res: dict = {"machine": machine(), "command": "python benchmarks/end_to_end.py", "args": vars(args)}

    res["revrel"] = timed_run([*base, "--out", str(out / "revrel")])
    rep = json.loads((out / "revrel" / "report.json").read_text())
    res["revrel"]["release"] = release_stage(rep)
    steps = res["revrel"]["release"]["optimizer_steps"]
    print(json.dumps(res["revrel"], indent=1), flush=True)

    variants = [("npo", [])] + ([("npo_no_retain", ["--set", "release.retain_weight=0"])] if args.npo_no_retain else [])
    for name, extra in variants:
        res[name] = timed_run([*base, "--out", str(out / name), "--set", "release.method=npo", "--set", f"release.baseline_steps={steps}", *extra])
        res[name]["release"] = npo_stage(json.loads((out / name / "report.json").read_text()))
        res[f"release_to_{name}_stage_ratio"] = round(res["revrel"]["release"]["stage_seconds"] / res[name]["release"]["stage_seconds"], 3)
        res[f"release_to_{name}_train_ratio"] = round(res["revrel"]["release"]["train_seconds"] / res[name]["release"]["train_seconds"], 3)
        print(name, json.dumps(res[name], indent=1), res[f"release_to_{name}_stage_ratio"], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "end_to_end.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
