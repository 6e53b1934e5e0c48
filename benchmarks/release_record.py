"""Record one round's Reveal output once, so Release settings can be swept without generating again.

Runs, on the original model and with a config's settings, what round 1 of ``revrel unlearn`` runs
before training: the self-generated retain set and retain probe, the candidate pool, and Reveal
(its forget set). Also scores the original model on the task's dev likelihood probe, so a sweep
compares against it without rescoring. ``benchmarks/release_sweep.py`` reads the folder.

    python benchmarks/release_record.py --task code --config src/revrel/recipes/code.yaml --out benchmarks/results/release_rec_code
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from revrel.config import load_config, parse_set
from revrel.io import write_jsonl
from revrel.metrics.probes import items_to_json, summarize
from revrel.models.embedders import make_embedder
from revrel.models.loading import load_model
from revrel.pipeline import probe_items
from revrel.release.checkpoint import RunDir
from revrel.reveal.optimize import build_candidates, reveal
from revrel.rounds import Context, self_generated_keep, self_generated_retain
from revrel.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", required=True)
    ap.add_argument("--real", type=int, metavar="N", help="with --like REC: a record whose forget set is N rows of the task's REAL "
                                                          "forget data (the pem-negation baseline's input), the keep side copied from REC")
    ap.add_argument("--like", help="the self-generated record to copy the keep side and dev probe from (with --real)")
    ap.add_argument("--keep-texts", type=int, metavar="N", help="only add N extra self-generated keep-side texts (keep.jsonl) to the "
                                                                 "record --out, what a run with release.keep_texts=N generates")
    args = ap.parse_args()
    if args.keep_texts:
        keep_texts_record(Path(args.out), args.keep_texts)
        return
    if args.real:
        if not args.like:
            raise SystemExit("--real needs --like REC (the record whose keep side and dev probe to copy)")
        real_record(Path(args.like), Path(args.out), args.real)
        return
    over = parse_set(args.set)
    over.update(task=args.task, out=args.out)
    over.setdefault("eval", {})["split"] = "dev"  # sweeps tune: they never see test
    cfg = load_config(args.config, over)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ctx = reveal_context(cfg, out)
    retain, probe = self_generated_retain(ctx)
    if cfg.release.keep_texts:  # what a run generates for pruning's and suppression's keep side (release.keep_texts)
        write_jsonl(out / "keep.jsonl", self_generated_keep(ctx, cfg.release.keep_texts))
    t_retain = time.time()
    rv = reveal_round1(ctx, out)
    t_reveal = time.time()
    dev = dev_probe_fields(ctx.loaded, ctx.task, cfg)
    write_jsonl(out / "retain.jsonl", retain)
    write_jsonl(out / "probe.jsonl", probe)
    (out / "record.json").write_text(json.dumps({
        "task": cfg.task, "model": cfg.model, "forget_size": len(rv.forget), "retain_size": len(retain), "probe_size": len(probe),
        "revealed_relevance": rv.relevance, "generations": rv.generations,
        "forget_relevance": sum(r["relevance"] for r in rv.forget) / max(len(rv.forget), 1),
        "seconds": {"retain": round(t_retain - t0, 1), "reveal": round(t_reveal - t_retain, 1), "probe": round(time.time() - t_reveal, 1)},
        **dev,
    }, indent=1))
    print(f"recorded {len(rv.forget)} forget rows (relevance {rv.relevance:.3f}), {len(retain)} retain rows -> {out}/ "
          f"in {time.time() - t0:.0f} s")


def reveal_context(cfg, out: Path) -> Context:
    """The original model with the task's oracle and Reveal's embedder, as round 1 of ``revrel unlearn`` has them."""
    task = get_task(cfg.task)
    loaded = load_model(cfg.model, dtype=cfg.dtype)
    ctx = Context(loaded=loaded, task=task, oracle=task.oracle(cfg.reveal.oracle), embed=None, cfg=cfg, run=RunDir(out))
    ctx.embed = make_embedder(cfg.reveal.embedder, loaded.model, loaded.tokenizer)
    return ctx


def reveal_round1(ctx: Context, out: Path):
    """Round 1's Reveal (candidates, then the search); writes its forget set, its scored pulls and the config."""
    cfg = ctx.cfg
    cands = build_candidates(ctx.gen_model(), ctx.tok, ctx.task, cfg.reveal, cfg.seed)
    rv = reveal(ctx.gen_model(), ctx.tok, ctx.task, ctx.oracle, ctx.embed, cfg.reveal, seed=cfg.seed, round_=1, candidates=cands)
    write_jsonl(out / "forget.jsonl", rv.forget)
    write_jsonl(out / "reveal.jsonl", rv.evaluated)
    (out / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.to_dict().items() if k not in ("release", "baseline")}, sort_keys=False))
    return rv


def dev_probe_fields(loaded, task, cfg) -> dict:
    """The original model on the task's dev probe: the summary, the per-text sums a sweep pairs against, and its size."""
    ecfg = task.eval_config(cfg.eval)
    prb, items = probe_items(loaded.model, loaded.tokenizer, task, ecfg)
    return {"dev_probe": summarize(items, prb), "dev_probe_items": items_to_json(items), "eval": {"split": ecfg.split, "probe_items": ecfg.probe_items}}


def real_record(like: Path, out: Path, n: int) -> None:
    """Same keep side and dev probe as ``like``, forget set = real target data: revrel's Release and the
    pem-negation baseline then differ only in where the forget data came from."""
    record = copy_keep_side(like, out)
    rows = [dict(r, relevance=1.0) for r in get_task(record["task"]).real_forget(n)]
    write_jsonl(out / "forget.jsonl", rows)
    record.update(forget_size=len(rows), forget_relevance=1.0, forget_source=f"real ({len(rows)} rows of the task's real forget data)",
                  seconds={}, copied_from=str(like), revealed_relevance=None, generations=0)
    (out / "record.json").write_text(json.dumps(record, indent=1))
    print(f"real-data record: {len(rows)} rows -> {out}/")


def copy_keep_side(like: Path, out: Path) -> dict:
    """The keep side, dev probe and cached retain PEMs of ``like`` into ``out``; returns like's record."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "retain.jsonl", "probe.jsonl"):
        shutil.copy2(like / name, out / name)
    if (like / "retain_pems").is_dir() and not (out / "retain_pems").exists():
        shutil.copytree(like / "retain_pems", out / "retain_pems")
    return json.loads((like / "record.json").read_text())


def keep_texts_record(out: Path, n: int) -> None:
    """keep.jsonl for release.keep_texts: ``n`` answers of the original model to the record's keep instructions,
    generated as a run with this record's config and seed would (``self_generated_keep``)."""
    ctx = reveal_context(load_config(out / "config.yaml", {}), out)
    t0 = time.time()
    rows = self_generated_keep(ctx, n)
    write_jsonl(out / "keep.jsonl", rows)
    record = json.loads((out / "record.json").read_text())
    record.setdefault("seconds", {})["keep_texts"] = round(time.time() - t0, 1)
    record["keep_texts_size"] = len(rows)
    (out / "record.json").write_text(json.dumps(record, indent=1))
    print(f"{len(rows)} extra keep-side texts -> {out}/keep.jsonl")


if __name__ == "__main__":
    main()
