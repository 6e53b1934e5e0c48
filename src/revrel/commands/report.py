"""``revrel report RUN_DIR...``: report.md plus PNG plots from one or more finished runs.

Plots: per-round forget vs utility curve (one line per run), before/after bars of every numeric
metric, and a method-vs-method trade-off scatter (forget metric after vs utility cost).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from revrel.commands.summary import markdown_summary  # noqa: E402
from revrel.errors import RevrelError  # noqa: E402
from revrel.io import atomic_path, atomic_write_text  # noqa: E402


def headline(task: str) -> tuple[str, str]:
    """(forget metric, utility metric) the task declares for plots and summaries."""
    from revrel.tasks import get_task

    try:
        return get_task(task).headline
    except RevrelError:
        return ("", "")


def load_runs(dirs: list[str]) -> list[tuple[str, dict]]:
    runs = []
    for d in dirs:
        path = Path(d) / "report.json"
        if not path.is_file():
            raise RevrelError(f"{path} not found; give folders of finished revrel runs")
        try:
            runs.append((Path(d).name, json.loads(path.read_text())))
        except ValueError as exc:
            raise RevrelError(f"{path} is not valid JSON; rerun that run") from exc
    return runs


def _numeric(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and not k.startswith(("seconds", "n_")) and k != "samples"}


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_rounds(runs, out: Path, suffix: str = "") -> Path:
    from matplotlib.ticker import MaxNLocator

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in runs:
        rounds = [e for e in r.get("rounds", []) if e.get("revealed_relevance") is not None]
        if not rounds:
            continue
        ks = [e["round"] for e in rounds]
        rel = [e["revealed_relevance"] for e in rounds]
        if r.get("final_reveal"):  # Reveal on the final model, plotted as the round after the last
            ks, rel = ks + [r["final_reveal"]["after_round"] + 1], rel + [r["final_reveal"]["revealed_relevance"]]
        a1.plot(ks, rel, marker="o", label=name)
        cost = [(e["round"], e["keep_cost"]) for e in rounds if e.get("keep_cost") is not None]
        if cost:
            a2.plot([0] + [k for k, _ in cost], [0.0] + [v for _, v in cost], marker="o", label=name)
        budget = r.get("config", {}).get("release", {}).get("budget")
        if budget:
            a2.axhline(budget, ls="--", c="gray")
    a1.set(title="Forget: relevance of revealed data", xlabel="round (Reveal before its negation; last: final model)",
           ylabel="mean oracle relevance")
    a2.set(title="Utility: keep-side cost (dashed: budget)", xlabel="round (after its edits)", ylabel="keep-side NLL change (nats/token)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path = out / f"rounds{suffix}.png"
    _save(fig, path)
    return path


def plot_before_after(runs, out: Path, suffix: str = "") -> Path:
    """One panel per metric that every run reports before and after (runs of one task)."""
    keys = sorted(set.intersection(*({k for k in _numeric(r.get("before", {})) if k in _numeric(r.get("after", {}))} for _, r in runs)))
    cols = min(len(keys), 3) or 1
    rows = (len(keys) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    width = 0.8 / (len(runs) + 1)
    for i, key in enumerate(keys):
        ax = axes[i // cols][i % cols]
        before = _numeric(runs[0][1]["before"]).get(key)
        ax.bar(0, before, width, label="original", color="gray")
        for j, (name, r) in enumerate(runs, 1):
            ax.bar(j * width, _numeric(r["after"]).get(key, 0.0), width, label=name)
        ax.set_title(key, fontsize=10)
        ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
    for j in range(len(keys), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Before / after unlearning{': ' + runs[0][1].get('task', '') if suffix else ''}")
    path = out / f"before_after{suffix}.png"
    _save(fig, path)
    return path


def plot_tradeoff(runs, out: Path, suffix: str = "") -> Path | None:
    task = runs[0][1].get("task")
    fkey, ukey = headline(task)
    if not fkey:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    b = _numeric(runs[0][1]["before"])
    if fkey in b and ukey in b:
        ax.scatter(b[ukey], b[fkey], c="gray", marker="s", s=60, label="original")
    for name, r in runs:
        a = _numeric(r["after"])
        if fkey in a and ukey in a:
            method = r.get("method", "?")
            ax.scatter(a[ukey], a[fkey], s=60, label=name if name == method else f"{name} ({method})")
    ax.set(xlabel=f"utility: {ukey}", ylabel=f"forget: {fkey}", title=f"{task}: forget vs utility")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out / f"tradeoff{suffix}.png"
    _save(fig, path)
    return path


def write_report(dirs: list[str], out: str | None = None) -> Path:
    runs = load_runs(dirs)
    out_dir = Path(out or dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list] = {}
    for name, r in runs:
        by_task.setdefault(str(r.get("task")), []).append((name, r))
    plots = []
    for task, group in by_task.items():  # one set of plots per task: metrics of different tasks do not share axes
        suffix = f"_{task}" if len(by_task) > 1 else ""
        plots += [plot_rounds(group, out_dir, suffix), plot_before_after(group, out_dir, suffix), plot_tradeoff(group, out_dir, suffix)]
    lines = ["# revrel report", ""]
    for task, group in by_task.items():
        if len(by_task) > 1:
            lines += [f"## Task `{task}`", ""]
        lines += _run_sections(group, "###" if len(by_task) > 1 else "##")
        if len(by_task) > 1:
            lines += [f"![{p.stem}]({p.name})" for p in plots if p and p.stem.endswith(f"_{task}")] + [""]
    if len(by_task) == 1:
        lines += [f"![{p.stem}]({p.name})" for p in plots if p]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def pm_change(change: dict | None) -> str:
    """A paired probe change as '+0.123 ± 0.010' ('-' when absent)."""
    return "-" if not change or change.get("change") is None else f"{change['change']:+.3f} ± {change['se']:.3f}"


def strength_text(e: dict) -> str:
    """A round's edits at the strengths their line searches kept, e.g. 'suppress 8 + negate 0.0312' (a baseline: its strength)."""
    if "edits" not in e:
        return f"{e['strength']:g}" if e.get("strength") is not None else "-"
    return " + ".join(f"{x['edit']} {'undone' if x['strength'] is None else format(x['strength'], '.3g')}" for x in e["edits"]) or "-"


def stage_seconds(r: dict) -> dict[str, float]:
    """Seconds per stage of a run's report: Reveal (every round's + the final one), keep side (self-generated keep
    texts, retain PEM, cost baseline), candidates, PEM training / edit preparation, line search, evaluation."""
    rounds = r.get("rounds") or []
    edits = [x for e in rounds for x in e.get("edits", [])]
    out = {"evaluation": sum((r.get(k) or {}).get("seconds", 0) for k in ("before", "after")),
           "keep side": r.get("seconds_keep_side") or 0, "candidates": r.get("seconds_candidates") or 0,
           "reveal": sum(e.get("reveal_seconds") or 0 for e in rounds) + ((r.get("final_reveal") or {}).get("seconds") or 0),
           "PEM training / edits": sum(x.get("seconds_prepare", 0) for x in edits), "line search": sum(x.get("seconds_search", 0) for x in edits)}
    return {k: v for k, v in out.items() if v}


def rounds_table(r: dict) -> list[str]:
    """Markdown: one row per round of a run's report (Reveal, negation, self-probe, task probe), plus
    the final Reveal's row; shared by report.md and docs/results.md."""
    lines = ["| round | revealed relevance | forget set | edits at strength | keep-side cost (nats/token) | target probe change | utility probe change | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in r["rounds"]:
        ratio = e.get("keep_cost")
        rel = e.get("revealed_relevance")
        ep = e.get("eval_probe") or {}
        lines.append(f"| {e['round']} | {'-' if rel is None else f'{rel:.3f}'} | {e['forget_size']} | {strength_text(e)} | "
                     f"{'-' if ratio is None else f'{ratio:.3f}'} | {pm_change(ep.get('target'))} | {pm_change(ep.get('utility'))} | {e.get('seconds', '-')} |")
    if r.get("final_reveal"):
        f = r["final_reveal"]
        lines.append(f"| after {f['after_round']} | {f['revealed_relevance']:.3f} | - | - | - | - | - | {f['seconds']} |")
    return lines


def _run_sections(runs, h: str) -> list[str]:
    lines: list[str] = []
    for name, r in runs:
        lines += [f"{h} {name}: task `{r.get('task')}`, model `{r.get('model')}`, method `{r.get('method')}`", ""]
        b, a = _numeric(r.get("before", {})), _numeric(r.get("after", {}))
        ev = r.get("after", {}).get("eval")
        if ev:
            lines += [f"Evaluated on the {ev.get('split')} split, {ev.get('profile')} profile; intervals are bootstrap 95% over prompts.", ""]
        summary = markdown_summary(r.get("before", {}), r.get("after", {}))
        if summary:
            lines += summary + ["", "All numbers:", ""]
        lines += ["| metric | before | after |", "| --- | --- | --- |"]
        lines += [f"| {k} | {b[k]:.4g} | {a[k]:.4g} |" for k in b if k in a]
        if r.get("rounds"):
            lines += [""] + rounds_table(r)
            if any(e.get("eval_probe") for e in r["rounds"]):
                lines += ["", "Target / utility probe change: the task's likelihood probe after each round, paired against the original "
                          "(nats/token ± SE; `eval.probe_rounds`, evaluation only)."]
        if r.get("stopped"):
            lines.append(f"\nStopped: {r['stopped']}")
        if r.get("attacks"):
            lines += ["", f"{h}# Attacks", "", "```json", json.dumps(r["attacks"], indent=1), "```"]
        lines.append("")
    return lines
