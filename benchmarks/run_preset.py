"""Run a task's preset (``configs/T.yaml``) as a user would, timed, and keep its report for docs/results.md.

    python benchmarks/run_preset.py --task code            # runs/preset_code, then benchmarks/results/preset_code/
    python benchmarks/run_preset.py --task code --resume   # continue an interrupted run
    python benchmarks/run_preset.py --task ner --before-from runs/preset_ner   # reuse its evaluation of the original model

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

import yaml

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
    ap.add_argument("--before-from", metavar="RUN", help="an earlier run of the task, same model and eval settings: its evaluation "
                                                         "of the original model (30 min on NER) is reused, the rest runs afresh")
    args = ap.parse_args()
    name = args.name or f"preset_{args.task}"
    run_dir, keep = ROOT / "runs" / name, ROOT / "benchmarks" / "results" / name
    config = args.config or f"configs/{args.task}.yaml"
    if args.before_from:
        seed_before(Path(args.before_from), run_dir, config, args.set)
        args.resume = True
    revrel = shutil.which("revrel") or str(Path(sys.executable).with_name("revrel"))
    cmd = [revrel, "unlearn", "--task", args.task, "--config", config, "--out", str(run_dir), "-q",
           "--resume" if args.resume else "--overwrite", "--set", "eval.probe_rounds=true"]
    for kv in args.set:
        cmd += ["--set", kv]
    extra = {"before_from": args.before_from} if args.before_from else {}
    print(json.dumps(timed_keep(cmd, run_dir, keep, resumed=args.resume, **extra)))


def timed_keep(cmd: list[str], run_dir: Path, keep: Path, **extra) -> dict:
    """Run ``cmd`` (a ``revrel unlearn`` writing ``run_dir``) under ``timed_run``, then keep its report.json and
    config.yaml in ``keep`` with run.json (command, wall, peak RSS, machine, ``extra``); returns the timing."""
    timing = timed_run(cmd)  # exits with the command's stderr tail when it fails: nothing is kept then
    keep.mkdir(parents=True, exist_ok=True)
    for f in ("report.json", "config.yaml"):
        shutil.copy2(run_dir / f, keep / f)
    timing["command"] = " ".join(["revrel", *cmd[1:]]).replace(str(ROOT) + "/", "")
    (keep / "run.json").write_text(json.dumps(dict(timing, machine=machine(), **extra), indent=1))
    return timing


def seed_before(earlier: Path, run_dir: Path, config: str, sets: list[str]) -> None:
    """Start ``run_dir`` afresh under ``config`` with ``earlier``'s evaluation of the original model, which is the
    same measurement when the task, model, dtype and eval settings agree (checked; a mismatch stops here)."""
    from revrel.config import load_config, parse_set
    from revrel.io import atomic_write_json, atomic_write_text

    old = load_config(earlier / "config.yaml")
    new = load_config(config, parse_set([*sets, "eval.probe_rounds=true", f"out={run_dir}"]))
    differ = [k for k in ("task", "model", "dtype", "eval") if getattr(old, k) != getattr(new, k)]
    before = json.loads((earlier / "progress.json").read_text()).get("before") if (earlier / "progress.json").is_file() else None
    if differ or before is None:
        raise SystemExit(f"--before-from {earlier}: " + (f"its {', '.join(differ)} differ from this run's" if differ else "it has no evaluation of the original model"))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(new.to_dict(), sort_keys=False))
    atomic_write_json(run_dir / "progress.json", {"before": before, "before_from": str(earlier)})


if __name__ == "__main__":
    main()
