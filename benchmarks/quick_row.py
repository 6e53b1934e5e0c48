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
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_preset import timed_keep  # noqa: E402

HERE = Path(__file__).resolve().parent
RES = HERE / "results"


def probe_size(task: str) -> int:
    """The matched bench's test-probe texts per group for ``task`` (its matched.json), else the full profile's 400."""
    f = RES / f"matched_test_{task}" / "matched.json"
    return int(json.loads(f.read_text())["probe"]["probe_items"]) if f.is_file() else 400


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=["code", "ner", "toxicity"])
    args = ap.parse_args(argv)
    run_dir = HERE.parent / "runs" / f"quick_{args.task}"
    revrel = shutil.which("revrel") or str(Path(sys.executable).with_name("revrel"))
    cmd = [revrel, "unlearn", "--task", args.task, "--out", str(run_dir), "--overwrite", "-q", "--set", f"eval.probe_items={probe_size(args.task)}"]
    out = RES / f"quick_{args.task}"
    timing = timed_keep(cmd, run_dir, out, note="the README's quick defaults; the probe at the matched bench's test-probe size")
    print(f"quick row: {out} ({timing['wall_s'] / 60:.1f} min, peak RSS {timing['peak_rss_GB']} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
