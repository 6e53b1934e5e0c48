"""``revrel`` command line: unlearn, reveal, eval, report, bench, attack, tasks.

User mistakes are one line on stderr and exit code 2; Ctrl-C is one line and exit code 130, with
every finished round already checkpointed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from revrel.errors import RevrelError

log = logging.getLogger("revrel")


def _common(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    p.add_argument("--task", help="toxicity (see `revrel tasks`)")
    p.add_argument("--target", metavar="NAME", help='forget what you name, e.g. "William Shakespeare" (sets --task target)')
    p.add_argument("--about", help='with --target: a few words that say which one, e.g. "English playwright"')
    p.add_argument("--keep", help='with --target: neighbours to keep, comma-separated, e.g. "Charles Dickens, Jane Austen"')
    p.add_argument("--eval-file", help="with --target: your own texts about it (JSONL rows: text, or question + answer), also scored")
    p.add_argument("--model", help="smollm2-135m-instruct (embedded default), a model folder, a .gguf file or a hub id")
    p.add_argument("--out", required=out_required, help="output folder")
    p.add_argument("--config", help="YAML file with settings (default: the task's packaged recipe; alternatives in configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting, e.g. --set reveal.k=4")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", choices=["float32", "bfloat16"])
    p.add_argument("--trust-pickle", action="store_true", help="allow loading pickle (.bin) weights; they can run code")
    p.add_argument("-q", "--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="revrel", description="Reveal and Release: make a language model forget without forget data.")
    sub = ap.add_subparsers(dest="command", required=True)
    u = sub.add_parser("unlearn", help="reveal -> release rounds; writes model/, adapters/, forget.jsonl, report.json")
    _common(u)
    u.add_argument("--rounds", type=int, help="maximum Reveal/Release rounds")
    u.add_argument("--budget", type=float, help="keep-side cost the run may spend, nats/token (default: the task recipe's)")
    g = u.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from its last complete round")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    r = sub.add_parser("reveal", help="run Reveal alone and print the best instructions")
    _common(r)
    r.add_argument("--overwrite", action="store_true")
    e = sub.add_parser("eval", help="measure a model on a task's forget and utility metrics (with intervals and probes)")
    _common(e, out_required=False)
    e.add_argument("--reference", help="the original model, to show changes against it (default for a run's model: the run's own "
                                       "before-metrics when the eval settings match, else its original model)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON instead of the summary")
    rp = sub.add_parser("report", help="write report.md and PNG plots from finished runs")
    rp.add_argument("runs", nargs="+", help="run folders (each with report.json)")
    rp.add_argument("--out", help="folder for report.md and plots (default: the first run)")
    b = sub.add_parser("bench", help="run several methods side by side; one table + trade-off plot")
    b.add_argument("--task", required=True)
    b.add_argument("--methods", default="revrel,ga,graddiff,npo,simnpo,pem-negation")
    b.add_argument("--out", help="the folder for the methods' runs and the table (the matched-utility bench of "
                                                 "docs/results.md is a script of the source checkout, see docs/guide.md)")
    b.add_argument("--config")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--model")
    b.add_argument("-q", "--quiet", action="store_true")
    a = sub.add_parser("attack", help="quantization, relearning and prompt attacks on a finished run")
    a.add_argument("--run", required=True, help="run folder (with model/ and report.json)")
    a.add_argument("--attacks", default="int8,int4,gguf-q8_0,gguf-q4_1,gguf-q4_1-stochastic,gguf-q4_1-gptq,relearn,jailbreak,paraphrase,in-context")
    a.add_argument("--probe-only", action="store_true", help="score only the likelihood probe (fast; skips the sampled metrics and prompt attacks)")
    a.add_argument("--relearn-steps", type=int, default=8)
    a.add_argument("-q", "--quiet", action="store_true")
    x = sub.add_parser("export", help="write a model (e.g. a run's model/) as a quantized GGUF file for llama.cpp")
    x.add_argument("--model", required=True, help="a model folder, a run folder (its model/ is used), a .gguf file or the default's name")
    x.add_argument("--gguf", required=True, metavar="TYPE", help="f32 | f16 | q8_0 | q4_0 | q4_1 (the default model ships as q4_1)")
    x.add_argument("--out", required=True, help="the .gguf file to write")
    x.add_argument("--rounding", default="nearest", help="nearest (llama.cpp's) | stochastic | gptq (q4_1 only; both keep edits smaller "
                                                          "than half a grid step that nearest rounds away; gptq calibrates on a run's "
                                                          "own retain and forget text, so --model must be a run folder)")
    x.add_argument("--overwrite", action="store_true")
    x.add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("tasks", help="list tasks and their oracles")
    return ap


def _config(args):
    from revrel.config import load_config, parse_set

    over = parse_set(args.set)
    for key in ("task", "model", "out", "seed", "dtype"):
        if getattr(args, key, None) is not None:
            over[key] = getattr(args, key)
    if getattr(args, "rounds", None) is not None:
        over.setdefault("release", {})["rounds"] = args.rounds
    if getattr(args, "budget", None) is not None:
        over.setdefault("release", {})["budget"] = args.budget
    if getattr(args, "target", None):
        over["task"] = "target"
        over.setdefault("target", {})["name"] = args.target
    for key, value in (("about", getattr(args, "about", None)), ("keep", getattr(args, "keep", None)), ("eval_file", getattr(args, "eval_file", None))):
        if value:
            if over.get("task") != "target":
                raise RevrelError(f"--{key.replace('_', '-')} goes with --target NAME")
            over.setdefault("target", {})[key] = value
    return load_config(args.config, over)


def _print_table(rows: list[dict], cols: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    widths["instruction"] = min(widths.get("instruction", 0), 70)
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r[c])[: widths[c]].ljust(widths[c]) for c in cols))


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def cmd_unlearn(args) -> int:
    from revrel.commands.summary import text_summary
    from revrel.pipeline import unlearn

    cfg = _config(args)
    report = unlearn(cfg, resume=args.resume, overwrite=args.overwrite, trust_pickle=args.trust_pickle)
    title = (f"done: {cfg.task}, {report['method']}, {len(report['rounds'])} round(s), forget set {report['forget_size']} responses"
             f" -> {cfg.out}/")
    print(text_summary(report["before"], report["after"], title=title, seconds=report.get("seconds_this_invocation")))
    print(round_lines(report))
    return 0


def round_lines(report: dict) -> str:
    """One line per round (revealed relevance, forget-set size, the edits at the strengths the budget chose, the
    keep-side cost), the stop reason, and the time of each stage."""
    from revrel.commands.report import stage_seconds, strength_text

    lines = ["", "rounds:"]
    for e in report["rounds"]:
        rel, cost, budget = e.get("revealed_relevance"), e.get("keep_cost"), e.get("round_budget")
        lines.append(f"  {e['round']}: relevance {'-' if rel is None else f'{rel:.3f}'}, forget set {e['forget_size']}, "
                     f"{strength_text(e)}, keep-side cost {'-' if cost is None else f'{cost:+.3f}'}"
                     f"{'' if budget is None else f' of {budget:.3f}'} nats/token")
    if report.get("final_reveal"):
        lines.append(f"  after round {report['final_reveal']['after_round']}: relevance {report['final_reveal']['revealed_relevance']:.3f}")
    if report.get("stopped"):
        lines.append(f"  stopped: {report['stopped']}")
    if report.get("grid"):
        lines.append(f"  edits kept on the original's {report['grid']['format'].upper()} grid ({report['grid']['tensors']} tensors): "
                     "a GGUF export of that format keeps them")
    stages = stage_seconds(report)
    if stages:
        lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()))
    if (report.get("before") or {}).get("cached"):
        lines.append(f"  (the original's evaluation came from the cache: {report['before']['cached']['seconds_computed']:.0f} s saved; "
                     "REVREL_EVAL_CACHE=off recomputes it)")
    return "\n".join(lines)


def cmd_reveal(args) -> int:
    from revrel.io import atomic_write_json, write_jsonl
    from revrel.models.embedders import make_embedder
    from revrel.models.loading import load_model
    from revrel.reveal import reveal
    from revrel.tasks import get_task

    cfg = _config(args)
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise RevrelError(f"output folder {out} already exists; pass --overwrite to replace it")
    task = get_task(cfg.task, cfg.target)
    oracle = task.oracle(cfg.reveal.oracle)
    loaded = load_model(cfg.model, dtype=cfg.dtype, trust_pickle=args.trust_pickle)
    if task.prepare is not None:
        task.prepare(loaded, out, cfg.seed)
    from revrel.models.loading import inference_view

    res = reveal(inference_view(loaded.model, cfg.gen_dtype), loaded.tokenizer, task, oracle, make_embedder(cfg.reveal.embedder, loaded.model, loaded.tokenizer), cfg.reveal, seed=cfg.seed)
    write_jsonl(out / "forget.jsonl", res.forget)
    write_jsonl(out / "reveal.jsonl", res.evaluated)
    atomic_write_json(out / "reveal_summary.json", {"relevance": res.relevance, "generations": res.generations, "forget_size": len(res.forget),
                                                     "seconds": round(res.seconds, 1), "best": res.table(10)})
    _print_table(res.table(10), ["relevance", "diversity", "score", "kind", "instruction"])
    print(f"{res.generations} generations, mean relevance {res.relevance:.3f}, forget set {len(res.forget)} -> {out}/forget.jsonl")
    return 0


def _run_folder(model: str) -> Path | None:
    """The run folder when ``model`` is a finished run (``runs/x``) or its ``model/`` folder."""
    for cand in (Path(model), Path(model).parent):
        if (cand / "report.json").is_file() and (cand / "model").is_dir():
            return cand
    return None


def cmd_eval(args) -> int:
    import time

    from revrel.commands.summary import text_summary
    from revrel.io import atomic_write_json
    from revrel.models.loading import load_model
    from revrel.pipeline import evaluate_model, load_run_model, load_run_report
    from revrel.tasks import get_task

    t0 = time.time()
    cfg = _config(args)
    task = get_task(cfg.task, cfg.target)
    oracle = task.oracle(cfg.reveal.oracle)
    run = _run_folder(cfg.model)
    loaded = load_run_model(run) if run else load_model(cfg.model, dtype=cfg.dtype, trust_pickle=args.trust_pickle)
    if task.prepare is not None:  # a run's cached profile; for a plain model, built from it (in --out, else a temp folder)
        import tempfile

        task.prepare(loaded, run or Path(args.out or tempfile.mkdtemp(prefix="revrel-target-")), cfg.seed)
    before, reference = None, None
    ref_spec = args.reference
    if run and not ref_spec:
        rep = load_run_report(run)
        stored = rep.get("before", {})
        same = rep.get("task") == cfg.task and stored.get("eval", {}) == {**stored.get("eval", {}), **_eval_settings(task, cfg)}
        if same and stored.get("probe_items") is not None:
            before = stored
        else:
            ref_spec = rep.get("model")
    if ref_spec:
        reference = load_model(ref_spec, dtype=cfg.dtype, trust_pickle=args.trust_pickle)
        before = evaluate_model(reference, task, oracle, cfg)
    metrics = evaluate_model(loaded, task, oracle, cfg, reference=reference.model if reference else None,
                             reference_probe=(before or {}).get("probe_items"))
    metrics.update(task=cfg.task, model=cfg.model, reference=ref_spec or (str(run) + " (stored before-metrics)" if before else None))
    if args.out:
        atomic_write_json(Path(args.out) / "eval.json" if not args.out.endswith(".json") else args.out, {**metrics, "before": before})
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("examples", "answers", "probe_items")}, indent=2))
    else:
        title = f"eval: {cfg.task}, {cfg.model}" + (f" vs {metrics['reference']}" if before else "")
        print(text_summary(before, metrics, title=title, seconds=time.time() - t0) if before else text_summary(metrics, title=title,
                                                                                                              seconds=time.time() - t0))
    return 0


def _eval_settings(task, cfg) -> dict:
    ecfg = task.eval_config(cfg.eval)
    return {k: getattr(ecfg, k) for k in ("profile", "split", "n_prompts", "samples", "max_new_tokens", "n_math", "probe_items")}


def cmd_report(args) -> int:
    from revrel.commands.report import write_report

    print(f"wrote {write_report(args.runs, args.out)}")
    return 0


def cmd_bench(args) -> int:
    from revrel.commands.bench import bench

    if not args.out:
        raise RevrelError("revrel bench needs --out DIR (the folder for the methods' runs and the table)")
    extra = [x for kv in args.set for x in ("--set", kv)] + (["--config", args.config] if args.config else [])
    extra += ["--model", args.model] if args.model else []
    path = bench(args.task, [m.strip() for m in args.methods.split(",") if m.strip()], args.out, extra)
    print(path.read_text())
    return 0


def cmd_attack(args) -> int:
    from revrel.commands.attacks import attack_run

    res = attack_run(args.run, relearn_steps=args.relearn_steps, attacks=tuple(a.strip() for a in args.attacks.split(",") if a.strip()),
                     probe_only=args.probe_only)
    print(json.dumps(res, indent=1))
    return 0


def cmd_export(args) -> int:
    from pathlib import Path

    from revrel.models.gguf_export import check_format, export_gguf
    from revrel.models.loading import load_model

    check_format(args.gguf, args.rounding)  # before loading anything
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise RevrelError(f"{out} exists; pass --overwrite to replace it")
    spec = run = Path(args.model)
    if (spec / "report.json").is_file() and (spec / "model").is_dir():
        spec = spec / "model"
    calib = None
    if args.rounding == "gptq":
        from revrel.models.gptq_q4_1 import run_calibration_texts

        calib = run_calibration_texts(run)  # before the slow load: a folder without them fails now
    loaded = load_model(str(spec))
    info = export_gguf(loaded.model, loaded.tokenizer, out, args.gguf, rounding=args.rounding, calibration=calib)
    print(f"wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, {args.gguf}, {args.rounding} rounding; tensors: "
          + ", ".join(f"{n} {k}" for k, n in sorted(info["tensor_types"].items())) + ")")
    return 0


def cmd_tasks(args) -> int:
    from revrel.tasks import TASKS, get_task

    for name in sorted(TASKS):
        t = get_task(name)  # the target task without a name: its description only
        print(f"{name:10s} {t.description}  (oracles: {', '.join(t.oracles)}; default {t.default_oracle})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if getattr(args, "quiet", False):
        from revrel.progress import set_quiet

        set_quiet(True)
    try:
        return {"unlearn": cmd_unlearn, "reveal": cmd_reveal, "eval": cmd_eval, "report": cmd_report, "bench": cmd_bench, "attack": cmd_attack, "export": cmd_export, "tasks": cmd_tasks}[args.command](args)
    except RevrelError as exc:
        print(f"revrel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("revrel: interrupted; finished rounds are saved, continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
