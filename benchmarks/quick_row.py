"""The README's quick run as a row of the matched test table (``benchmarks/results/quick_T``).

    python benchmarks/quick_row.py --task ner

Runs ``revrel unlearn --task T`` with the README's defaults, its likelihood probe at the matched bench's
test-probe size (so the row is comparable with the table's), and measures the run's wall time and
peak memory (the child process's max RSS). Then it keeps what ``build_results.quick_point`` reads:
the run's report.json and config.yaml, and run.json with the command, wall time and peak RSS. The run
folder itself (model weights, adapters) stays under ``runs/`` and is not committed.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RES = HERE / "results"


def probe_size(task: str) -> int:
    """The matched bench's test-probe texts per group for ``task`` (its matched.json), else the full profile's 400."""
    f = RES / f"matched_test_{task}" / "matched.json"
    return int(json.loads(f.read_text())["probe"]["probe_items"]) if f.is_file() else 400


def machine() -> str:
    """``2-core AMD EPYC 7B13, no GPU``: the CPU model from /proc/cpuinfo where there is one."""
    import os

    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{os.cpu_count()}-core {cpu}, no GPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=["code", "ner", "toxicity"])
    ap.add_argument("--runs", default="runs", help="where the run folder goes (default: runs/)")
    args = ap.parse_args(argv)
    run_dir = Path(args.runs) / f"quick_{args.task}"
    cmd = ["revrel", "unlearn", "--task", args.task, "--out", str(run_dir), "--overwrite", "-q", "--set", f"eval.probe_items={probe_size(args.task)}"]
    exe = [sys.executable, "-m", "revrel.cli", *cmd[1:]]
    t0 = time.time()
    rc = subprocess.call(exe, cwd=HERE.parent)
    wall = time.time() - t0
    if rc:
        print(f"quick row: '{' '.join(cmd)}' failed with exit {rc}; nothing was copied", file=sys.stderr)
        return rc
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # Linux: KiB
    out = RES / f"quick_{args.task}"
    out.mkdir(parents=True, exist_ok=True)
    src = HERE.parent / run_dir
    for name in ("report.json", "config.yaml"):
        shutil.copyfile(src / name, out / name)
    (out / "run.json").write_text(json.dumps({"command": " ".join(cmd), "wall_s": round(wall, 1), "peak_rss_GB": round(peak_gb, 3),
                                              "machine": machine(),
                                              "note": "the README's quick defaults; the probe at the matched bench's test-probe size"}, indent=1) + "\n")
    print(f"quick row: {out} ({wall / 60:.1f} min, peak RSS {peak_gb:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
