"""Replay Reveal on a recorded candidate pool: NeuralUCB vs random choice over many draws.

`reveal_record.py` stores R sampled responses (relevance + embedding) per candidate instruction.
Here "score arm i with k responses" draws k of those R without replacement, so one optimizer run
costs milliseconds instead of minutes and the comparison can be repeated over hundreds of draws.
Both optimizers see the same draws (common random numbers: the j-th pull of arm i returns the same
responses for both) and follow the same schedule as `revrel.reveal.optimize.reveal` (the seeds
first, then `budget` arms). The bandit, the scoring and the forget-set construction are revrel's
own code; only generation is replaced by the recording.

Measured per run, with the truth taken from all R samples of an arm:
- top: mean true relevance of the 3 instructions ranked best (pooled over their pulls: the Reveal table),
  top1 that of the best one, seed_pick that of the hand-written seed that scored best (what a user
  choosing among the seeds on the same samples would get);
- forget: relevance x diversity (harmonic mean) of the forget set built from the observed responses,
  forget_matched the same at equal size for both optimizers (Vendi/n falls as n grows);
- chosen: mean true relevance of every arm the optimizer chose after the seeds.

    python benchmarks/reveal_replay.py --pool benchmarks/results/reveal_pool_toxicity_seed0 --runs 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from revrel.reveal.bandit import run_bandit
from revrel.reveal.forget_set import best_per_instruction, build_forget_set
from revrel.reveal.optimize import random_arms
from revrel.reveal.scoring import diversity, harmonic_score, size_matched_scores


class Pool:
    def __init__(self, stem: str, feature: str = "features") -> None:
        t = load_file(f"{stem}.safetensors")
        meta = json.loads(Path(f"{stem}.json").read_text())
        self.rel = t["relevance"].double().numpy()  # (n, R)
        self.emb = t["response_embedding"].float()  # (n, R, d)
        self.feats = t[feature].float().numpy()
        self.kinds = [c["kind"] for c in meta["candidates"]]
        self.texts = [c["text"] for c in meta["candidates"]]
        self.n, self.R = self.rel.shape
        self.true_rel = self.rel.mean(1)


def one_run(pool: Pool, optimizer: str, seed: int, *, k: int, budget: int, top: int, alpha: float, bandit_kw: dict,
            rank: str = "observed", threshold: float = 0.0, forget_samples: int = 0, forget_from: str = "pulls") -> dict:
    perm = np.random.default_rng(10_000 + seed).permuted(np.tile(np.arange(pool.R), (pool.n, 1)), axis=1)  # same draws for both
    pulls = np.zeros(pool.n, dtype=int)
    evaluated: list[dict] = []

    def score_many(idx: list[int]) -> list[float]:
        out = []
        for i in idx:
            j = pulls[i] % (pool.R // k)
            pulls[i] += 1
            pick = perm[i, j * k : (j + 1) * k]
            r = pool.rel[i, pick]
            div = diversity(pool.emb[i, pick])
            s = harmonic_score(float(r.mean()), div, alpha)
            evaluated.append({"instruction": pool.texts[i], "idx": int(i), "kind": pool.kinds[i], "relevance": float(r.mean()),
                              "diversity": div, "score": s, "responses": [f"{i}:{p}" for p in pick],
                              "relevances": [float(x) for x in r]})
            out.append(s)
        return out

    seeds = [i for i in range(pool.n) if pool.kinds[i] == "seed"]
    if optimizer == "random":
        score_many(seeds)
        score_many(random_arms(pool.n, seeds, budget, np.random.default_rng(seed)))
        bandit = None
    else:
        holder: dict = {}
        run_bandit(pool.feats, lambda i: score_many([i])[0], n_init=0, budget=budget, init=seeds, reward_many=score_many,
                   seed=seed, keep=holder, **bandit_kw)
        bandit = holder["bandit"]
    if rank == "surrogate" and bandit is not None:
        # rank the observed arms by a mix of their observed score and the surrogate's prediction
        mu = bandit.predict(np.arange(pool.n))
        for e in evaluated:
            e["score"] = 0.5 * e["score"] + 0.5 * float(mu[e["idx"]])
    ranked = best_per_instruction(evaluated)[:top]
    first = {}
    for e in evaluated:
        first.setdefault(e["idx"], e)
    for r in ranked[: top if forget_samples else 0]:  # revrel's reveal.forget_samples: fresh responses of the top arms
        i, e = r["idx"], first[r["idx"]]
        fresh = [int(p) for p in perm[i, pulls[i] * k : pulls[i] * k + forget_samples]]
        e["responses"] = e["responses"] + [f"{i}:{p}" for p in fresh]
        e["relevances"] = e["relevances"] + [float(pool.rel[i, p]) for p in fresh]
        e["extra_samples"] = len(fresh)
    lookup = lambda texts: torch.stack([pool.emb[int(t.split(":")[0]), int(t.split(":")[1])] for t in texts])  # noqa: E731
    forget = build_forget_set(evaluated, top=top, threshold=threshold, alpha=alpha, by=forget_from,
                              embed=lookup if forget_from == "greedy" else None)
    if forget:
        emb = lookup([r["response"] for r in forget])
        f_rel = float(np.mean([r["relevance"] for r in forget]))
        f_score = harmonic_score(f_rel, diversity(emb), alpha)
    else:
        f_rel = f_score = 0.0
        emb = torch.zeros(0, pool.emb.shape[-1])
    chosen = [e["idx"] for e in evaluated if e["kind"] != "seed"]
    seed_seen: dict[int, float] = {}
    for e in evaluated:  # first pull only: the same draws for both optimizers, so the same pick
        if e["kind"] == "seed":
            seed_seen.setdefault(e["idx"], e["relevance"])
    return {"top1": float(pool.true_rel[ranked[0]["idx"]]),
            "seed_pick": float(pool.true_rel[max(seed_seen, key=seed_seen.get)]) if seed_seen else 0.0,
            "top": float(np.mean([pool.true_rel[e["idx"]] for e in ranked])), "forget": f_score, "forget_rel": f_rel,
            "chosen": float(np.mean(pool.true_rel[chosen])) if chosen else 0.0, "forget_size": len(forget),
            "_rows": ([r["relevance"] for r in forget], emb)}


def compare(pool: Pool, runs: int, *, k: int, budget: int, top: int, alpha: float, bandit_kw: dict, rank: str, threshold: float,
            forget_samples: int, forget_from: str = "pulls") -> dict:
    res = {o: [one_run(pool, o, s, k=k, budget=budget, top=top, alpha=alpha, bandit_kw=bandit_kw, rank=rank,
                       threshold=threshold, forget_samples=forget_samples, forget_from=forget_from) for s in range(runs)]
           for o in ("neuralucb", "random")}
    for s, (a, b) in enumerate(zip(res["neuralucb"], res["random"])):
        a["forget_matched"], b["forget_matched"] = size_matched_scores([a.pop("_rows"), b.pop("_rows")], alpha, seed=s)
    out = {}
    for m in ("forget_matched", "top", "top1", "seed_pick", "forget", "forget_rel", "forget_size", "chosen"):
        a = np.array([r[m] for r in res["neuralucb"]])
        b = np.array([r[m] for r in res["random"]])
        d = a - b
        out[m] = {"neuralucb": float(a.mean()), "random": float(b.mean()), "diff": float(d.mean()),
                  "se": float(d.std(ddof=1) / np.sqrt(len(d))), "win_rate": float((d > 0).mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", nargs="+", required=True, help="stems written by reveal_record.py")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.0, help="forget-set relevance threshold")
    ap.add_argument("--forget-from", default="pulls", choices=["pulls", "instructions", "greedy"], help="revrel's reveal.forget_from")
    ap.add_argument("--forget-samples", type=int, default=0, help="fresh responses added per top arm (<= R - k)")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--feature", default="features", choices=["features", "instruction_embedding"])
    ap.add_argument("--nu", type=float, default=0.001)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--pca-dim", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--subset", type=int, default=64)
    ap.add_argument("--scale-rewards", type=int, default=1, help="1: fit NeuralUCB on z-scored rewards (revrel's default)")
    ap.add_argument("--rank", default="observed", choices=["observed", "surrogate"])
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    t0 = time.time()
    kw = {"nu": args.nu, "lam": args.lam, "pca_dim": args.pca_dim, "hidden": args.hidden, "epochs": args.epochs,
          "batch": args.batch, "subset": args.subset, "scale_rewards": bool(args.scale_rewards)}
    report = {"args": vars(args), "pools": {}}
    for stem in args.pool:
        pool = Pool(stem, args.feature)
        r = compare(pool, args.runs, k=args.k, budget=args.budget, top=args.top, alpha=args.alpha, bandit_kw=kw, rank=args.rank,
                    threshold=args.threshold, forget_samples=args.forget_samples, forget_from=args.forget_from)
        r["pool"] = {"candidates": pool.n, "samples": pool.R, "true_rel_mean": float(pool.true_rel.mean()),
                     "true_rel_best_seed": float(max(pool.true_rel[i] for i in range(pool.n) if pool.kinds[i] == "seed")),
                     "true_rel_top3": float(np.sort(pool.true_rel)[-3:].mean())}
        report["pools"][Path(stem).name] = r
        line = "  ".join(f"{m} {v['neuralucb']:.3f}/{v['random']:.3f} ({v['diff']:+.3f}+-{v['se']:.3f}, win {v['win_rate']:.2f})"
                         for m, v in r.items() if m != "pool")
        print(f"{Path(stem).name}: {line}")
    report["seconds"] = round(time.time() - t0, 1)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
