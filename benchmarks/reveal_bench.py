"""Reveal: does the optimizer beat the hand-written seeds, and NeuralUCB beat random choice?

One run, one model, same generation budget for NeuralUCB and random:
1. score every seed instruction (k fresh samples each) -> best seed's mean relevance;
2. NeuralUCB over the candidate pool (seeds + paraphrases + soft prompts) -> its top instructions,
   re-scored with k fresh samples (so the comparison is not biased by selection);
3. random choice over the same pool with the same number of scored instructions and the same
   schedule (the seeds first, then uniformly random arms where NeuralUCB uses UCB);
forget-set quality = mean relevance, diversity (Vendi/n of the forget-set embeddings) and their
harmonic mean, also at matched size (Vendi/n falls as n grows), and for the forget set the top
instructions go on to produce: recheck_k fresh responses of each optimizer's top 3 (the same size for
both, never selected on; what `reveal.forget_samples` adds). Writes
benchmarks/results/reveal_<task>.json. `reveal_replay.py` repeats the comparison offline over
hundreds of draws on a recorded pool.

    python benchmarks/reveal_bench.py --task toxicity --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from revrel.config import RevealConfig
from revrel.models.embedders import make_embedder
from revrel.models.generation import GenerationConfig, generate
from revrel.models.loading import load_model
from revrel.reveal.optimize import build_candidates, reveal
from revrel.reveal.scoring import diversity, harmonic_score, size_matched_scores
from revrel.tasks import get_task

OUT = Path(__file__).resolve().parent / "results"


def fresh_samples(model, tok, oracle, instructions, k, seed) -> tuple[list[str], list[float]]:
    """k fresh responses per instruction (new random numbers) and their oracle relevance."""
    gens = generate(model, tok, [i for i in instructions for _ in range(k)], GenerationConfig(max_new_tokens=48, seed=seed, progress=False))
    texts = [g.text for g in gens]
    return texts, [float(x) for x in oracle(texts)]


def per_instruction(rel: list[float], k: int) -> list[float]:
    """Mean relevance of each consecutive block of k responses (one block per instruction)."""
    return [float(np.mean(rel[j : j + k])) for j in range(0, len(rel), k)]


def fresh_relevance(model, tok, oracle, instructions, k, seed) -> list[float]:
    return per_instruction(fresh_samples(model, tok, oracle, instructions, k, seed)[1], k)


def forget_quality(rows, embed, alpha=0.5) -> dict:
    if not rows:
        return {"size": 0, "relevance": 0.0, "diversity": 0.0, "score": 0.0}
    rel = float(np.mean([r["relevance"] for r in rows]))
    div = diversity(embed([r["response"] for r in rows]))
    return {"size": len(rows), "relevance": rel, "diversity": div, "score": harmonic_score(rel, div, alpha)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="toxicity")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--recheck-k", type=int, default=16)
    ap.add_argument("--forget-from", default="pulls", choices=["pulls", "instructions", "greedy"], help="revrel's reveal.forget_from")
    ap.add_argument("--out", default="", help="result file (default benchmarks/results/reveal_<task>.json)")
    args = ap.parse_args()
    t0 = time.time()
    loaded = load_model(args.model)
    m, tok = loaded.model, loaded.tokenizer
    task = get_task(args.task)
    oracle = task.oracle()
    from revrel.models.loading import inference_view

    m = inference_view(m, "auto")  # generate from the bf16 copy where the CPU has native bf16, as revrel does
    embed = make_embedder("self", m, tok)
    results = []
    for seed in args.seeds:
        # same number of scored instructions for both optimizers: 8 seeds + budget (NeuralUCB) vs 8 + budget random
        cfg = RevealConfig(n_paraphrases=3, n_soft=16, n_init=0, budget=args.budget, k=args.k, top=3, relevance_threshold=0.0,
                           forget_from=args.forget_from)
        cands = build_candidates(m, tok, task, cfg, seed)
        ucb = reveal(m, tok, task, oracle, embed, cfg, seed=seed, candidates=cands)
        rnd = reveal(m, tok, task, oracle, embed, replace(cfg, optimizer="random"), seed=seed, candidates=cands)
        # selection and measurement use different samples (no winner's curse): the best seed and the
        # optimizers' picks are chosen on the samples seen while scoring, then re-measured on fresh ones
        seed_scores = {e["instruction"]: e["relevance"] for e in ucb.evaluated if e["kind"] == "seed"}
        best_seed = max(seed_scores, key=seed_scores.get)
        top = [r["instruction"] for r in ucb.table(3)]
        rnd_top = [r["instruction"] for r in rnd.table(3)]
        kk = args.recheck_k
        texts, rel = fresh_samples(m, tok, oracle, [best_seed, *top, *rnd_top], kk, seed + 500)
        fresh = per_instruction(rel, kk)
        best_seed_rel, top_rel, rnd_top_rel = fresh[0], fresh[1 : 1 + len(top)], fresh[1 + len(top) :]
        # the forget set the optimized instructions produce from here on: recheck_k fresh responses of each of
        # the top 3 (what reveal.forget_samples draws), same size for both optimizers, no selection on these samples
        cut = kk * (1 + len(top))
        fresh_sets = {name: [{"response": t, "relevance": r} for t, r in zip(texts[a:b], rel[a:b])]
                      for name, (a, b) in (("neuralucb", (kk, cut)), ("random", (cut, len(texts))))}
        top_by_rel = max(ucb.evaluated, key=lambda e: e["relevance"])["instruction"]
        top_by_rel_fresh = fresh_relevance(m, tok, oracle, [top_by_rel], args.recheck_k, seed + 900)[0]
        seeds_rel = fresh_relevance(m, tok, oracle, task.seed_instructions, args.recheck_k, seed + 700)
        res = {
            "seed": seed, "candidates": len(cands), "kinds": {k: sum(c.kind == k for c in cands) for k in ("seed", "paraphrase", "compose", "soft")},
            "generations_per_optimizer": ucb.generations,
            "best_seed": best_seed, "best_seed_relevance_fresh": best_seed_rel,
            "max_of_seeds_fresh_relevance_biased": max(seeds_rel), "mean_seed_relevance": float(np.mean(seeds_rel)),
            "neuralucb_top3_relevance": float(np.mean(top_rel)), "neuralucb_top3": list(zip(top, top_rel)),
            "neuralucb_most_relevant": top_by_rel, "neuralucb_most_relevant_fresh": top_by_rel_fresh,
            "random_top3_relevance": float(np.mean(rnd_top_rel)),
            "forget_neuralucb": forget_quality(ucb.forget, embed), "forget_random": forget_quality(rnd.forget, embed),
            "fresh_forget_top3": {o: forget_quality(rows, embed) for o, rows in fresh_sets.items()},
            "forget_matched_size": dict(zip(("neuralucb", "random"), size_matched_scores(
                [([r["relevance"] for r in f], embed([r["response"] for r in f])) for f in (ucb.forget, rnd.forget)], seed=seed))),
            "all_generations_relevance": {"neuralucb": ucb.relevance, "random": rnd.relevance},
        }
        print(json.dumps(res, indent=1))
        results.append(res)
    agg = {
        "mean_best_seed_fresh": float(np.mean([r["best_seed_relevance_fresh"] for r in results])),
        "mean_neuralucb_top3_fresh": float(np.mean([r["neuralucb_top3_relevance"] for r in results])),
        "mean_random_top3_fresh": float(np.mean([r["random_top3_relevance"] for r in results])),
        "mean_forget_score_neuralucb": float(np.mean([r["forget_neuralucb"]["score"] for r in results])),
        "mean_forget_score_random": float(np.mean([r["forget_random"]["score"] for r in results])),
        "wins_top3_vs_best_seed": sum(r["neuralucb_top3_relevance"] > r["best_seed_relevance_fresh"] for r in results),
        "wins_forget_vs_random": sum(r["forget_neuralucb"]["score"] > r["forget_random"]["score"] for r in results),
        "mean_forget_matched_neuralucb": float(np.mean([r["forget_matched_size"]["neuralucb"] for r in results])),
        "mean_forget_matched_random": float(np.mean([r["forget_matched_size"]["random"] for r in results])),
        "mean_fresh_forget_top3_score": {o: float(np.mean([r["fresh_forget_top3"][o]["score"] for r in results])) for o in ("neuralucb", "random")},
        "wins_fresh_forget_top3_vs_random": sum(r["fresh_forget_top3"]["neuralucb"]["score"] > r["fresh_forget_top3"]["random"]["score"] for r in results),
        "mean_forget_size": {o: float(np.mean([r[f"forget_{o}"]["size"] for r in results])) for o in ("neuralucb", "random")},
        "runs": len(results),
    }
    print(json.dumps(agg, indent=1))
    summary = {"summary": agg,
        "task": args.task, "model": args.model, "machine": f"{platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/reveal_bench.py " + " ".join(f"--{k.replace('_', '-')} {v if not isinstance(v, list) else ' '.join(map(str, v))}" for k, v in vars(args).items()),
        "seconds": round(time.time() - t0, 1), "runs": results,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else OUT / f"reveal_{args.task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
