"""``revrel bench``: every method on the same model, data and evaluation, in one run.

Each method runs as its own ``revrel unlearn`` subprocess (so wall time and peak RSS are its own,
read with ``os.wait4``) into ``OUT/<method>/``; finished methods are skipped on a rerun, so a bench
is resumable. Writes ``OUT/bench.json``, ``OUT/bench.md`` and the comparison plots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from revrel.commands.report import headline, write_report
from revrel.config import RELEASE_METHODS
from revrel.errors import RevrelError
from revrel.io import atomic_write_json, atomic_write_text

ALL = list(RELEASE_METHODS)


def run_method(method: str, out: Path, args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "revrel.cli", "unlearn", "--out", str(out), "--set", f"method={method}", "-q", *args]
    cmd.append("--resume" if (out / "progress.json").is_file() else "--overwrite")
    t0 = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=dict(os.environ, TQDM_DISABLE="1"))
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        line = next((ln for ln in reversed(err.splitlines()) if ln.strip()), "no output")
        raise RevrelError(f"method {method} failed (exit {code}): {line}")
    return {"wall_seconds": round(time.time() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _probe_cell(after: dict, role: str) -> str:
    ch = after.get("probes", {}).get("change", {}).get(role)
    return "-" if not ch or ch.get("change") is None else f"{ch['change']:+.3f} ± {ch['se']:.3f}"


def bench_table(rows: list[dict]) -> list[str]:
    """Markdown: the original and each method's headline metrics with 95% intervals, the probe changes
    against the original (nats/token, paired SE), wall time and peak memory."""
    from revrel.commands.summary import headline_metrics
    from revrel.metrics.stats import fmt_ci

    keys = headline_metrics(rows[0]["after"])
    head = "| method | " + " | ".join(keys) + " | target NLL change | utility NLL change | selectivity | wall s | peak RSS MB |"
    lines = [head, "|" + " --- |" * (len(keys) + 6)]
    b = rows[0]["before"]
    lines.append("| original | " + " | ".join(fmt_ci(b.get(k), b.get("intervals", {}).get(k)) for k in keys) + " | 0 | 0 | 0 | - | - |")
    for r in rows:
        a = r["after"]
        lines.append(f"| {r['method']} | " + " | ".join(fmt_ci(a.get(k), a.get("intervals", {}).get(k)) for k in keys)
                     + f" | {_probe_cell(a, 'target')} | {_probe_cell(a, 'utility')} | {_probe_cell(a, 'selectivity')}"
                     + f" | {r['wall_seconds']} | {r['peak_rss_mb']} |")
    return lines


def bench(task: str, methods: list[str], out: str, extra: list[str]) -> Path:
    unknown = [m for m in methods if m not in ALL]
    if unknown:
        raise RevrelError(f"unknown method '{unknown[0]}'; choose from {', '.join(ALL)}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rows, dirs = [], []
    for m in methods:
        d = root / m
        cost_file = d / "bench_cost.json"
        if (d / "report.json").is_file() and cost_file.is_file():
            cost = json.loads(cost_file.read_text())
        else:
            cost = run_method(m, d, ["--task", task, *extra])
            atomic_write_json(cost_file, cost)
        rep = json.loads((d / "report.json").read_text())
        rows.append({"method": m, **cost, "before": rep["before"], "after": rep["after"], "rounds": len(rep["rounds"]),
                     "forget_size": rep["forget_size"]})
        dirs.append(str(d))
    atomic_write_json(root / "bench.json", {"task": task, "methods": methods, "args": extra, "results": rows,
                                            "command": "revrel bench --task " + task + " --methods " + ",".join(methods) + " " + " ".join(extra)})
    lines = [f"# bench: {task}", ""] + bench_table(rows)
    fkey, ukey = headline(task)
    lines += ["", f"Headline forget metric: `{fkey}` (lower = more forgotten); utility: `{ukey}`.", ""]
    write_report(dirs, str(root))
    lines += ["![trade-off](tradeoff.png)", "![before/after](before_after.png)"]
    atomic_write_text(root / "bench.md", "\n".join(lines) + "\n")
    return root / "bench.md"
