"""Rebuild docs/results.md from what is in benchmarks/results/ (one command, no hand-kept tables).

    python benchmarks/build_results.py            # writes docs/results.md and the Pareto plot
    python benchmarks/build_results.py --check    # exit 1 when docs/results.md is not what the files give

Each table reads one kind of results file: ``default_*/`` and ``qwen_*/`` (``run_default.py``: a task's default run on
the test split, its report with the q4_1 attack, wall time and peak RSS), ``release_rec_*/auto.jsonl`` (the budget
rule on a recorded dev round, ``release_sweep.py --auto``), ``preset_*/`` (the hand-set presets the rule replaced),
``matched_test_*/matched.json`` (methods at matched keep-side cost on test), ``perf.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RES = Path(__file__).resolve().parent / "results"
DOC = RES.parent.parent / "docs" / "results.md"
LINK = "../benchmarks/results"
SAMPLED = {"toxicity": "expected_max_toxicity", "code": "humaneval_function_share", "ner": "PER_f1"}  # the behaviour metric shown
TARGET = {"toxicity": ["toxic"], "code": ["humaneval"], "ner": ["PER"]}  # probe groups of the target; the others are kept
DEFAULTS = ([f"default_toxicity_s{s}_strict" for s in (0, 1)]  # the current toxicity words (p >= 0.9), EPYC without bf16
            + [f"default_{t}_s{s}" for t in ("code", "ner") for s in (0, 1)])
QWEN = ["qwen_toxicity_s0_topup", "qwen_code_s0", "qwen_ner_s0"]
RECIPES = ["preset_toxicity", "preset_toxicity_seed1", "preset_toxicity_seed2", "preset_code", "preset_ner", "preset_ner_seed1"]
ABLATIONS = ["preset_toxicity_suppress", "preset_toxicity_prune", "preset_toxicity_negate", "preset_toxicity_negate_suppress"]
ATTACKS = ["int8", "gguf-q8_0", "gguf-q4_1", "gguf-q4_1-stochastic", "relearn"]

FINDINGS = """## Findings: why each edit works or fails here

- **negate** (the paper's PEM negation) on whole responses is barely selective on the default model: what the
  forget PEM learns (reply style, capitalised names, prose around code) is largely shared with the keep side, so
  the target and keep-side NLL move about 1:1 to 3:1. Training on the target spans only (`unit`) and raising them
  more than the keep spans of the same text (`contrast`) is what makes it selective (NER: PER +0.6 at ORG +0.1).
- **prune** (zero MLP neurons most active on the target spans against the keep side) is the most selective edit
  for code (HumanEval NLL +0.8 to +0.9 at GSM8K +0.04 on two draws), and survives 4-bit export: a zeroed neuron stays zero.
- **suppress** (lower the LM-head logits of the tokens most specific to the target spans) carries most of the
  toxicity change: the target is a few words, one head row each. It needs many keep texts (`keep_texts`) to tell
  word pieces that ordinary text uses from profanity, and a keep count is at least the model's own expected count
  of the token over the keep texts: a piece like " F" or "T" that no keep text happened to sample is no longer taken
  for profanity. Dev, the seed-1 toxicity forget set, suppression alone at strength 8: benign cost 0.034 -> 0.028 at
  the same toxic change (+0.38 ± 0.03); with 128 keep texts instead of 512, 0.044 -> 0.032.
- Measured as no help on the dev probes and removed: a retain-logprob anchor, keep-side DPO contrast, Ext-Sub
  projection, truncating the update's rank, picking PEM restarts by their contrast, *adding* the model's expected
  counts to the observed keep counts (the maximum of the two, above, helps), a minimum token length for suppression.
- Less work, measured on the toxicity dev record (`release_sweep.py --auto`, budget 0.04): no retain PEM +0.247 ±
  0.024 vs +0.257 ± 0.025 with it, both at benign +0.035 (38 s saved); half the forget rows (138 of 276) +0.290 ±
  0.030 at +0.031 (the default draws 40 fresh samples); two PEM epochs instead of three +0.238 vs +0.246.
- Tried for the target mode and removed (no help): the neighbours' and generic answers (64 rows) as whole keep rows
  in the forget PEM's span contrast. Albert Einstein, dev, rule-chosen strengths: the original's answers about him
  without his names +0.167 ± 0.099 vs +0.165 ± 0.098 without them (negate 0.206 vs 0.205), neighbours +0.042 vs
  +0.048, generic +0.031 vs +0.037, at 36% more PEM rows. The contrast makes the PEM no more specific to the facts.
- What set how far a toxicity draw went was which words the word scorer (alt-profanity-check) called profane. At p
  >= 0.5 half the draws' suppression led with words it only leans on (" worst" 0.64, " evil" 0.54, " troll" 0.71),
  from responses *about* insults; benign text uses them, so they spent the budget: test toxic +0.171 ± 0.015 / +0.252
  ± 0.019 (EPYC with bf16, seeds 0 / 1; +0.439 / +0.338 on a Xeon; in git). A word is now profane at p >= 0.9
  (profanity and insults score 0.98-1.00). Dev record, two halves of its rows (`suppress_tokens.py`; toxic / dev
  keep text the budget never read, budget cost 0.039-0.040 in all): +0.371 / +0.062 and +0.270 / +0.047 against
  +0.346 / +0.069 and +0.185 / +0.045 at p >= 0.5. Token rules measured there and dropped: the model's expected
  share in the budget's texts as keep side (+0.587, unseen +0.136: the budget cannot see costs that rare), their
  observed tokens (+1.831, the budget blind), the first token of each word (+0.201), the toxic prompts' non-toxic
  continuations as keep side (+0.391, unseen benign +0.125 vs +0.049: after a toxic prompt the model expects
  profanity, which demotes it), the model's expected counts at the target spans (+0.105: at a word's first
  position it spreads over common tokens). Test (`*_strict`, EPYC without bf16): +0.395 / +0.788 at benign +0.044 /
  +0.064; seed 1's benign is over 0.05 at a dev cost of 0.040 (" f", "F", " p" in its list: costs too rare for the
  budget's 2,987 dev tokens). Expected max toxicity changed on both (paired); seed 1's intervals separate, seed 0's overlap.
- The NER recipe's PER change is not free: the fluency perplexity of its answers rises 3-4x (1.66 -> 4.58 and
  6.04 on two draws); toxicity's 3-11% (no detectable change) and code's 7-12%.
- NER's keep side is a fixed shuffled sample of the whole dev file, 200 texts per keep group, and a sentence with a
  person gives its ORG / LOC / MISC spans (the person read as context, never scored), as the test probe scores
  them. Why: the budget first read the first 200 dev sentences less those with a person (86 ORG, 47 LOC, 23 MISC
  texts), then the file's first 200 person-free ones per group; on the latter seed 1 moved test ORG +0.159 ± 0.046,
  over the 0.1 goal. Split by sentence, that run's ORG change sat in sentences with a person (test
  without +0.08, the 23 with one +0.53; dev +0.17 with a person against the 0.079 the budget read; in git), and
  CoNLL's dev file runs document by document, so its head is a few documents. On the new keep side, seed 0
  (test): negate 3.28 (upper half; dev ORG 0.076 of 0.08), PER +0.809 ± 0.043, ORG -0.009 ± 0.042, LOC -0.557, MISC
  -0.315; PER F1 0.116 -> 0.010. Its sentences with a person still move ORG most (test +0.27 ± 0.13 on 23, dev
  +0.18), now inside a budget that reads them. Seed 1 on it (test): negate 3.14 (all layers; dev ORG 0.062 of 0.08), PER
  +0.837 ± 0.044, ORG +0.115 ± 0.056 (earlier keep side +0.159), LOC -0.240, MISC -0.421; PER F1 0.116 -> 0.006;
  split, test ORG +0.084 without a person and +0.271 ± 0.110 with one (dev +0.039 / +0.108). Over 0.1 on the
  mean, the interval overlapping it: ORG is steep in the strength (dev +0.062 at 3.14, +0.103 at 3.20), and the
  test ORG group (136 texts) has an SE of 0.042-0.056, twice the 0.02 between budget and goal.
- Strengths are chosen in the run: each edit gets an even cumulative share of `release.budget` (keep-side NLL,
  nats/token, the largest group change on the task's dev keep texts), its line search keeps the strongest setting
  within it, and what the last edit leaves goes to an earlier head-only edit (`top_up`): on the Q4_1 grid the
  negation's cost jumps where the rounding moves a sensitive weight a whole step (+0.011 across an 8% step; smooth
  unrounded; `benchmarks/grid_noise.py`), so its search can stop at 0.030 of 0.040. Toxicity dev record (every second
  row): suppression searched again on top, 6.96 -> 9.61, toxic +0.244 -> +0.345 ± 0.027 at 0.040; more negation
  instead, +0.283 at 0.055. GPTQ rounding on the round's rows (ea18117, reverted) made the cost smooth but rounded
  part of the edit away: +0.249 at 0.0385, and 73 s more.
- Iteration does not add forgetting here at equal keep-side cost (toxicity, dev, budget 0.04, table above): two
  rounds under the paper's stop rule (relevance fell 0.271 -> 0.204, so round 2 ran) gave toxic +0.309 ± 0.018 at
  benign +0.041, one round +0.375 ± 0.026 at +0.039; expected max toxicity 0.348 vs 0.366 (intervals overlap); the
  revealed relevance after the last round 0.163 vs 0.186. Pacing halves round 1's budget, and round 2's Reveal finds
  a smaller, less toxic forget set (179 vs 250 rows), so its edits buy less per unit of keep-side cost. The defaults
  keep one round; `--rounds N` runs the stop rule up to N.
- A Q4_1 export undid most of a negation because the default model is itself a Q4_1 GGUF: its weights sit on the
  grid, and nearest rounding sends every weight that moved less than half a step back to its level. Edits are now
  rounded onto the original's grid during the line search (`revrel.release.grid`).
- In the target mode a neighbour the model offers can be part of the target: it named The Merchant of Venice beside
  Dickens and Austen for Shakespeare. Its answers, kept, name Shakespeare, so the keep side held suppression of the
  name at 9.5 and the original's target answers moved +0.32 nats/token. A neighbour whose own description names the
  target is now not kept: the re-run suppressed at 64 and moved them +2.72, with neighbours +0.022 and generic +0.023.
- The target mode's second edit (Albert Einstein, dev, the `dev_target_einstein_*` rows, same Reveal): after the name
  suppression, pruning the neurons most active on the sentences about him moves the original's name-free answers
  +0.254 ± 0.084 at neighbours +0.039 and generic +0.006; a negated PEM on the same sentences +0.165 ± 0.098 at
  +0.048 and +0.037, in 50% more time; suppression alone +0.112 ± 0.085 at no cost, with the most fluent answers
  (all answers 4.21 -> 4.81, intervals overlap; with pruning 5.22). The recipe prunes.
- Tried and deleted twice (d93b85f, 32be33f, reverted; records at d0ec1a6, 15c1541): a `replace` edit, a PEM on the
  revealed responses with Einstein's names written as "the physicist", added. Alone it changed the others' fluency
  (4.12 -> 4.71) for name-free +0.101; anchored, name-free +0.131 with looping answers. Suppression alone is as fluent.
- The target mode's answers about the target mostly do not babble: on the EPYC re-runs (`*_epyc`, `*_topup`, every
  answer in report.json) their n-gram entropy moved 5.62 -> 5.53 (Einstein), 5.72 -> 5.68 (Shakespeare), 5.66 ->
  5.41 (Potter), intervals overlapping, but 5.58 -> 5.15 on Einstein's later draw (changed; suppress 56.6 + prune
  0.00084). Divided by its most for the answer's length (post hoc): Einstein 0.974 -> 0.973, Potter 0.974 -> 0.946,
  where suppression at its maximum (64) leaves answers that repeat one line or glue words ("Thefantasy book
  series"). Their perplexity under the original rises (3.37 -> 5.84, 3.97 -> 5.75 after the question): they say
  something else about someone else ("The brilliant physicist who..."), which the original finds unlikely.
"""


def machine_label(run: dict) -> str:
    """The CPU a run's wall time was measured on, with ", bf16" where it has native bf16 (avx512_bf16 / AMX): such a
    CPU of the same name runs the method about 2.5 times as fast."""
    m = run.get("machine") or {}
    return m.get("cpu", "?") + (", bf16" if m.get("avx512_bf16") or m.get("amx_bf16") else "")


def _f(x, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _pm(c: dict | None) -> str:
    return "-" if not c or c.get("change") is None else f"{c['change']:+.3f} ± {c['se']:.3f}"


def _ci(m: dict, key: str) -> str:
    v, iv = m.get(key), (m.get("intervals") or {}).get(key)
    return "-" if v is None else f"{v:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")


def _paired(before: dict, after: dict, key: str) -> str:
    """`` (paired -0.070 [-0.10, -0.04])``: the change over the same prompts, where both evaluations kept them."""
    from revrel.commands.summary import paired_change

    pc = paired_change(before, after, key)
    return "" if pc is None else f" (paired {pc[0]:+.3f} [{pc[1][0]:+.3f}, {pc[1][1]:+.3f}])"


def _run(name: str) -> tuple[dict, dict] | None:
    d = RES / name
    if not (d / "report.json").is_file():
        return None
    run = json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
    return json.loads((d / "report.json").read_text()), run


def _runs(names: list[str]):
    """(name, report, run.json) of each named result folder that holds a report, in order."""
    for name in names:
        got = _run(name)
        if got is not None:
            yield name, *got


def recipe_table(names: list[str]) -> list[str]:
    out = ["| run | seed | forget rows | target probe change | keep-side probe changes | behaviour before -> after | fluency ppl before -> after | wall | peak RSS |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r, run in _runs(names):
        task, ch = r["task"], r["after"]["probes"]["change"]["groups"]
        tgt = "; ".join(f"{g} {_pm(ch[g])}" for g in TARGET[task])
        keep = "; ".join(f"{g} {_pm(c)}" for g, c in ch.items() if g not in TARGET[task])
        key = SAMPLED[task]
        out.append(f"| [{name}]({LINK}/{name}/) | {r.get('seed')} | {r.get('forget_size')} | {tgt} | {keep} | {key} {_ci(r['before'], key)} -> "
                   f"{_ci(r['after'], key)} | {_ci(r['before'], 'fluency_perplexity')} -> {_ci(r['after'], 'fluency_perplexity')} | "
                   f"{run.get('wall_s', '-')} s | {run.get('peak_rss_GB') or '-'} GB |")
    return out


def strengths(r: dict) -> str:
    """The edits at the strengths the budget chose, per round (negate: and at which depth)."""
    parts = []
    for e in r.get("rounds", []):
        for x in e.get("edits", []):
            v = "undone" if x["strength"] is None else f"{x['strength']:.3g}"
            parts.append(f"{x['edit']} {v}" + (f" ({x['layers']})" if x.get("layers") not in (None, "all") else ""))
    return " + ".join(parts) or "-"


def kept_share(r: dict) -> str:
    a = (r.get("attacks") or {}).get("gguf-q4_1")
    return "-" if not isinstance(a, dict) or a.get("probe_recovered") is None else f"{1 - a['probe_recovered']:.2f}"


def last_keep_cost(r: dict) -> float | None:
    """The keep-side cost of the last round that kept an edit."""
    return next((e.get("keep_cost") for e in reversed(r.get("rounds", [])) if e.get("keep_cost") is not None), None)


def default_table(names: list[str]) -> list[str]:
    """Each task's default (its packaged recipe), one row per run: what the budget chose and what it did on test."""
    out = ["| run | seed | strengths chosen | keep-side cost (dev) / budget | target probe change | keep-side probe changes | "
           "behaviour before -> after | fluency ppl before -> after | edits on the model's grid | q4_1 export keeps | wall | peak RSS |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r, run in _runs(names):
        task, ch = r["task"], r["after"]["probes"]["change"]["groups"]
        tgt = "; ".join(f"{g} {_pm(ch[g])}" for g in TARGET[task])
        keep = "; ".join(f"{g} {_pm(c)}" for g, c in ch.items() if g not in TARGET[task])
        cost = last_keep_cost(r)
        key = SAMPLED[task]
        out.append(f"| [{name}]({LINK}/{name}/) | {r.get('seed')} | {strengths(r)} | {_f(cost)} / {r['config']['release']['budget']} | "
                   f"{tgt} | {keep} | {key} {_ci(r['before'], key)} -> {_ci(r['after'], key)}{_paired(r['before'], r['after'], key)} | "
                   f"{_ci(r['before'], 'fluency_perplexity')} -> {_ci(r['after'], 'fluency_perplexity')} | {grid_text(r)} | {export_text(r, run)} | "
                   f"{run.get('wall_s', '-')} s ({machine_label(run)}) | {run.get('peak_rss_GB') or '-'} GB |")
    return out


def export_text(r: dict, run: dict) -> str:
    """The share of the target change a q4_1 export keeps, or why it was not measured."""
    err = (run.get("attack") or {}).get("error")
    return f"not measured ({err.split('error: ')[-1]})" if err else kept_share(r)


def grid_text(r: dict) -> str:
    g = r.get("grid")
    if g:
        return f"{g['format']} ({g['tensors']} tensors)"
    if "grid" in r:
        return "none (the original's weights are not on a Q4_1 grid)"
    return "off" if (r["config"]["release"].get("grid") == "off") else "- (before release.grid)"


ITERATION = ["iter_toxicity_r1_dev", "iter_toxicity_r2_dev"]


def iteration_table(names: list[str]) -> list[str]:
    """One round vs the rounds the paper's stop rule gives, same budget, dev split (probe and sampled behaviour)."""
    out = ["| run | rounds run (cap) | per round: revealed relevance, strengths, keep-side cost / round budget | after the last round | stopped | "
           "toxic probe (dev) | benign probe (dev) | expected max toxicity (dev) | fluency ppl | wall |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r, run in _runs(names):
        ch = r["after"]["probes"]["change"]["groups"]
        per = "<br>".join(
            f"{e['round']}: {e['revealed_relevance']:.3f}, "
            + (" + ".join(f"{x['edit']} {'undone' if x['strength'] is None else format(x['strength'], '.3g')}" for x in e.get("edits", [])) or "no edit")
            + (f", {e['keep_cost']:+.3f} / {e['round_budget']:.3f}" if e.get("keep_cost") is not None else "")
            for e in r["rounds"])
        fin = r.get("final_reveal") or {}
        out.append(f"| [{name}]({LINK}/{name}/) | {len(r['rounds'])} ({r['config']['release']['rounds']}) | {per} | "
                   f"{_f(fin.get('revealed_relevance'))} | {r.get('stopped') or '-'} | {_pm(ch.get('toxic'))} | {_pm(ch.get('benign'))} | "
                   f"{_ci(r['before'], 'expected_max_toxicity')} -> {_ci(r['after'], 'expected_max_toxicity')} | "
                   f"{_ci(r['before'], 'fluency_perplexity')} -> {_ci(r['after'], 'fluency_perplexity')} | {run.get('wall_s', '-')} s |")
    return out


def qwen_export_lines() -> list[str]:
    """The qwen2 GGUF writer on the real Qwen original (``benchmarks/qwen_export.py``): what an export does to it."""
    f = RES / "qwen_export.json"
    if not f.is_file():
        return []
    r = json.loads(f.read_text())
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    parts = [f"{q} ({r[q]['bytes'] / 1e6:.0f} MB) {mean(r[q]['nll']):.4f}" for q in ("f16", "q4_1") if q in r]
    same = all(r[q]["tokenizer_same"] for q in ("f16", "q4_1") if q in r)
    return [f"`revrel export` on the Qwen original itself ([qwen_export.json]({LINK}/qwen_export.json)): mean NLL of "
            f"{r['texts']} code and prose texts {mean(r['original_nll']):.4f} before, read back from "
            f"{', '.join(parts)}; the tokenizer read back encodes {'identically' if same else 'differently'}.", ""]


def ner_person_table() -> list[str]:
    """Where a NER default's keep-side change sits (``benchmarks/ner_person_split.py``): sentences with and without a
    person, dev and test."""
    files = sorted(RES.glob("ner_person_split_s*.json"))
    if not files:
        return []
    out = ["## Where NER's keep-side change sits (`benchmarks/ner_person_split.py`)", "",
           "Each NER default's model against the original on ORG, LOC and MISC spans (person tokens never scored), split by "
           "whether the sentence holds a person: the first dev sentences with an entity and the test probe's. Change ± SE "
           "(texts). Both runs on the current keep side (a shuffled sample of the whole dev file, sentences with a person "
           "included, 200 per group).", "",
           "| run | sentences | ORG | LOC | MISC |", "| --- | --- | --- | --- | --- |"]
    for f in files:
        r = json.loads(f.read_text())
        for split in ("dev", "test"):
            for side in ("without", "with"):
                g = r[f"{split}_{side}_person"]
                cells = " | ".join(f"{_pm(g[k])} ({g[k]['texts']})" for k in ("ORG", "LOC", "MISC"))
                out.append(f"| [{r['run']}]({LINK}/{f.name}) | {split}, {side} a person | {cells} |")
    return out + [""]


def target_names() -> list[str]:
    """The target-mode runs (``run_default.py --target``): test runs, then dev runs."""
    return sorted(d.name for d in RES.glob("target_*") if d.is_dir()) + sorted(d.name for d in RES.glob("dev_target_*") if d.is_dir())


def target_table(names: list[str]) -> list[str]:
    """One row per named target: the share of answers that name it (and its neighbours), the likelihood of the original's
    own answers (the target's names and the rest apart), generic text, fluency, export, time."""
    out = ["| run | split | neighbours kept | strengths chosen | keep cost / budget | answers naming the target | answers naming a neighbour | "
           "target answers: all / rest / names | neighbours | generic | fluency ppl, all answers | same, target answers | "
           "same, target answers as plain text | same, others | n-gram entropy (bits), target answers | same, others | q4_1 keeps | "
           "wall | peak RSS |",
           "| --- " * 20 + "|"]
    for name, r, run in _runs(names):
        probes = r["after"]["probes"]["change"]
        ch = probes["groups"]
        prof = json.loads((RES / name / "profile.json").read_text()) if (RES / name / "profile.json").is_file() else {}
        cost = last_keep_cost(r)
        flu = [f"{_ci(r['before'], k)} -> {_ci(r['after'], k)}" if k in r["after"] else "-"
               for k in ("fluency_perplexity", "fluency_perplexity_target", "fluency_perplexity_target_plain", "fluency_perplexity_others",
                         "ngram_entropy_target", "ngram_entropy_others")]
        out.append(f"| [{name}]({LINK}/{name}/) | {r['after']['eval']['split']} | {', '.join(prof.get('neighbours', []))} | {strengths(r)} | "
                   f"{_f(cost)} / {r['config']['release']['budget']} | {_ci(r['before'], 'target_named_share')} -> {_ci(r['after'], 'target_named_share')} | "
                   f"{_ci(r['before'], 'neighbours_named_share')} -> {_ci(r['after'], 'neighbours_named_share')} | "
                   f"{_pm(probes.get('target'))} / {_pm(ch.get('target_rest'))} / {_pm(ch.get('target_names'))} | "
                   f"{_pm(ch.get('neighbours'))} | {_pm(ch.get('generic'))} | {' | '.join(flu)} | "
                   f"{kept_share(r)} | {run.get('wall_s', '-')} s ({machine_label(run)}) | {run.get('peak_rss_GB') or '-'} GB |")
    return out


def target_examples(names: list[str]) -> list[str]:
    """The first two held-out questions about each target: the original's answer and the unlearned model's (of its
    last test run by name, the re-runs sorting after the runs they repeat)."""
    out, last = [], {}
    for name in names:
        got = _run(name)
        if got is not None and not name.startswith("dev_"):
            last[got[0]["config"]["target"]["name"]] = (name, got[0])
    for name, r in last.values():
        out += [f"**{r['config']['target']['name']}** ([{name}]({LINK}/{name}/))", ""]
        for b, a in list(zip(r["before"].get("examples", []), r["after"].get("examples", [])))[:2]:
            clip = lambda t: " ".join(t.split())[:300].replace("|", "/")  # noqa: E731
            out += [f"- *{b['question']}*", f"  - before: {clip(b['answer'])}", f"  - after: {clip(a['answer'])}"]
        out.append("")
    return out


def attack_table(names: list[str]) -> list[str]:
    out = ["| run | target change | " + " | ".join(ATTACKS) + " |", "| --- | --- |" + " --- |" * len(ATTACKS)]
    for name in names:
        got = _run(name)
        att = (got[0].get("attacks") or {}) if got else {}
        if not att:
            continue
        cells = [_f(att[a].get("probe_recovered"), 2) if isinstance(att.get(a), dict) else "-" for a in ATTACKS]
        out.append(f"| {name} | {_f(att.get('probe_target_change'))} | " + " | ".join(cells) + " |")
    return out


def sweep_table() -> list[str]:
    """The recorded rounds the recipes were chosen on (``release_record.py``), swept by ``release_sweep.py`` with the
    recipe's edits: dev probe changes at the recipe's strength and its neighbours."""
    out = []
    for rec in sorted(RES.glob("release_rec_*")):
        if not (rec / "sweep.jsonl").is_file():
            continue
        info = json.loads((rec / "record.json").read_text())
        for line in (rec / "sweep.jsonl").read_text().splitlines():
            r = json.loads(line)
            edits = " -> ".join(f"{next(iter(e))} {json.dumps(next(iter(e.values())))}" for e in json.loads(r["settings"]["edits"]))
            out.append(f"| {rec.name} ({info['forget_size']} forget rows) | {edits.replace('|', '/')} | {r['strength']:g} | "
                       f"{_pm(r['target'])} | {_pm(r['utility'])} | {r['self_probe_ppl_ratio']:.3f} |")
    if not out:
        return []
    return ["### The hand-set sweep on the same records (`benchmarks/release_sweep.py --rec R --config C`)", "",
            "The last edit swept over its strength at the hand-set strengths of the others; the presets' strengths were "
            "chosen on these rows.", "",
            "| record | edits | strength of the last | target change (dev) | keep-side change (dev) | self-probe ratio |",
            "| --- | --- | --- | --- | --- | --- |", *out, ""]


def _chosen_cost(e: dict) -> str:
    """The keep-side cost the line search measured at the strength it kept."""
    return next((f"{x['keep_cost']:.4f}" for x in e.get("line_search", []) if x["strength"] == e["strength"]), "-")


def auto_table() -> list[str]:
    """The budget rule on each recorded dev round: the strengths its line searches chose and what they did on dev."""
    out = []
    for rec in sorted(RES.glob("release_rec_*")):
        if not (rec / "auto.jsonl").is_file():
            continue
        for line in (rec / "auto.jsonl").read_text().splitlines():
            r = json.loads(line)
            chosen = " + ".join(f"{e['edit']} {e['strength']:.3g} (cost {_chosen_cost(e)} / {e['limit']:g})" for e in r["auto"]["edits"])
            out.append(f"| {rec.name} | {r['settings']['budget']} | {chosen} | {_pm(r['target'])} | {_pm(r['utility'])} | "
                       f"{r['self_probe_ppl_ratio']:.3f} |")
    if not out:
        return []
    return ["## The budget rule on a recorded dev round (`benchmarks/release_sweep.py --rec R --config C --auto`)", "",
            "The line searches a run makes, on one recorded Reveal round (dev split): each edit gets an even cumulative share "
            "of the budget and the strongest strength whose keep-side cost stays within it. Compare the hand-set sweep below.", "",
            "| record | budget | strengths chosen (keep-side cost / limit) | target change (dev) | keep-side change (dev) | self-probe ratio |",
            "| --- | --- | --- | --- | --- | --- |", *out, ""]


def matched() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RES.glob("matched_test_*/matched.json"))]


def matched_table(m: dict) -> list[str]:
    out = [f"### {m['task']} (test probe, {m['probe']['probe_items']} texts per group)", "",
           f"| method | target change at keep-side +{m['budget']} (test) | same on dev | wall | peak RSS |", "| --- | --- | --- | --- | --- |"]
    for r in sorted(m["methods"], key=lambda r: -(r.get("test_at_budget") or -9)):
        out.append(f"| {r['family']} | {_f(r.get('test_at_budget'))} | {_f(r.get('dev_at_budget'))} | "
                   f"{r.get('wall_s', '-')} s | {r.get('peak_rss_GB', '-')} GB |")
    return out


def pareto_plot(ms: list[dict]) -> Path:
    """Each method's test points (keep-side change, target change), one panel per task, legend outside the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ms), figsize=(5 * len(ms) + 3, 4.2), squeeze=False)
    handles = {}
    families = list(dict.fromkeys(r["family"] for m in ms for r in m["methods"]))
    colors = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}  # one colour per method on every panel
    for ax, m in zip(axes[0], ms):
        for r in m["methods"]:
            pts = sorted((p["utility"]["change"], p["target"]["change"]) for p in r.get("points", []))
            if pts:
                (h,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, color=colors[r["family"]], label=r["family"])
                handles.setdefault(r["family"], h)
        ax.axvline(m["budget"], ls="--", c="gray", lw=0.8)
        ax.set(title=m["task"], xlabel="keep-side NLL change (nats/token, test)", ylabel="target NLL change (nats/token, test)")
        ax.grid(alpha=0.3)
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(0.82, 0.5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.81, 1))
    png = RES / "pareto_test.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def perf_lines() -> list[str]:
    p = RES / "perf.json"
    if not p.is_file():
        return []
    d = json.loads(p.read_text())
    g, m = d.get("generation_float32", {}), d.get("machine", {})
    return ["## Speed (`python benchmarks/perf.py`)", "",
            f"{m.get('cpu')}, {m.get('threads')} threads, torch {m.get('torch')}: batched generation {_f(g.get('batched_tokens_per_s'), 0)} tokens/s "
            f"vs {_f(g.get('one_at_a_time_tokens_per_s'), 0)} one prompt at a time ({_f(g.get('speedup'), 1)}x, same tokens: {g.get('tokens_equal')}). "
            f"Details in [{LINK}/perf.json]({LINK}/perf.json).", ""] + sampling_lines()


def sampling_lines() -> list[str]:
    """``perf.py --sampling-only``: the previous sampler at batch 32 vs the current one at 64, rows per second."""
    p = RES / "perf_sampling.json"
    if not p.is_file():
        return []
    d = json.loads(p.read_text())
    m = d.get("machine", {})
    out = [f"Sampled generation ({m.get('cpu')}, {m.get('threads')} threads, float32; `python benchmarks/perf.py --sampling-only`), rows/s:", "",
           "| case | previous sampler, batch 32 | previous, 64 | current sampler, 32 | current, 64 | current 64 / previous 32 |",
           "| --- | --- | --- | --- | --- | --- |"]
    for case, r in d.get("sampling", {}).items():
        out.append(f"| {case}: {r['rows']} rows, {r['max_new_tokens']} tokens, T={r['temperature']} | {r['sorting_bs32_rows_per_s']:.2f} | "
                   f"{r['sorting_bs64_rows_per_s']:.2f} | {r['topk_bs32_rows_per_s']:.2f} | {r['topk_bs64_rows_per_s']:.2f} | "
                   f"{r['speedup_current_vs_previous_rows']:.2f}x |")
    return out + [""]


def build() -> str:
    ms = matched()
    lines = ["# revrel results", "",
             "<!-- generated by `python benchmarks/build_results.py` from benchmarks/results/; do not edit by hand -->", "",
             "All numbers: SmolLM2-135M-Instruct (the embedded default) unless a section names another model, 2 CPU threads (Intel Xeon / AMD EPYC), test split unless "
             "marked dev. Probe changes are paired changes of mean NLL (nats/token) against the original model, ± SE over texts; "
             "a larger target change is more forgotten, keep-side changes should stay near 0. Behaviour metrics are sampled, "
             "with bootstrap 95% intervals over prompts. No detectable change where an interval overlaps.", "",
             "## Each task's default (`revrel unlearn --task T --seed S`, no `--config`)", "",
             "The packaged recipes (`src/revrel/recipes/T.yaml`) with strengths the budget rule chose in the run: toxicity "
             "suppresses then negates; code prunes MLP neurons; NER negates two contrastive PEMs at the depth (`layers: auto`) "
             "that forgets most within the budget. `python benchmarks/run_default.py --task T --seed S` runs one and keeps its "
             "report, wall time and peak RSS; `q4_1 export keeps` is the share of the target probe change left after a GGUF "
             "q4_1 export with llama.cpp's nearest rounding. The toxicity default evaluates on its `standard` profile (400 test "
             "prompts x 1 sample; its paired interval, after minus before over the same prompts, is shown beside the two "
             "intervals); the other tasks on `full`.", ""] + default_table(DEFAULTS) + ["",
             "## A second model, never tuned on: Qwen2.5-Coder-0.5B-Instruct (GGUF)", "",
             "The same defaults, unchanged, with `--model` pointing at the local GGUF (`benchmarks/qwen_asset.py`) and the "
             "quick evaluation profile. Not a package asset: it installs only as a local test file. A task without a row has not "
             "run on it; each run's stage times and pass@1 are in its summary.txt. The code run (Xeon) predates the qwen2 GGUF "
             "export, so its q4_1 share is not measured; the toxicity run (EPYC with bf16) predates the toxicity words at p >= 0.9.", ""] + default_table(QWEN) + [""] + qwen_export_lines()
    lines += ["## Forget what you name (`revrel unlearn --target NAME --about A --keep B`)", "",
              "Neighbours in `--keep` were chosen before any run; the model may add one more. Shares are of sampled answers to "
              "held-out questions (4 per question) that name the entity asked about; the probes are the original model's own "
              "answers to held-out questions, its answers about the target split into the target's names and the rest (what it "
              "says about it). Fluency is the original's perplexity of the answers after their questions; after the target's "
              "question it finds any answer that is not about the target unlikely, so the target's answers are also scored as "
              "plain text (how they read), and every answer by its n-gram entropy, which reads no model (ROME's and RWKU's fluency: "
              "bits of its bigram and trigram frequencies, weighted 2/3 and 4/3; an answer that loops or stutters scores low; "
              "runs before it have '-'). `python benchmarks/run_default.py --target NAME --about A --keep B` runs one.", ""]
    lines += target_table(target_names()) + [""] + target_examples(target_names())
    lines += ["## Iteration: one round vs the paper's stop rule (toxicity, dev)", "",
              "The toxicity default with `release.rounds` 1 and 2 (rounds pace the budget: round k of n may spend budget * k / n; "
              "`release.stop_on_plateau` stops when a round's revealed relevance is no lower than the last one's), evaluated on the "
              "dev split (100 prompts x 4 samples, 400 probe texts per group).", ""] + iteration_table(ITERATION) + [""]
    lines += ner_person_table()
    lines += auto_table()
    lines += ["## Hand-set presets the budget rule replaced (commit a7ee769, for comparison)", "",
              "The same edits at strengths picked by hand on the default model's dev probe (and NER negation limited to layers "
              "15-29 by name): what the rule has to match without constants.", ""]
    lines += recipe_table(RECIPES) + [""]
    lines += sweep_table()
    lines += ["## Toxicity: each edit alone and in other orders (hand-set strengths)", ""] + recipe_table(ABLATIONS) + [""]
    lines += ["## Attacks (`revrel attack --run R --probe-only`)", "",
              "Share of the target probe change that each attack takes back (0: none, 1: all). `gguf-q4_1` is llama.cpp's "
              "nearest rounding, what a user of the exported model gets.", ""] + attack_table(DEFAULTS + QWEN + RECIPES + ABLATIONS) + [""]
    if ms:
        lines += ["## Methods at matched keep-side cost", "",
                  "Each method at the strength where its dev curve crossed a keep-side change of +0.05 nats/token, then scored on "
                  "the test probe: the target change there (interpolated), with the methods' own data: revrel's edits on Reveal's "
                  "self-generated forget set, the baselines on Reveal's set or on the task's real forget data. These rows were "
                  "measured by the matched bench before Release became a list of edits; its script is to be ported to the edit API.", "",
                  f"![Pareto, test]({LINK}/pareto_test.png)", ""]
        for m in ms:
            lines += matched_table(m) + [""]
    lines += perf_lines()
    lines += FINDINGS.splitlines()
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = build()
    if args.check:
        return 0 if DOC.read_text() == text else 1
    if matched():
        pareto_plot(matched())
    DOC.write_text(text)
    print(f"wrote {DOC} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
