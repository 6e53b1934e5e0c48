"""What a person reads after ``eval``, ``unlearn``, ``report`` and ``bench``: one screen.

Every sampled metric is shown as ``0.365 [0.31, 0.42]`` (bootstrap 95% interval); a before/after pair also shows
the change with its paired interval where the task keeps per-prompt values (``metrics['units']``), and says
"no detectable change" when that interval holds 0 (without one: when the two intervals overlap); the likelihood probes are shown as mean
NLL per token and, against the original, as a paired change +- its standard error.
"""

from __future__ import annotations

import math

from revrel.metrics.stats import fmt_ci, paired_bootstrap, verdict


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def headline_metrics(metrics: dict) -> list[str]:
    """The metrics that carry an interval, in the task's order: the sampled headline numbers."""
    return [k for k in metrics.get("intervals", {}) if _num(metrics.get(k)) is not None]


def paired_change(before: dict, after: dict, metric: str) -> tuple[float, list[float]] | None:
    """(mean change, paired 95% interval) of ``metric`` over the units both evaluations kept, or None."""
    b, a = before.get("units", {}).get(metric), after.get("units", {}).get(metric)
    ci = paired_bootstrap(b, a) if b is not None and a is not None else None
    return None if ci is None else (sum(a) / len(a) - sum(b) / len(b), ci)


def metric_rows(before: dict, after: dict | None = None) -> list[tuple[str, str, str, str, str]]:
    """(metric, before, after, paired change, verdict) for each headline metric."""
    rows = []
    for k in headline_metrics(after or before):
        b_ci = before.get("intervals", {}).get(k)
        if after is None:
            rows.append((k, fmt_ci(_num(before.get(k)), b_ci), "", "", ""))
            continue
        a_ci = after.get("intervals", {}).get(k)
        pc = paired_change(before, after, k)
        change = "" if pc is None else f"{pc[0]:+.3f} [{pc[1][0]:+.2f}, {pc[1][1]:+.2f}]"
        rows.append((k, fmt_ci(_num(before.get(k)), b_ci), fmt_ci(_num(after.get(k)), a_ci), change,
                     verdict(b_ci, a_ci, None if pc is None else pc[1])))
    return rows


def _pm(change: dict | None) -> str:
    if not change or change.get("change") is None:
        return "-"
    se = change.get("se")
    detect = se is not None and math.isfinite(se) and abs(change["change"]) > 2 * se
    return f"{change['change']:+.3f} ± {se:.3f}" + ("" if detect else " (no detectable change)")


def probe_rows(metrics: dict, before: dict | None = None) -> list[tuple[str, str, str, str]]:
    """(role/group, NLL before, NLL now, change ± SE) for the probe roles and groups of ``metrics``."""
    p = metrics.get("probes")
    if not p:
        return []
    ch = p.get("change", {})
    bp = (before or {}).get("probes", {})
    nll = lambda d: "-" if not d or d.get("nll") is None else f"{d['nll']:.3f}"  # noqa: E731
    rows = []
    for role in ("target", "utility"):
        groups = p.get(f"{role}_groups", [])
        rows.append((f"{role} ({'+'.join(groups)})", nll(bp.get(role)) if bp else "", nll(p.get(role)), _pm(ch.get(role))))
        if len(groups) > 1:  # a role pooled over several groups: show each
            for g in groups:
                rows.append((f"  {g}", nll(bp.get("groups", {}).get(g)) if bp else "", nll(p["groups"].get(g)), _pm(ch.get("groups", {}).get(g))))
    if ch.get("selectivity"):
        rows.append(("selectivity (target - utility)", "", "", _pm(ch["selectivity"])))
    return rows


def _table(rows, widths) -> list[str]:
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def text_summary(before: dict, after: dict | None = None, title: str = "", seconds: float | None = None) -> str:
    """The CLI summary: headline metrics with intervals, probes, wall time."""
    lines = [title] if title else []
    ev = (after or before).get("eval", {})
    if ev:
        lines.append(f"eval: {ev.get('split')} split, {ev.get('profile')} profile")
    m = metric_rows(before, after)
    if m:
        head = ("metric", "before", "after", "change [paired]" if any(r[3] for r in m) else "", "") if after else ("metric", "value", "", "", "")
        widths = [max(len(r[i]) for r in [head, *m]) for i in range(5)]
        lines += _table([head, *m], widths)
    p = probe_rows(after or before, before if after else None)
    if p:
        pr = (after or before)["probes"]
        lines.append("")
        lines.append("likelihood probes, mean NLL (nats/token)" + (f": {pr['note']}" if pr.get("note") else ""))
        head = ("probe", "before", "after", "change ± SE") if after else ("probe", "", "NLL", "")
        widths = [max(len(r[i]) for r in [head, *p]) for i in range(4)]
        lines += _table([head, *p], widths)
    if seconds is not None:
        lines.append(f"\nwall time {seconds / 60:.1f} min")
    return "\n".join(lines)


def markdown_summary(before: dict, after: dict | None = None) -> list[str]:
    """The same as markdown tables, for report.md and bench.md."""
    out = []
    m = metric_rows(before, after)
    if m:
        out += ["| metric | before | after | change [paired] | |", "| --- | --- | --- | --- | --- |"] if after else ["| metric | value |", "| --- | --- |"]
        out += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" if after else f"| {r[0]} | {r[1]} |" for r in m]
    p = probe_rows(after or before, before if after else None)
    if p:
        out += ["", "| probe (mean NLL, nats/token) | before | after | change ± SE |", "| --- | --- | --- | --- |"]
        out += [f"| {r[0].strip()} | {r[1]} | {r[2]} | {r[3]} |" for r in p]
    return out
