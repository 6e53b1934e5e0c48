"""Record a Reveal candidate pool once, so optimizers can be compared offline on thousands of draws.

For every candidate instruction of one pool (the pool `reveal_bench.py` builds) this samples R
responses from the model and stores, per response, the oracle's relevance and the embedding that
the diversity term uses; per candidate, the NeuralUCB features (and two alternatives). A Reveal
step "score arm i with k responses" can then be replayed by drawing k of the R recorded responses
(`benchmarks/reveal_replay.py`), so the choice rule can be studied without generating again.

    python benchmarks/reveal_record.py --task toxicity --seed 0 --samples 16

Writes benchmarks/results/reveal_pool_<task>_seed<seed>.safetensors (+ .json with the texts).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from revrel.config import RevealConfig
from revrel.models.embedders import make_embedder
from revrel.models.generation import GenerationConfig, generate
from revrel.models.loading import inference_view, load_model
from revrel.reveal.candidates import features
from revrel.reveal.optimize import build_candidates
from revrel.tasks import get_task

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="toxicity")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    t0 = time.time()
    loaded = load_model(args.model)
    m, tok = inference_view(loaded.model, "auto"), loaded.tokenizer
    task = get_task(args.task)
    oracle = task.oracle()
    embed = make_embedder("self", m, tok)
    cfg = RevealConfig(n_paraphrases=3, n_soft=16)  # the pool reveal_bench.py builds
    cands = build_candidates(m, tok, task, cfg, args.seed)
    with torch.no_grad():
        feats = features(m, tok, cands, 16)
        instr_emb = embed([c.text for c in cands]).float().numpy()  # alternative feature: mean-pooled instruction
    gcfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            batch_size=args.batch_size, seed=args.seed * 1000 + 7)
    gens = generate(m, tok, [c.text for c in cands for _ in range(args.samples)], gcfg, desc="record: sample")
    texts = [g.text for g in gens]
    rel = np.asarray(oracle(texts), dtype=np.float32).reshape(len(cands), args.samples)
    with torch.no_grad():
        emb = torch.cat([embed(texts[s : s + 64]).float() for s in range(0, len(texts), 64)])
    emb = emb.reshape(len(cands), args.samples, -1)
    stem = OUT / f"reveal_pool_{args.task}_seed{args.seed}"
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({"features": torch.as_tensor(feats), "instruction_embedding": torch.as_tensor(instr_emb),
               "relevance": torch.as_tensor(rel), "response_embedding": emb.half().contiguous()}, f"{stem}.safetensors")
    meta = {"task": args.task, "model": args.model, "seed": args.seed, "samples": args.samples,
            "seconds": round(time.time() - t0, 1), "candidates": [c.to_dict() for c in cands],
            "responses": [texts[i * args.samples : (i + 1) * args.samples] for i in range(len(cands))]}
    Path(f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(cands)} candidates x {args.samples} samples in {meta['seconds']} s; mean relevance {rel.mean():.3f}; "
          f"per-candidate mean relevance spread (std) {rel.mean(1).std():.3f}, within-candidate std {rel.std(1).mean():.3f}")


if __name__ == "__main__":
    main()
