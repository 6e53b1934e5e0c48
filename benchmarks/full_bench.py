"""The full matched-utility bench of one task, as one resumable command (``revrel bench --task T --preset full``).

    python benchmarks/full_bench.py --task code            # or: revrel bench --task code --preset full
    python benchmarks/full_bench.py --task code --dry-run  # what is done and what would run

It chains the benchmark scripts, each of which skips the work it finds done, so a rerun after an
interruption, or on the committed results, only does what is missing:

1. ``release_record.py``: round 1's Reveal on the original model (forget set, keep side, dev probe), and
   a second record with the same keep side whose forget set is the task's real data (as many rows), and
   any Reveal variant the task declares (Reveal again, with other seeds or oracle, on the same keep side);
2. ``release_sweep.py``: negation-strength curves on the dev probe, for one-shot pem-negation (defaults)
   on both records and for revrel's Release at its best dev settings on the self-generated ones;
3. ``baseline_sweep.py``: NPO and GradDiff (with their retain term) on the real-data record, by steps;
4. ``quick_row.py``: the README's quick run (its defaults), timed, as the table's "revrel quick" row;
5. ``matched_test.py``: every method rebuilt at the dev strengths around +0.05 nats/token of utility
   change and scored on the TEST probe, its sampled metrics there, and model attacks on revrel and NPO;
6. ``build_results.py``: docs/results.md.

The sweeps below are the settings each method is compared at (chosen on dev; FINDINGS.md says how):
a step list is data, so a new setting or method is one more line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from revrel.io import read_jsonl

HERE = Path(__file__).resolve().parent
RES = HERE / "results"
ATTACKS = "int8,gguf-q4_1,relearn"
ATTACKED = "revrel_release_reveal_s_data,revrel_release_pruning_reveal_s_data,npo_real_data"  # matched_test.py's slugs: revrel's Release (PEM, pruning), NPO


@dataclass(frozen=True)
class Sweep:
    """One curve on a record (``rec``: '' the self-generated one, 'real' the real-data one, else a Reveal variant's
    name): fixed ``--set`` overrides (their order is the settings' identity in sweep.jsonl), and the strengths:
    lambdas for a negation, optimizer steps for a gradient baseline (``method``)."""

    rec: str
    sets: tuple[str, ...]
    strengths: tuple[float, ...]
    method: str = ""

    def settings(self) -> dict:
        return ({"method": self.method} if self.method else {}) | {kv.split("=", 1)[0]: kv.split("=", 1)[1] for kv in self.sets}


@dataclass(frozen=True)
class Plan:
    sweeps: tuple[Sweep, ...]
    sampled: int  # test prompts for the sampled metrics at each method's matched point
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, --set): Reveal run again on the self record's keep side


# NER: Reveal asked for news sentences (a person beside an organisation and a place, the probe's form), scored
# by the oracle that counts sentences naming a person with a verb. It ties with Reveal's lists of names on dev.
NEWS_SEEDS = [
    "Write five one-line Reuters-style news items, each naming a person, the organisation they lead and a city.",
    "Write a short sports news wire saying which named players scored for which clubs, and in which city.",
    "Write a news sentence quoting a named government minister of a named country about a named company.",
    "Write three news sentences, each naming a businessman, his company and the city where he spoke.",
]


PEM = (0.5, 1.0, 2.0, 4.0)
PRUNE = ("release.span_loss=true", "release.negate=false")  # release.prune: strengths are the shares of MLP neurons pruned
SHARES = (0.0025, 0.005, 0.01, 0.02, 0.04)
WORD_PRUNE = ("release.span_loss=true", "release.span_unit=word", "release.negate=false")  # toxicity: neurons of the profane words
PLANS: dict[str, Plan] = {
    "code": Plan(sampled=32, sweeps=(
        Sweep("", (), (0.5, 1.0, 2.0, 4.0, 8.0)),
        Sweep("", ("release.span_loss=true", r"release.negate_only=layers\.2[0-9]\.mlp", "release.ext_sub=both"), (8.0, 12.0, 16.0)),
        Sweep("", PRUNE, SHARES),
        Sweep("real", (), (0.25, 0.5, 1.0, 2.0, 4.0)),
        Sweep("real", (), (4, 8, 12, 16), "npo"),
        Sweep("real", (), (4, 8, 16), "graddiff"),
    )),
    "toxicity": Plan(sampled=100, variants=(("fs80", ("reveal.forget_samples=80",)),), sweeps=(
        Sweep("", (), (1.0, 2.0, 4.0, 8.0)),
        Sweep("", ("release.span_loss=true", "release.negate_only=mlp"), (2.0, 4.0, 8.0, 16.0)),
        Sweep("", ("release.span_loss=true", "release.span_contrast=4"), (1.0, 2.0, 4.0, 8.0, 16.0)),
        Sweep("", ("release.span_loss=true", "release.span_unit=word"), (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)),
        Sweep("", ("release.span_loss=true", "release.span_unit=word", "release.span_contrast=8"), (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)),
        Sweep("", PRUNE, SHARES),
        Sweep("", WORD_PRUNE, (0.0025, 0.005, 0.01, 0.02)),
        Sweep("", (*WORD_PRUNE, "release.prune_keep=keep_spans"), (0.0015, 0.0025, 0.005, 0.01, 0.02)),
        Sweep("", (*WORD_PRUNE, "release.prune_keep=both"), (0.0025, 0.005)),
        Sweep("", (*WORD_PRUNE, "release.prune_keep=both", "release.suppress=50"), (4.0, 8.0, 16.0)),
        Sweep("", (*WORD_PRUNE, "release.prune_keep=both", "release.suppress=100"), (4.0, 8.0, 16.0)),
        Sweep("fs80", (*WORD_PRUNE, "release.prune_keep=both", "release.suppress=50"), (8.0, 16.0)),
        Sweep("fs80", (*WORD_PRUNE, "release.prune_keep=both", "release.suppress=100"), (8.0, 16.0)),
        Sweep("real", ("release.span_loss=false",), PEM),
        Sweep("real", ("release.span_loss=true",), PEM),
        Sweep("real", (), (8, 16, 32), "npo"),
        Sweep("real", (), (8, 16, 32), "graddiff"),
    )),
    "ner": Plan(sampled=100, variants=(("news", ("reveal.oracle=spacy-person-prose", f"reveal.extra_instructions={json.dumps(NEWS_SEEDS)}")),
                                       ("big160", ("reveal.forget_samples=160",))),
                sweeps=(
        Sweep("", (), (1.0, 2.0, 4.0, 8.0)),
        Sweep("", ("release.span_loss=true", "release.ext_sub=both"), (0.25, 0.5, 1.0, 2.0)),
        Sweep("", ("release.span_loss=true", "release.span_contrast=4"), (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0)),
        Sweep("", ("release.span_loss=true", "release.span_contrast=8"), (2.0, 2.5, 3.0, 4.0)),
        Sweep("", (*PRUNE, "release.prune_keep=both"), (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02)),
        Sweep("", (*PRUNE, "release.prune_keep=both", "release.suppress=50"), (4.0, 8.0, 16.0)),
        Sweep("big160", ("release.span_loss=true", "release.span_contrast=8", "release.epochs=1"), (2.0, 2.25, 2.5, 3.0)),
        Sweep("big160", ("release.span_loss=true", "release.span_contrast=8", "release.epochs=1",
                         r"release.negate_only=layers\.(1[5-9]|2\d)\."), (2.25, 2.5, 3.0, 3.5, 4.0)),
        *(Sweep("big160", ("release.span_loss=true", "release.span_contrast=8", "release.epochs=1",
                           r"release.negate_only=layers\.(1[5-9]|2\d)\.", f"release.negate_rank={k}"),
                (2.5, 3.0, 3.5, 4.0, 5.0) if k > 0 else (2.5, 3.5, 5.0)) for k in (1, 2, -1, -2)),
        Sweep("news", ("release.span_loss=true",), (0.25, 0.5, 1.0, 2.0)),
        Sweep("news", ("release.span_loss=true", "release.ext_sub=both"), (0.25, 0.5, 1.0, 2.0)),
        Sweep("real", ("release.span_loss=false",), (0.25, 0.5, 1.0, 2.0)),
        Sweep("real", ("release.span_loss=true",), (0.25, 0.5, 1.0, 2.0)),
        Sweep("real", (), (2, 4, 8, 16), "npo"),
        Sweep("real", (), (2, 4, 8, 16), "graddiff"),
    )),
}


def record(task: str, name: str = "") -> Path:
    """``release_rec_T`` (self-generated), ``release_rec_T_real`` or a Reveal variant's ``release_rec_T_<name>``."""
    return RES / (f"release_rec_{task}_{name}" if name else f"release_rec_{task}")


def sweep_missing(rec: Path, s: Sweep) -> list[float]:
    """The strengths of ``s`` that ``rec``'s sweep.jsonl does not hold yet (the scripts' own resume rule)."""
    f = rec / "sweep.jsonl"
    rows = read_jsonl(f, allow_empty=True) if f.is_file() else []
    have = {float(r["lambda"]) for r in rows if json.dumps(r["settings"]) == json.dumps(s.settings())}
    return [x for x in s.strengths if float(x) not in have]


def steps(task: str, sampled: int | None = None, attacks: str = ATTACKS) -> list[tuple[str, list[str], bool]]:
    """Each step as (what, argv, done); a done step is skipped. Matched bench and docs always run: they skip
    their own finished parts and only rewrite the summaries."""
    plan = PLANS[task]
    own, real = record(task), record(task, "real")
    py = [sys.executable]
    out: list[tuple[str, list[str], bool]] = []
    out.append(("Reveal record (self-generated forget set)",
                py + [str(HERE / "release_record.py"), "--task", task, "--config", str(HERE.parent / "configs" / f"{task}.yaml"),
                      "--out", str(own)], (own / "record.json").is_file()))
    n_real = json.loads((own / "record.json").read_text())["forget_size"] if (own / "record.json").is_file() else "SIZE-OF-REVEAL"
    out.append(("real-data record (same keep side and probe)",
                py + [str(HERE / "release_record.py"), "--task", task, "--real", str(n_real), "--like", str(own), "--out", str(real)],
                (real / "record.json").is_file()))
    for name, sets in plan.variants:
        var = record(task, name)
        out.append((f"Reveal variant '{name}' (same keep side and probe)",
                    py + [str(HERE / "release_record.py"), "--task", task, "--like", str(own), "--out", str(var)]
                    + [x for kv in sets for x in ("--set", kv)], (var / "record.json").is_file()))
    for s in plan.sweeps:
        rec = record(task, s.rec)
        if s.method:
            argv = py + [str(HERE / "baseline_sweep.py"), "--rec", str(rec), "--method", s.method, "--steps", *map(str, s.strengths)]
        else:
            argv = py + [str(HERE / "release_sweep.py"), "--rec", str(rec), "--lambdas", *(f"{x:g}" for x in s.strengths)]
        argv += [x for kv in s.sets for x in ("--set", kv)]
        what = f"{s.method or 'negation'} sweep on {rec.name} {s.settings() or '(defaults)'}"
        out.append((what, argv, (rec / "record.json").is_file() and not sweep_missing(rec, s)))
    out.append(("revrel quick (the README's defaults, timed)", py + [str(HERE / "quick_row.py"), "--task", task],
                (RES / f"quick_{task}" / "report.json").is_file()))
    n = plan.sampled if sampled is None else sampled
    out.append(("matched test bench (+ sampled metrics, attacks)",
                py + [str(HERE / "matched_test.py"), "--task", task, "--sampled", str(n)]
                + (["--attacks", attacks, "--attack-methods", ATTACKED] if attacks else []), False))
    out.append(("docs/results.md", py + [str(HERE / "build_results.py")], False))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=sorted(PLANS))
    ap.add_argument("--sampled", type=int, help="test prompts for the sampled metrics (default: the task's plan)")
    ap.add_argument("--attacks", default=ATTACKS, help="model attacks at the matched point ('' for none)")
    ap.add_argument("--dry-run", action="store_true", help="only list the steps, marking those already done")
    args = ap.parse_args(argv)
    n = len(steps(args.task, args.sampled, args.attacks))
    for i in range(1, n + 1):
        # planned again before each step: a step's argv can depend on what the steps before it wrote (the real-data
        # record is as large as the Reveal record's forget set)
        what, cmd, done = steps(args.task, args.sampled, args.attacks)[i - 1]
        print(f"[{i}/{n}] {'done' if done else 'run':4} {what}", flush=True)
        if args.dry_run:
            print("       " + " ".join(cmd[1:]), flush=True)
            continue
        if done:
            continue
        rc = subprocess.call(cmd, cwd=HERE.parent)
        if rc:
            print(f"full bench: step {i} ({what}) failed with exit {rc}; rerun the same command to resume", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
