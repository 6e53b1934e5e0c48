"""Run a task's default (its packaged recipe, no --config) as a user would, timed, and keep its report.

    python benchmarks/run_default.py --task toxicity --seed 0              # runs/default_toxicity_s0 -> benchmarks/results/
    python benchmarks/run_default.py --task code --model "$REVREL_QWEN_GGUF" --name qwen_code_s0 --set eval.profile=quick
    python benchmarks/run_default.py --task ner --resume                   # continue an interrupted run
    python benchmarks/run_default.py --target "William Shakespeare" --keep "Charles Dickens, Jane Austen, Mark Twain"

Runs ``revrel unlearn --task T --out runs/NAME -q`` under GNU time (wall time, peak RSS), then
``revrel attack --run runs/NAME --attacks gguf-q4_1 --probe-only`` (the share of the target change a q4_1 GGUF
export takes back), and keeps what is small (report.json, config.yaml, run.json with the command, wall, peak RSS
and machine) in ``benchmarks/results/NAME/``. The model stays under ``runs/`` (not committed).
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

ROOT = Path(__file__).resolve().parent.parent


def timed_run(cmd: list[str], check: bool = True) -> dict:
    """Run ``cmd`` under GNU time when it exists (peak RSS), else plain wall time; a failure exits with its stderr
    tail, or with ``check=False`` returns its error line under ``error``."""
    gnu = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    t = time.perf_counter()
    p = subprocess.run([gnu, "-v", *cmd] if gnu else cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0 and check:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    out = {"wall_s": round(wall, 1), "peak_rss_GB": round(int(rss.group(1)) / 1e6, 3) if rss else None, "stdout": p.stdout}
    if p.returncode != 0:
        out["error"] = next((ln for ln in p.stderr.splitlines() if "error" in ln.lower()), f"exit {p.returncode}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", help="a built-in task (or --target)")
    ap.add_argument("--target", help='the target mode: "William Shakespeare"')
    ap.add_argument("--about")
    ap.add_argument("--keep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", help="default: the embedded default")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--name", help="default: default_TASK_sSEED")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-attack", action="store_true")
    args = ap.parse_args()
    if not (args.task or args.target):
        ap.error("give --task or --target")
    slug = re.sub(r"\W+", "_", args.target or "").strip("_").lower()
    name = args.name or (f"target_{slug}_s{args.seed}" if args.target else f"default_{args.task}_s{args.seed}")
    run_dir, keep = ROOT / "runs" / name, ROOT / "benchmarks" / "results" / name
    revrel = shutil.which("revrel") or str(Path(sys.executable).with_name("revrel"))
    what = ["--target", args.target] + (["--about", args.about] if args.about else []) + (["--keep", args.keep] if args.keep else []) \
        if args.target else ["--task", args.task]
    cmd = [revrel, "unlearn", *what, "--seed", str(args.seed), "--out", str(run_dir), "-q",
           "--resume" if args.resume else "--overwrite"] + (["--model", args.model] if args.model else [])
    for kv in args.set:
        cmd += ["--set", kv]
    timing = timed_run(cmd)
    keep.mkdir(parents=True, exist_ok=True)
    for f in ("report.json", "config.yaml", "target/profile.json"):
        if (run_dir / f).is_file():
            shutil.copy2(run_dir / f, keep / Path(f).name)
    (keep / "summary.txt").write_text(timing.pop("stdout"))
    info = dict(timing, command=" ".join(["revrel", *cmd[1:]]).replace(str(ROOT) + "/", ""), machine=machine())
    (keep / "run.json").write_text(json.dumps(info, indent=1))  # before the attack: its failure loses nothing
    if not args.no_attack:
        att = timed_run([revrel, "attack", "--run", str(run_dir), "--attacks", "gguf-q4_1", "--probe-only", "-q"], check=False)
        info["attack"] = {k: att[k] for k in ("wall_s", "peak_rss_GB", "error") if k in att}
        shutil.copy2(run_dir / "report.json", keep / "report.json")  # the attack adds its rows to the report
        (keep / "run.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
