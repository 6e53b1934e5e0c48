"""The Reveal-and-Release rounds, with per-round checkpoints and ``--resume``.

round k: Reveal on the current model -> stop if revealed relevance < target -> apply ``release.edits`` in
order (each prepared on the model the earlier ones left, set to the strongest strength whose keep-side cost,
``revrel.release.budget``, stays within its share of the round's budget; what the last one leaves goes to an
earlier head-only edit, :func:`top_up`) -> checkpoint. Stop when an edit cannot meet the budget.
Also the runner of the one-stage baselines, which share the run folder and the self-generated keep side.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from revrel import faults
from revrel.config import RunConfig
from revrel.errors import RevrelError
from revrel.io import read_jsonl, write_jsonl
from revrel.models.generation import GenerationConfig, generate
from revrel.models.loading import inference_view
from revrel.progress import progress_bar
from revrel.release.budget import KeepCost, keep_probe, rows_probe, target_nll
from revrel.release.checkpoint import RunDir, load_adapter_A, save_adapter
from revrel.release.edit import RoundData, choose, line_search, parse_edits
from revrel.release.negate import negated_adapters
from revrel.release.orthogonality import stack_previous
from revrel.release.pem import train_pem
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
    grid: object = None  # revrel.release.grid.Q41Grid of the original, when its weights lie on a Q4_1 grid

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
            ens = max([e.cfg.ensemble for e in parse_edits(s.edits) if e.name == "negate"] or [1])
            self._vllm = VLLMView(view, self.loaded.source, adapter, s.pem.rank * ens * s.rounds)
        self._vllm.hf_model = view
        self._vllm.set_adapter(adapter)
        return self._vllm


def _keep_instructions(ctx: Context) -> tuple[list[str], list[str]]:
    """(probe instructions, training instructions) of the self-generated retain side: the task's keep instructions
    with release.retain_from=task, else generic benign chat; the first quarter (at least 4) are the self-probe's."""
    instr = ctx.task.retain_instructions
    if ctx.cfg.release.retain_from == "task":
        if not ctx.task.keep_instructions:
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
    """(retain rows, probe rows): the original model's answers to the keep side's instructions (generic benign chat, or
    the task's keep instructions), or the rows of a user's JSONL file (``release.retain_from: my_keep.jsonl``)."""
    s = ctx.cfg.release
    if s.retain_from.endswith(".jsonl"):
        rows = read_jsonl(s.retain_from, required=("instruction", "response"))
        n_probe = max(1, len(rows) // 4)
        return rows[n_probe:] or rows, rows[:n_probe]
    probe_instr, train_instr = _keep_instructions(ctx)
    train_instr = _cycled(train_instr, s.n_retain)
    rows = _answers(ctx, train_instr + probe_instr, ctx.cfg.seed + 17, "retain: self-generate")
    return rows[: len(train_instr)], rows[len(train_instr) :]


def self_generated_keep(ctx: Context, n: int) -> list[dict]:
    """release.keep_texts: ``n`` more answers of the original model to the retain side's training instructions (another
    sampling seed), for pruning's and suppression's keep side only: a token ordinary text uses shows up in them."""
    return _answers(ctx, _cycled(_keep_instructions(ctx)[1], n), ctx.cfg.seed + 29, "keep side: self-generate")


def round_budget(cfg, k: int) -> float:
    """The keep-side cost (nats/token) round ``k`` may reach: the budget's k/rounds share, so round 1 cannot spend it
    all; one round may spend all of it."""
    s = cfg.release
    return s.budget * min(k, s.rounds) / s.rounds


def round_data(cfg: RunConfig, task, root: Path, k: int, rows: list[dict], prev: list[dict], adapters: Path | None = None) -> RoundData:
    """What round ``k``'s edits are prepared from: the revealed rows and the self-generated keep side in ``root``
    (retain.jsonl, and the first release.keep_texts rows of keep.jsonl). A run folder and a recorded round
    (benchmarks/release_record.py) share this layout, so a round and a sweep prepare their edits from the same data.
    When an edit compares variants, every 8th revealed row is held out of training to compare them on."""
    s = cfg.release
    extra = read_jsonl(root / "keep.jsonl", allow_empty=True)[: s.keep_texts] if s.keep_texts and (root / "keep.jsonl").is_file() else []
    check = []
    if len(rows) >= 32 and any(len(e.variants()) > 1 for e in parse_edits(s.edits)):
        rows, check = [r for i, r in enumerate(rows) if i % 8 != 7], rows[7::8]
    return RoundData(task=task, forget=rows, keep=read_jsonl(root / "retain.jsonl") + extra, keep_side=s.keep_side, pem=s.pem,
                     seed=cfg.seed * 1000 + k, prev_A=stack_previous(prev) if s.pem.lambda_orth > 0 and prev else None,
                     adapters=adapters, round=k, check=check)


def check_gain(data: RoundData, tokenizer, unit: str):
    """The score variants are compared on: the held-out revealed rows' NLL on their target spans (None: no rows)."""
    if not data.check:
        return None
    rows = data.check
    if unit and data.task.target_spans is not None:
        from revrel.release.spans import with_target_spans

        rows, _ = with_target_spans(data.task, rows, unit=unit)
    probe = rows_probe(tokenizer, rows, "target")
    return lambda model: target_nll(model, tokenizer, probe)


def edit_limits(cfg, k: int, n: int) -> list[float]:
    """The keep-side cost each of a round's ``n`` edits may reach: the round's new budget split evenly, cumulatively
    (two edits in one round of one: half the budget, then all of it), so the first edit cannot leave the next none."""
    lo, hi = round_budget(cfg, k - 1), round_budget(cfg, k)
    return [lo + (hi - lo) * (i + 1) / n for i in range(n)]


def apply_edits(model, tokenizer, data: RoundData, edits: list, cost: KeepCost, limits: list[float], tries: int,
                on_model=None, save: Path | None = None, snap=None) -> tuple[object, list[dict], dict | None, bool]:
    """Prepare each edit on the model the earlier ones left and set it to the strongest strength within its limit
    (:func:`revrel.release.edit.choose`); ``on_model`` hears of every new model object (a run keeps it as its model);
    ``snap(model)``, when given, runs after every strength an edit is set to (:meth:`revrel.release.grid.Q41Grid.snap`).
    Returns (model, one entry per edit, the line-search step the model was left at (its ``keep_cost`` and ``groups``;
    None when no edit was kept), whether the last edit met its limit at no strength)."""
    done, kept = [], None
    for edit, limit in zip(edits, limits):
        edit.after_set = snap
        faults.point(f"round{data.round}:{edit.name}")
        t0 = time.time()
        model = edit.prepare(model, tokenizer, data)
        if on_model:
            on_model(model)
        t1 = time.time()
        faults.point(f"round{data.round}:prepared")
        strength, searched, _, compared = choose(edit, tries, edit_cost(edit, cost), limit, check_gain(data, tokenizer, getattr(edit.cfg, "unit", "")))
        model = edit.model
        done.append({"edit": edit.name, "strength": strength, "limit": round(limit, 4), "line_search": searched, **compared,
                     **edit.info(), "seconds_prepare": round(t1 - t0, 1), "seconds_search": round(time.time() - t1, 1)})
        if strength is None:
            return model, done, kept, True
        kept = next(st for st in reversed(searched) if st["strength"] == strength)  # it measured the kept model's cost
        if save is not None:
            edit.save(save, data.round)
    for edit, entry in zip(edits[:-1], done):
        if edit.head_only and edit.model is model and (step := top_up(edit, entry, cost, limits[-1], tries)):
            kept = step
            if save is not None:
                edit.save(save, data.round)
    return model, done, kept, False


def edit_cost(edit, cost):
    """The cost function an edit's line search measures with: a head-only edit reuses the decoder's states
    (:meth:`KeepCost.head_only`), any other edit runs ``cost`` itself."""
    return cost.head_only() if edit.head_only and hasattr(cost, "head_only") else cost


def top_up(edit, entry: dict, cost: KeepCost, limit: float, tries: int) -> dict | None:
    """The budget the last edit left, spent on an earlier head-only edit on top of all of them: its line search again,
    from its strength, up to the round's whole limit. Why: the last edit's cost jumps where the grid rounding moves a
    sensitive weight a whole step (+0.01 nats/token across a 2% strength step), so its search can stop a quarter of
    the budget short, and on the toxicity dev record suppression turned that quarter into +0.10 nats/token of toxic
    NLL where more negation gave +0.04 for more than twice the cost. A head-only edit moves smoothly and no later edit
    touches the head, so it is re-set without re-preparing anything, in a few head products. Records the search in
    ``entry`` and returns the kept step (None: no gain)."""
    start = entry["strength"]
    strength, searched, _ = line_search(edit, start, tries, edit_cost(edit, cost), limit)
    entry["top_up"] = {"limit": round(limit, 4), "line_search": searched}
    if strength is None or strength <= start:
        edit.to(start)
        return None
    entry["strength"] = strength
    return next(st for st in reversed(searched) if st["strength"] == strength)


def release_round(ctx: Context, k: int, rows: list[dict], prev: list[dict], cost: KeepCost) -> dict:
    """Apply round ``k``'s edits in order, each at the strongest strength within its share of the round's budget
    (:func:`edit_limits`); an edit that meets it at none is undone and ends the round (and the run)."""
    s = ctx.cfg.release
    data = round_data(ctx.cfg, ctx.task, ctx.run.root, k, rows, prev, ctx.run.adapters)
    edits = parse_edits(s.edits)
    limits = edit_limits(ctx.cfg, k, len(edits))

    def keep(model):
        ctx.loaded.model = model

    snap = (lambda model: ctx.grid.snap(model, seed=ctx.cfg.seed * 1000 + k)) if ctx.grid is not None else None
    model, done, kept, reverted = apply_edits(ctx.model, ctx.tok, data, edits, cost, limits, s.line_search, keep, ctx.run.adapters, snap)
    ctx.loaded.model = model
    return {"edits": done, "round_budget": round(limits[-1], 4), "keep_cost": kept["keep_cost"] if kept else None,
            "keep_groups": kept.get("groups") if kept else None, "reverted": reverted, "kept_any": kept is not None}


def keep_cost(ctx: Context, progress: dict) -> KeepCost:
    """The run's keep-side cost function, against the original model's scores (``progress['keep0']``, computed once
    on the original and checkpointed, so a resumed run measures against the same baseline)."""
    probe = keep_probe(ctx.task, ctx.tok, read_jsonl(ctx.run.root / "probe.jsonl", allow_empty=True))
    if "keep0" not in progress:
        progress["keep0"] = KeepCost.baseline(probe, ctx.model, ctx.tok)
    return KeepCost(probe, ctx.tok, progress["keep0"])


def prepare_keep_side(ctx: Context, progress: dict, edits: list[str]) -> None:
    """Once per run, on the original model: the self-generated keep side (retain rows, self-probe, keep texts), the
    retain PEM (one epoch: it only gives the forget PEMs directions to stay orthogonal to), the keep-side cost's
    baseline. Timed as the summary's 'keep side' stage."""
    cfg, run = ctx.cfg, ctx.run
    t0 = time.time()
    retain, probe = self_generated_retain(ctx)
    write_jsonl(run.root / "retain.jsonl", retain)
    write_jsonl(run.root / "probe.jsonl", probe)
    if cfg.release.keep_texts and {"prune", "suppress"} & set(edits):
        write_jsonl(run.root / "keep.jsonl", self_generated_keep(ctx, cfg.release.keep_texts))
    retain_train = None
    if "negate" in edits and cfg.release.pem.lambda_orth > 0:
        peft_model, rlog = train_pem(ctx.model, ctx.tok, retain, dataclasses.replace(cfg.release.pem, epochs=1), seed=cfg.seed + 7,
                                     desc="train retain PEM")
        save_adapter(peft_model, run.adapters / "retain")
        ctx.loaded.model = peft_model.unload()  # the retain PEM only defines directions to stay away from
        retain_train = rlog.summary()
    keep_cost(ctx, progress)
    progress.update(retain_pem_train=retain_train, seconds_keep_side=round(time.time() - t0, 1))


def run_rounds(ctx: Context, progress: dict) -> dict:
    """Run (or continue) the rounds; ``progress`` is the checkpointed state, updated in place."""
    cfg, run = ctx.cfg, ctx.run
    cand_path = run.root / "candidates.jsonl"
    if "keep0" not in progress:
        prepare_keep_side(ctx, progress, [e.name for e in parse_edits(cfg.release.edits)])
        t0 = time.time()
        cands = build_candidates(ctx.gen_model(), ctx.tok, ctx.task, cfg.reveal, cfg.seed)
        write_jsonl(cand_path, [c.to_dict() for c in cands])
        progress.update(completed_rounds=0, rounds=[], stopped=None, seconds_candidates=round(time.time() - t0, 1))
        run.save_progress(progress)
    cost = keep_cost(ctx, progress)
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
        last = progress["rounds"][-1].get("revealed_relevance") if progress["rounds"] else None
        if cfg.release.stop_on_plateau and last is not None and rv.relevance >= last:
            stop = f"revealed relevance stopped falling ({rv.relevance:.3f} >= {last:.3f} before the last round's edits)"
        elif not rv.forget:
            stop = f"no revealed response reached relevance {cfg.reveal.relevance_threshold}"
        else:
            faults.point(f"round{k}:release")
            entry.update(release_round(ctx, k, rv.forget, prev, cost))
            if (run.adapters / f"round_{k}").is_dir():  # a round without a negate edit trains no PEM
                prev.append(load_adapter_A(run.adapters / f"round_{k}"))
            if entry["reverted"]:
                last = entry["edits"][-1]
                stop = (f"keep-side cost {last['line_search'][-1]['keep_cost']:.3f} nats/token > its budget {last['limit']:.3f} "
                        f"even at {last['edit']} strength {last['line_search'][-1]['strength']:g}; this round's {last['edit']} was undone")
            if ctx.after_round is not None:
                entry["eval_probe"] = ctx.after_round(ctx.model)
            faults.point(f"round{k}:save")
            progress["state"] = run.save_state(ctx.model, k)
            faults.point(f"round{k}:saved")
        entry["seconds"] = round(time.time() - t0, 1)
        log.info("round %d: relevance %.3f, forget set %d, keep-side cost %s, %.0fs", k, rv.relevance, len(rv.forget),
                 "-" if entry.get("keep_cost") is None else f"{entry['keep_cost']:.3f}", entry["seconds"])
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
    (round k's own Reveal measures the model *before* its edits). Skipped when the last Reveal already
    saw the final model (the run stopped on the relevance target, or no edit was kept), and with
    ``eval.reveal_after: false``: no decision reads it."""
    cfg, run = ctx.cfg, ctx.run
    last = progress["rounds"][-1] if progress["rounds"] else None
    if not cfg.eval.reveal_after or last is None or "final_reveal" in progress or not last.get("kept_any") or last.get("reverted"):
        return
    k = last["round"] + 1
    cands = [Candidate(**r) for r in read_jsonl(run.root / "candidates.jsonl")]
    rcfg = dataclasses.replace(cfg.reveal, forget_samples=0)  # relevance only: the forget set's extra samples are not needed
    rv = reveal(ctx.gen_model(), ctx.tok, ctx.task, ctx.oracle, ctx.embed, rcfg, seed=cfg.seed, round_=k, candidates=cands)
    write_jsonl(run.root / "rounds" / "final" / "reveal.jsonl", rv.evaluated)
    progress["final_reveal"] = {"after_round": k - 1, "revealed_relevance": rv.relevance, "seed_relevance": rv.seed_relevance,
                                "generations": rv.generations,
                                "best_instruction": rv.table(1)[0] if rv.evaluated else None, "seconds": round(rv.seconds, 1)}
    log.info("after round %d: revealed relevance %.3f", k - 1, rv.relevance)
    run.save_progress(progress)


def run_baseline(ctx: Context, progress: dict) -> dict:
    """One-stage baselines (ga, graddiff, npo, simnpo, pem-negation) on self-generated or real forget data."""
    from revrel.release.baselines import METHODS

    cfg, run, b = ctx.cfg, ctx.run, ctx.cfg.baseline
    if progress.get("completed_rounds"):
        return progress
    retain, probe = self_generated_retain(ctx)
    write_jsonl(run.root / "probe.jsonl", probe)
    cost = keep_cost(ctx, progress)
    if b.forget_source.endswith(".jsonl"):
        forget, source = read_jsonl(b.forget_source, required=("instruction", "response")), b.forget_source
    elif b.forget_source == "real":
        if ctx.task.real_forget is None:
            raise RevrelError(f"task '{cfg.task}' has no real forget data; use baseline.forget_source=self or a .jsonl file")
        forget, source = ctx.task.real_forget(max(cfg.release.n_retain, 32)), "real"
    else:
        rv = reveal(ctx.gen_model(), ctx.tok, ctx.task, ctx.oracle, ctx.embed, cfg.reveal, seed=cfg.seed, round_=1)
        forget, source = rv.forget, "self"
    write_jsonl(run.round_dir(1) / "forget.jsonl", forget)
    t0 = time.time()
    faults.point("round1:release")
    info = METHODS[cfg.method](ctx, forget, retain)
    entry = {"round": 1, "method": cfg.method, "forget_source": source, "forget_size": len(forget), "revealed_relevance": None,
             "keep_cost": round(cost(ctx.model), 4), "keep_groups": dict(cost.last), "seconds": round(time.time() - t0, 1), **info}
    progress["state"] = run.save_state(ctx.model, 1)
    progress.update(rounds=[entry], completed_rounds=1, stopped=None)
    run.save_progress(progress)
    run.prune_states(progress["state"])
    return progress
