"""Run a task's preset (``configs/T.yaml``) as a user would, timed, and keep its report for docs/results.md.

    python benchmarks/run_preset.py --task code            # runs/preset_code, then benchmarks/results/preset_code/
    python benchmarks/run_preset.py --task code --resume   # continue an interrupted run

Runs ``revrel unlearn --task T --config configs/T.yaml --set eval.probe_rounds=true`` under GNU time
(wall time, peak RSS) and copies what is small and worth keeping (report.json, config.yaml, the
per-round forget sets' sizes are in the report) to ``benchmarks/results/preset_T/`` with ``run.json``
(command, wall, peak memory, machine). The model itself stays under ``runs/`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import timed_run  # noqa: E402
from perf import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--config", help="default: configs/TASK.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--name", help="default: preset_TASK")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    name = args.name or f"preset_{args.task}"
    run_dir, keep = ROOT / "runs" / name, ROOT / "benchmarks" / "results" / name
    revrel = shutil.which("revrel") or str(Path(sys.executable).with_name("revrel"))
    cmd = [revrel, "unlearn", "--task", args.task, "--config", args.config or f"configs/{args.task}.yaml", "--out", str(run_dir), "-q",
           "--resume" if args.resume else "--overwrite", "--set", "eval.probe_rounds=true"]
    for kv in args.set:
        cmd += ["--set", kv]
    timing = timed_run(cmd)
    keep.mkdir(parents=True, exist_ok=True)
    for f in ("report.json", "config.yaml"):
        shutil.copy2(run_dir / f, keep / f)
    timing["command"] = " ".join(["revrel", *cmd[1:]]).replace(str(ROOT) + "/", "")
    (keep / "run.json").write_text(json.dumps(dict(timing, resumed=args.resume, machine=machine()), indent=1))
    print(json.dumps(timing))


if __name__ == "__main__":
    main()
