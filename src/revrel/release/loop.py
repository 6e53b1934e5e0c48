"""The Reveal-and-Release loop, with per-round checkpoints and ``--resume``.

round k: Reveal on the current model -> stop if revealed relevance < target -> train a forget PEM
(orthogonal to the retain PEM and earlier forget PEMs) -> negate it into the weights, halving
lambda while the retain-probe perplexity ratio exceeds the utility budget -> checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from revrel import faults
from revrel.config import RunConfig
from revrel.io import read_jsonl, write_jsonl
from revrel.models.generation import GenerationConfig, generate, perplexity, sequence_logprobs
from revrel.models.loading import inference_view
from revrel.progress import progress_bar
from revrel.release.checkpoint import RunDir, load_adapter_A, save_adapter
from revrel.release.negation import negate_into_base, negated_adapters, negation_filters, save_negated_adapter
from revrel.release.orthogonality import lora_A, orthogonality_loss, stack_previous
from revrel.release.pem import train_pem, train_pem_restarts
from revrel.reveal.candidates import Candidate
from revrel.reveal.optimize import build_candidates, reveal

log = logging.getLogger("revrel")


@dataclass
class Context:
    """What every round needs: model, task pieces, config and the run folder."""

    loaded: object
    task: object
    oracle: object
    embed: object
    cfg: RunConfig
    run: RunDir
    _vllm: object = None
    # evaluation hook: called with the model after each kept round, its dict stored as the round's
    # ``eval_probe``. For reports only (real target text); no decision of the method reads it.
    after_round: Callable[[object], dict] | None = None
    # evaluation hook of the gradient baselines: called as ``on_step(step, model)`` after each optimizer
    # step, so a strength sweep scores every checkpoint of one training run instead of retraining per point
    on_step: Callable[[int, object], None] | None = None

    @property
    def model(self):
        return self.loaded.model

    @property
    def tok(self):
        return self.loaded.tokenizer

    def gen_model(self):
        """The model to generate with: a synced bf16 copy where that is faster (see inference_view), or
        with ``gen_backend: vllm`` a vLLM engine on the original weights + the kept rounds as one LoRA."""
        view = inference_view(self.loaded.model, self.cfg.gen_dtype)
        if self.cfg.gen_backend != "vllm":
            return view
        from revrel.models.vllm_backend import VLLMView, combine_negated

        negs = negated_adapters(self.run.adapters)
        adapter = combine_negated(negs, self.run.adapters / f"vllm_combined_{len(negs)}") if negs else None
        if self._vllm is None:
            s = self.cfg.release
            self._vllm = VLLMView(view, self.loaded.source, adapter, s.rank * s.pem_ensemble * s.rounds)
        self._vllm.hf_model = view
        self._vllm.set_adapter(adapter)
        return self._vllm


def _keep_instructions(ctx: Context) -> tuple[list[str], list[str]]:
    """(probe instructions, training instructions) of the self-generated retain side: the task's keep instructions
    with release.retain_from=task, else generic benign chat; the first quarter (at least 4) are the self-probe's."""
    instr = ctx.task.retain_instructions
    if ctx.cfg.release.retain_from == "task":
        if not ctx.task.keep_instructions:
            from revrel.errors import RevrelError

            raise RevrelError(f"release.retain_from=task: task '{ctx.task.name}' declares no keep_instructions; use generic")
        instr = ctx.task.keep_instructions
    n_probe = max(4, len(instr) // 4)
    return instr[:n_probe], instr[n_probe:]


def _cycled(instr: list[str], n: int) -> list[str]:
    """The first ``n`` of ``instr`` repeated in order (the same instructions asked again, sampled anew)."""
    return (instr * (n // max(len(instr), 1) + 1))[:n]


def _answers(ctx: Context, instr: list[str], seed: int, desc: str) -> list[dict]:
    gens = generate(ctx.gen_model(), ctx.tok, instr,
                    GenerationConfig(max_new_tokens=64, temperature=0.7, top_p=0.9, batch_size=ctx.cfg.reveal.batch_size, seed=seed), desc=desc)
    return [{"instruction": g.prompt, "response": g.text} for g in gens if g.text.strip()]


def self_generated_retain(ctx: Context) -> tuple[list[dict], list[dict]]:
    """(retain rows, probe rows): the original model's answers to generic benign instructions."""
    s = ctx.cfg.release
    if s.retain_file:
        rows = read_jsonl(s.retain_file, required=("instruction", "response"))
        n_probe = max(1, len(rows) // 4)
        return rows[n_probe:] or rows, rows[:n_probe]
    probe_instr, train_instr = _keep_instructions(ctx)
    train_instr = _cycled(train_instr, s.n_retain)
    rows = _answers(ctx, train_instr + probe_instr, ctx.cfg.seed + 17, "retain: self-generate")
    return rows[: len(train_instr)], rows[len(train_instr) :]


def self_generated_keep(ctx: Context, n: int) -> list[dict]:
    """release.edit_keep: ``n`` more answers of the original model to the retain side's training instructions (another
    sampling seed), for pruning's and suppression's keep side only: a token ordinary text uses shows up in them."""
    return _answers(ctx, _cycled(_keep_instructions(ctx)[1], n), ctx.cfg.seed + 29, "keep side: self-generate")


def probe_perplexity(ctx: Context, probe: list[dict]) -> float:
    scores = sequence_logprobs(ctx.model, ctx.tok, [r["instruction"] for r in probe], [r["response"] for r in probe], batch_size=16)
    return perplexity(scores)


def _target_weights(model, modules: list[str]) -> dict[str, torch.Tensor]:
    """Copies of the base weights of the target modules, named as in the plain (unwrapped) model."""
    return {n.replace(".base_layer.", "."): p.detach().clone() for n, p in model.named_parameters()
            if any(f".{m}." in n for m in modules) and "lora_" not in n}


def round_budget(cfg, k: int) -> float:
    """The retain-probe perplexity ratio round ``k`` may reach: the whole budget, or with pacing its
    k/rounds share in log space (1.5 over 3 rounds: 1.145, 1.310, 1.5), so round 1 cannot spend it all."""
    s = cfg.release
    return s.utility_budget ** (min(k, s.rounds) / s.rounds) if s.budget_pacing else s.utility_budget


def release_round(ctx: Context, k: int, rows: list[dict], prev: list[dict], probe: list[dict], probe_ppl0: float) -> dict:
    """Train, negate (with the utility line search) and checkpoint round ``k``; returns its metrics."""
    s = ctx.cfg.release
    limit = round_budget(ctx.cfg, k)
    prev_A = stack_previous(prev) if s.lambda_orth > 0 and prev else None
    span_info = None
    revealed = rows
    if s.span_loss:
        rows, span_info = with_target_spans(ctx.task, rows, keep=s.span_contrast > 0 or ((s.prune > 0 or s.suppress > 0) and s.prune_keep != "retain"),
                                            unit=s.span_unit)
    pruned = None
    if s.prune > 0:
        pruned = prune_round(ctx, k, rows, probe, probe_ppl0, limit)
        if pruned["reverted"] or (not s.negate and not s.suppress):
            return pruned | {"span_loss": span_info}
    if s.suppress > 0:
        unit = s.suppress_unit or s.span_unit
        sup_rows = (with_target_spans(ctx.task, revealed, keep=s.prune_keep != "retain", unit=unit)[0]
                    if s.span_loss and unit != s.span_unit else rows)
        suppressed = suppress_round(ctx, k, sup_rows, probe, probe_ppl0, limit)
        # a round that pruned but could not also suppress within the budget still changed the model
        out = suppressed | {"span_loss": span_info, "reverted": suppressed["reverted"] and not pruned, **({"prune": pruned["prune"]} if pruned else {})}
        if not s.negate or suppressed["reverted"]:
            return out
        pruned = out  # negation follows; the entry keeps what this round already did (pruning and suppression)
    keep = (read_jsonl(ctx.run.root / "retain.jsonl", allow_empty=True) if s.retain_anchor > 0 or s.keep_contrast > 0 or s.span_contrast_retain
            else None)
    if s.span_contrast_retain:
        keep = with_keep_spans(ctx.task, keep, s.span_unit)
    peft_model, tlog = train_pem_restarts(ctx.model, ctx.tok, rows, s, seed=ctx.cfg.seed * 1000 + k, prev_A=prev_A, desc=f"round {k}: train forget PEM",
                                 retain_rows=keep)
    faults.point(f"round{k}:trained")
    ext = None
    if s.ext_sub != "none":
        from revrel.release.ext_sub import extract, retain_subspaces

        ext = extract(peft_model, retain_subspaces(ctx.run.adapters / "retain"), s.ext_sub)
    only = negation_filters(peft_model, s)
    save_adapter(peft_model, ctx.run.adapters / f"round_{k}")
    orth_after = None
    if prev_A:
        orth_after = float(orthogonality_loss(prev_A, lora_A(peft_model), s.orth_norm).detach())
    snapshot = _target_weights(peft_model.get_base_model(), s.target_modules)
    lam, ratio, tries, searched = s.lambda_neg, None, 0, []
    base = None
    while True:
        tries += 1
        faults.point(f"round{k}:negate")
        base = negate_into_base(peft_model, lam) if base is None else _renegate(base, snapshot, ctx, k, lam)
        ctx.loaded.model = base
        ratio = probe_perplexity(ctx, probe) / probe_ppl0
        searched.append({"lambda_neg": lam, "probe_ppl_ratio": round(ratio, 4)})
        if ratio <= limit or tries >= s.line_search:
            break
        lam /= 2
    reverted = ratio > limit
    if reverted:  # no lambda met the budget: keep the last model that did
        _restore(base, snapshot)
    else:
        save_negated_adapter(ctx.run.adapters / f"round_{k}", ctx.run.adapters / f"negated_round_{k}", lam)
    return {"lambda_neg": lam, "negation_tries": tries, "line_search": searched, "round_budget": round(limit, 4), "probe_ppl_ratio": ratio,
            "reverted": reverted, "train": tlog.summary(), "orth_final": orth_after, "ext_sub": ext, "negate_only": only, "span_loss": span_info,
            **({k_: pruned[k_] for k_ in ("prune", "suppress") if k_ in pruned} if pruned else {})}


def _edit_inputs(ctx: Context, rows: list[dict], probe: list[dict], probe_ppl0: float):
    """What pruning and suppression both search with: the keep side (``release.prune_keep``) and the self-probe
    perplexity ratio of ``ctx.model``, the edited model, as their budget signal."""
    from revrel.release.prune import keep_sides

    keep, extra = keep_sides(rows, edit_keep_rows(ctx.run.root), ctx.cfg.release.prune_keep)
    return keep, extra, lambda model: probe_perplexity(ctx, probe) / probe_ppl0


def edit_keep_rows(root: Path) -> list[dict]:
    """The self-generated keep-side texts pruning and suppression compare with: retain.jsonl, and keep.jsonl's
    texts when release.edit_keep wrote them."""
    extra = root / "keep.jsonl"
    return read_jsonl(root / "retain.jsonl") + (read_jsonl(extra, allow_empty=True) if extra.is_file() else [])


def prune_round(ctx: Context, k: int, rows: list[dict], probe: list[dict], probe_ppl0: float, limit: float) -> dict:
    """Round k's pruning (release.prune): the MLP neurons most active on the revealed target (the rows' spans
    with span_loss, else whole responses) relative to the self-generated keep side (retain.jsonl) are zeroed,
    the share halved while the self-probe exceeds the round's budget. The mask is kept beside the adapters."""
    from safetensors.torch import save_file

    from revrel.io import atomic_path
    from revrel.release.prune import prune_with_budget

    keep, extra, measure = _edit_inputs(ctx, rows, probe, probe_ppl0)
    mask, info = prune_with_budget(ctx.model, ctx.tok, rows, keep, ctx.cfg.release, measure, limit, extra)
    if mask is not None:
        with atomic_path(ctx.run.adapters / f"pruned_round_{k}.safetensors") as tmp:
            save_file({"mask": mask.to(torch.uint8).contiguous()}, str(tmp), metadata={"share": str(info["share"])})
    return {"prune": info, "probe_ppl_ratio": info["probe_ppl_ratio"], "round_budget": round(limit, 4), "reverted": mask is None}


def suppress_round(ctx: Context, k: int, rows: list[dict], probe: list[dict], probe_ppl0: float, limit: float) -> dict:
    """Round k's output suppression (release.suppress): the tokens most specific to the revealed target spans
    against the keep side get their logits lowered through the untied LM head, the strength halved while the
    self-probe exceeds the round's budget. The rows' change is kept beside the adapters."""
    from safetensors.torch import save_file

    from revrel.io import atomic_path
    from revrel.release.suppress import suppress_with_budget

    keep, extra, measure = _edit_inputs(ctx, rows, probe, probe_ppl0)
    sweep, info = suppress_with_budget(ctx.model, ctx.tok, rows, keep, ctx.cfg.release, measure, limit, extra)
    if sweep is not None:
        with atomic_path(ctx.run.adapters / f"suppressed_round_{k}.safetensors") as tmp:
            save_file({"tokens": sweep.index.contiguous(), "delta": sweep.delta().contiguous()}, str(tmp),
                      metadata={"strength": str(info["strength"])})
    return {"suppress": info, "probe_ppl_ratio": info["probe_ppl_ratio"], "round_budget": round(limit, 4), "reverted": sweep is None}


def span_fns(task, unit: str = "task") -> tuple:
    """(target spans, keep spans) functions of a release.span_unit: the task's own for "task", else ``Task.span_units``'s."""
    if unit == "task":
        return task.target_spans, task.keep_spans
    if unit not in task.span_units:
        from revrel.errors import RevrelError

        have = ", ".join(["task", *task.span_units])
        raise RevrelError(f"release.span_unit={unit}: task '{task.name}' declares the units {have}")
    return task.span_units[unit]


def with_target_spans(task, rows: list[dict], keep: bool = False, unit: str = "task") -> tuple[list[dict], dict]:
    """The forget rows with the task's target spans attached (rows without any span are dropped), and with
    ``keep`` the spans of what must be kept in the same text (``Task.keep_spans``, for release.span_contrast).
    ``unit`` other than "task" takes both from ``Task.span_units`` (release.span_unit)."""
    from revrel.errors import RevrelError

    target_fn, keep_fn = span_fns(task, unit)
    if target_fn is None:
        raise RevrelError(f"release.span_loss: task '{task.name}' does not declare target spans; set release.span_loss=false")
    if keep and keep_fn is None:
        raise RevrelError(f"task '{task.name}' does not declare keep spans; set release.span_contrast=0 and release.prune_keep=retain")
    texts = [r["response"] for r in rows]
    spans = target_fn(texts)
    keeps = keep_fn(texts) if keep else [None] * len(rows)
    kept = [dict(r, spans=[list(x) for x in sp], **({"keep_spans": [list(x) for x in ks]} if keep else {}))
            for r, sp, ks in zip(rows, spans, keeps) if sp]
    chars = sum(b - a for r in kept for a, b in r["spans"])
    info = {"rows_with_spans": len(kept), "rows": len(rows), "span_char_share": round(chars / max(sum(len(r["response"]) for r in kept), 1), 3)}
    if keep:
        info["rows_with_keep_spans"] = sum(bool(r["keep_spans"]) for r in kept)
    return (kept or rows), info


def with_keep_spans(task, rows: list[dict], unit: str = "task") -> list[dict]:
    """The keep side's rows with the spans of what must be kept in them (``Task.keep_spans``; entities for NER),
    for release.span_contrast_retain. Rows are never dropped: one without spans is simply not contrasted."""
    keep_fn = span_fns(task, unit)[1]
    if keep_fn is None:
        from revrel.errors import RevrelError

        raise RevrelError(f"task '{task.name}' does not declare keep spans; set release.span_contrast_retain=false")
    return [dict(r, keep_spans=[list(x) for x in ks]) for r, ks in zip(rows, keep_fn([r["response"] for r in rows]))]


def _restore(model, snapshot: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, w in snapshot.items():
            params[n].copy_(w)


def _renegate(base, snapshot, ctx: Context, k: int, lam: float):
    """Restore the pre-negation weights and negate the saved round-k adapter with a smaller lambda."""
    from peft import PeftModel

    _restore(base, snapshot)
    peft_model = PeftModel.from_pretrained(base, str(ctx.run.adapters / f"round_{k}"))
    return negate_into_base(peft_model, lam)


def run_rounds(ctx: Context, progress: dict) -> dict:
    """Run (or continue) the rounds; ``progress`` is the checkpointed state, updated in place."""
    cfg, run = ctx.cfg, ctx.run
    retain_path, probe_path, cand_path = run.root / "retain.jsonl", run.root / "probe.jsonl", run.root / "candidates.jsonl"
    if "probe_ppl0" not in progress:
        retain, probe = self_generated_retain(ctx)
        write_jsonl(retain_path, retain)
        write_jsonl(probe_path, probe)
        if cfg.release.edit_keep and (cfg.release.prune > 0 or cfg.release.suppress > 0):
            write_jsonl(run.root / "keep.jsonl", self_generated_keep(ctx, cfg.release.edit_keep))
        retain_train = None
        if cfg.release.negate and cfg.release.retain_pem and (cfg.release.lambda_orth > 0 or cfg.release.ext_sub != "none"):
            peft_model, rlog = train_pem(ctx.model, ctx.tok, retain, cfg.release, seed=cfg.seed + 7, desc="train retain PEM")
            save_adapter(peft_model, run.adapters / "retain")
            ctx.loaded.model = peft_model.unload()  # the retain PEM only defines directions to stay away from
            retain_train = rlog.summary()
        cands = build_candidates(ctx.gen_model(), ctx.tok, ctx.task, cfg.reveal, cfg.seed)
        write_jsonl(cand_path, [c.to_dict() for c in cands])
        progress.update(probe_ppl0=probe_ppl_safe(ctx, probe), completed_rounds=0, rounds=[], stopped=None, retain_pem_train=retain_train)
        run.save_progress(progress)
    probe = read_jsonl(probe_path)
    cands = [Candidate(**r) for r in read_jsonl(cand_path)]
    prev = [load_adapter_A(run.adapters / "retain")] if (run.adapters / "retain").is_dir() else []
    prev += [load_adapter_A(run.adapters / f"round_{j}") for j in range(1, progress["completed_rounds"] + 1)
             if (run.adapters / f"round_{j}").is_dir()]
    if progress.get("stopped"):
        return progress
    bar = progress_bar(range(progress["completed_rounds"] + 1, cfg.release.rounds + 1), desc="rounds", initial=progress["completed_rounds"], total=cfg.release.rounds, leave=True)
    for k in bar:
        t0 = time.time()
        faults.point(f"round{k}:reveal")
        rv = reveal(ctx.gen_model(), ctx.tok, ctx.task, ctx.oracle, ctx.embed, cfg.reveal, seed=cfg.seed, round_=k, candidates=cands)
        rdir = run.round_dir(k)
        write_jsonl(rdir / "forget.jsonl", rv.forget)
        write_jsonl(rdir / "reveal.jsonl", rv.evaluated)
        entry = {"round": k, "revealed_relevance": rv.relevance, "seed_relevance": rv.seed_relevance, "generations": rv.generations,
                 "forget_size": len(rv.forget),
                 "best_instruction": rv.table(1)[0] if rv.evaluated else None, "reveal_seconds": round(rv.seconds, 1)}
        stop = None
        if rv.relevance < cfg.release.relevance_target:
            stop = f"revealed relevance {rv.relevance:.3f} < target {cfg.release.relevance_target}"
        elif not rv.forget:
            stop = f"no revealed response reached relevance {cfg.reveal.relevance_threshold}"
        else:
            faults.point(f"round{k}:release")
            entry.update(release_round(ctx, k, rv.forget, prev, probe, progress["probe_ppl0"]))
            if (run.adapters / f"round_{k}").is_dir():  # a pruning-only round trains no PEM
                prev.append(load_adapter_A(run.adapters / f"round_{k}"))
            if entry["reverted"]:
                what = (f"lambda_neg={entry['lambda_neg']:g}; this round's negation" if "lambda_neg" in entry
                        else f"a suppression strength of {entry['suppress']['line_search'][-1]['strength']:g}; this round's suppression"
                        if "suppress" in entry else f"a pruned share of {entry['prune']['line_search'][-1]['share']:g}; this round's pruning")
                stop = (f"retain-probe perplexity ratio {entry['probe_ppl_ratio']:.3f} > round budget {entry['round_budget']:.3f} "
                        f"even at {what} was reverted")
            if ctx.after_round is not None:
                entry["eval_probe"] = ctx.after_round(ctx.model)
            faults.point(f"round{k}:save")
            progress["state"] = run.save_state(ctx.model, k)
            faults.point(f"round{k}:saved")
        entry["seconds"] = round(time.time() - t0, 1)
        log.info("round %d: relevance %.3f, forget set %d, probe ppl ratio %s, %.0fs", k, rv.relevance, len(rv.forget),
                 f"{entry.get('probe_ppl_ratio', float('nan')):.3f}", entry["seconds"])
        progress["rounds"].append(entry)
        progress["completed_rounds"] = k
        progress["stopped"] = stop
        run.save_progress(progress)
        run.prune_states(progress.get("state"))
        if stop:
            break
    final_reveal(ctx, progress)
    return progress


def final_reveal(ctx: Context, progress: dict) -> None:
    """One more Reveal on the final model, so the per-round relevance has an 'after the last round' point
    (round k's own Reveal measures the model *before* its negation). Skipped when the last Reveal already
    saw the final model (the run stopped on the relevance target, or no negation was kept)."""
    cfg, run = ctx.cfg, ctx.run
    last = progress["rounds"][-1] if progress["rounds"] else None
    if not cfg.release.final_reveal or last is None or "final_reveal" in progress or "probe_ppl_ratio" not in last or last.get("reverted"):
        return
    k = last["round"] + 1
    cands = [Candidate(**r) for r in read_jsonl(run.root / "candidates.jsonl")]
    rv = reveal(ctx.gen_model(), ctx.tok, ctx.task, ctx.oracle, ctx.embed, cfg.reveal, seed=cfg.seed, round_=k, candidates=cands)
    write_jsonl(run.root / "rounds" / "final" / "reveal.jsonl", rv.evaluated)
    progress["final_reveal"] = {"after_round": k - 1, "revealed_relevance": rv.relevance, "seed_relevance": rv.seed_relevance,
                                "generations": rv.generations,
                                "best_instruction": rv.table(1)[0] if rv.evaluated else None, "seconds": round(rv.seconds, 1)}
    log.info("after round %d: revealed relevance %.3f", k - 1, rv.relevance)
    run.save_progress(progress)


def probe_ppl_safe(ctx: Context, probe: list[dict]) -> float:
    return probe_perplexity(ctx, probe) if probe else 1.0


def run_baseline(ctx: Context, progress: dict) -> dict:
    """One-stage baselines (ga, graddiff, npo, simnpo, pem-negation) on self-generated or real forget data."""
    from revrel.release.baselines import METHODS

    cfg, run, s = ctx.cfg, ctx.run, ctx.cfg.release
    if progress.get("completed_rounds"):
        return progress
    retain, probe = self_generated_retain(ctx)
    probe_ppl0 = probe_ppl_safe(ctx, probe)
    if s.forget_file:
        forget, source = read_jsonl(s.forget_file, required=("instruction", "response")), s.forget_file
    elif s.forget_source == "real":
        if ctx.task.real_forget is None:
            from revrel.errors import RevrelError

            raise RevrelError(f"task '{cfg.task}' has no real forget data; use release.forget_source=self or release.forget_file")
        forget, source = ctx.task.real_forget(max(s.n_retain, 32)), "real"
    else:
        rv = reveal(ctx.gen_model(), ctx.tok, ctx.task, ctx.oracle, ctx.embed, cfg.reveal, seed=cfg.seed, round_=1)
        forget, source = rv.forget, "self"
    write_jsonl(run.round_dir(1) / "forget.jsonl", forget)
    t0 = time.time()
    faults.point("round1:release")
    info = METHODS[s.method](ctx, forget, retain)
    entry = {"round": 1, "method": s.method, "forget_source": source, "forget_size": len(forget), "revealed_relevance": None,
             "probe_ppl_ratio": probe_perplexity(ctx, probe) / probe_ppl0 if probe else None, "seconds": round(time.time() - t0, 1), **info}
    progress["state"] = run.save_state(ctx.model, 1)
    progress.update(rounds=[entry], completed_rounds=1, stopped=None, probe_ppl0=probe_ppl0)
    run.save_progress(progress)
    run.prune_states(progress["state"])
    return progress
