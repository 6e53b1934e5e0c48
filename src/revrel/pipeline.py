"""``unlearn``: the whole method end to end, one function per stage, resumable.

load model -> evaluate before -> (reveal -> release) rounds -> save model, adapters, forget set ->
evaluate after -> report.json
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import yaml

from revrel.config import RunConfig, load_config
from revrel.errors import RevrelError
from revrel.io import atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from revrel.models.embedders import make_embedder
from revrel.models.loading import LoadedModel, inference_view, load_model, save_model
from revrel.release.checkpoint import RunDir
from revrel.rounds import Context, run_baseline, run_rounds
from revrel.tasks import get_task

log = logging.getLogger("revrel")


def probe_items(model, tokenizer, task, ecfg):
    """(probe, per-text NLL sums) of a model on the task's likelihood probe, or (None, None) when off.

    Scored on the float32 master weights, not the bf16 generation copy: bf16 rounding of the weights
    would blur the small changes a negation makes, and the probe exists to see them.
    """
    from revrel.metrics import probes

    if not ecfg.probes or task.probe is None:
        return None, None
    probe = task.probe(ecfg.split, ecfg.probe_items, tokenizer, ecfg.dataset)
    return probe, probes.score(model, tokenizer, probe, batch_size=ecfg.batch_size)


def round_prober(task, cfg: RunConfig, tokenizer, before_items: dict | None):
    """``eval.probe_rounds``: a function that scores a model on the task's probe and returns the paired
    target / utility change against the original (compact, for the report's per-round table)."""
    from revrel.metrics import probes

    if before_items is None:
        raise RevrelError("eval.probe_rounds needs the likelihood probe (eval.probes=true and a task that has one)")
    ecfg = task.eval_config(cfg.eval)
    probe = task.probe(ecfg.split, ecfg.probe_items, tokenizer, ecfg.dataset)
    reference = probes.items_from_json(before_items)

    def score(model) -> dict:
        ch = probes.compare(reference, probes.score(model, tokenizer, probe, batch_size=ecfg.batch_size), probe)
        return {k: ch[k] for k in ("target", "utility", "selectivity")} | {"groups": ch["groups"]}

    return score


def evaluate_model(loaded: LoadedModel, task, oracle, cfg: RunConfig, reference=None, reference_probe: dict | None = None) -> dict:
    """The task's metrics (with intervals) and likelihood probes; ``reference`` is the original model,
    under which the fluency of the generations is scored, and ``reference_probe`` its per-text probe
    sums (``probe_items`` of its own evaluation), against which the probe changes are paired."""
    from revrel.metrics import probes

    t0 = time.time()
    ecfg = task.eval_config(cfg.eval)
    ref = inference_view(reference, cfg.gen_dtype) if reference is not None else None
    metrics = task.evaluate(inference_view(loaded.model, cfg.gen_dtype), loaded.tokenizer, ecfg, oracle, seed=cfg.seed, reference=ref)
    metrics["seconds_generation"] = round(time.time() - t0, 1)
    probe, items = probe_items(loaded.model, loaded.tokenizer, task, ecfg)
    if probe is not None:
        metrics["probes"] = probes.summarize(items, probe)
        metrics["probe_target_nll"], metrics["probe_utility_nll"] = metrics["probes"]["target"]["nll"], metrics["probes"]["utility"]["nll"]
        if reference_probe is not None:
            metrics["probes"]["change"] = probes.compare(probes.items_from_json(reference_probe), items, probe)
        metrics["probe_items"] = probes.items_to_json(items)
    metrics["eval"] = {k: getattr(ecfg, k) for k in ("profile", "split", "n_prompts", "samples", "max_new_tokens", "n_math", "probe_items")}
    metrics["seconds"] = round(time.time() - t0, 1)
    return metrics


def evaluate_original(loaded: LoadedModel, task, oracle, cfg: RunConfig) -> dict:
    """:func:`evaluate_model` of the original model, from the evaluation cache when this exact evaluation (same
    weights, code, task, target, eval settings and seed) was done before (:mod:`revrel.evalcache`)."""
    import dataclasses

    from revrel import evalcache

    t0 = time.time()
    settings = {"task": cfg.task, "target": dataclasses.asdict(cfg.target), "eval": dataclasses.asdict(cfg.eval), "seed": cfg.seed,
                "dtype": cfg.dtype, "gen_dtype": cfg.gen_dtype, "gen_backend": cfg.gen_backend, "oracle": cfg.reveal.oracle}
    if cfg.target.eval_file:  # the user's file is read by the evaluation: its content, not its name, is part of the key
        settings["eval_file"] = evalcache.file_fingerprint(cfg.target.eval_file)
    k = evalcache.key(loaded.model, loaded.tokenizer, settings) if evalcache.cache_root() is not None else None
    hit = evalcache.load(k) if k else None
    if hit is not None:
        log.info("the original model's evaluation: from the cache (%s)", k)
        return hit | {"cached": {"key": k, "seconds_computed": hit.get("seconds")}, "seconds": round(time.time() - t0, 1)}
    log.info("evaluating the original model")
    metrics = evaluate_model(loaded, task, oracle, cfg)
    if k:
        evalcache.store(k, metrics)
    return metrics


def unlearn(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, loaded: LoadedModel | None = None,
            trust_pickle: bool = False) -> dict:
    """Run Reveal and Release as configured; returns the report (also written to ``out/report.json``)."""
    t_start = time.time()
    run = RunDir(cfg.out)
    saved_cfg = run.root / "config.yaml"
    if resume and saved_cfg.is_file():
        cfg = load_config(saved_cfg)  # a resumed run continues under the config it started with
    task = get_task(cfg.task, cfg.target)  # validate cheap things before touching the disk
    if cfg.method == "revrel":
        from revrel.release.edit import parse_edits

        parse_edits(cfg.release.edits)
    progress = run.prepare(resume=resume, overwrite=overwrite) or {}
    atomic_write_text(saved_cfg, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    oracle = task.oracle(cfg.reveal.oracle)
    loaded = loaded or load_model(cfg.model, dtype=cfg.dtype, trust_pickle=trust_pickle)
    if task.prepare is not None:  # from the original weights (or the run folder's cache), before a resumed state is loaded
        task.prepare(loaded, run.root, cfg.seed)
    grid = None
    if cfg.method == "revrel":  # the original's Q4_1 grid (a model loaded from a Q4_1 GGUF), before a resumed state is loaded
        from revrel.release.grid import Q41Grid

        grid = Q41Grid.of(loaded.model)
    if progress.get("state"):
        run.load_state(loaded.model, progress["state"])
    embed = make_embedder(cfg.reveal.embedder, loaded.model, loaded.tokenizer)
    if "before" not in progress:
        if progress.get("completed_rounds"):
            raise RevrelError(f"{run.progress} has rounds but no baseline metrics; rerun with --overwrite")
        progress["before"] = evaluate_original(loaded, task, oracle, cfg)
        run.save_progress(progress)
    ctx = Context(loaded=loaded, task=task, oracle=oracle, embed=embed, cfg=cfg, run=run, grid=grid,
                  after_round=round_prober(task, cfg, loaded.tokenizer, progress["before"].get("probe_items")) if cfg.eval.probe_rounds else None)
    progress = run_rounds(ctx, progress) if cfg.method == "revrel" else run_baseline(ctx, progress)
    forget = [row for k in range(1, progress["completed_rounds"] + 1) if (run.round_dir(k) / "forget.jsonl").is_file()
              for row in read_jsonl(run.round_dir(k) / "forget.jsonl", allow_empty=True)]
    write_jsonl(run.root / "forget.jsonl", forget)
    save_model(ctx.loaded, run.model)
    log.info("evaluating the unlearned model")
    original = load_model(cfg.model, dtype=cfg.dtype, trust_pickle=trust_pickle).model
    after = evaluate_model(ctx.loaded, task, oracle, cfg, reference=original, reference_probe=progress["before"].get("probe_items"))
    report = {
        "task": cfg.task, "model": cfg.model, "method": cfg.method, "seed": cfg.seed,
        "before": progress["before"], "after": after, "rounds": progress["rounds"], "stopped": progress.get("stopped"),
        "final_reveal": progress.get("final_reveal"), "retain_pem_train": progress.get("retain_pem_train"),
        "forget_size": len(forget), "config": cfg.to_dict(), "grid": grid.info() if grid is not None else None,
        "seconds_keep_side": progress.get("seconds_keep_side"), "seconds_candidates": progress.get("seconds_candidates"),
        "artifacts": {"model": "model/", "adapters": "adapters/", "forget": "forget.jsonl", "config": "config.yaml"},
        "seconds_this_invocation": round(time.time() - t_start, 1),
    }
    atomic_write_json(run.report, report)
    return report


def load_run_model(folder: str | Path, dtype: str = "float32") -> LoadedModel:
    """The unlearned model of a finished run (``model/``), after checking that the folder is one."""
    folder = Path(folder)
    load_run_report(folder)
    return load_model(str(folder / "model"), dtype=dtype)


def load_run_report(folder: str | Path) -> dict:
    import json

    path = Path(folder) / "report.json"
    if not path.is_file():
        raise RevrelError(f"{path} not found; is {folder} a finished revrel run?")
    return json.loads(path.read_text())
