"""Performance of the two hot paths on this machine, as ratios measured in one run.

generation: revrel's batched sampler vs a plain one-prompt-at-a-time ``transformers.generate`` loop
  (same prompts, greedy, exactly the same number of new tokens), and vs the memory-bandwidth limit
  (bytes of weights read per decoding step / measured bandwidth).
training: LoRA step time on the default model and achieved FLOP/s vs the measured fp32 matmul peak;
  full-parameter NPO steps on the same batches for the Release-vs-NPO step-time ratio.
sampling: the sampled generation of the toxicity evaluation, previous sampler + batch 32 vs the current ones.
Writes benchmarks/results/perf.json.   python benchmarks/perf.py [--generation-only | --training-only | --sampling-only]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from revrel.config import PemConfig
from revrel.models.encoding import chat_ids
from revrel.models.generation import GenerationConfig, NucleusSampler, generate_ids
from revrel.models.loading import load_model
from revrel.tasks.base import GENERIC_INSTRUCTIONS

OUT = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
    flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__, "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags}


def bandwidth_gbs() -> float:
    a = torch.ones(256 * 1024 * 1024 // 4 * 4)  # 1 GiB of float32
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        best = max(best, a.numel() * 4 / (time.perf_counter() - t) / 1e9)
    return best


def matmul_peak(n: int = 2048, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def bench_generation(loaded, n_prompts: int, new_tokens: int) -> dict:
    m, tok = loaded.model, loaded.tokenizer
    prompts = [chat_ids(tok, p) for p in (GENERIC_INSTRUCTIONS * 4)[:n_prompts]]
    cfg = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, temperature=0.0, batch_size=n_prompts, progress=False)
    generate_ids(m, tok, prompts[:2], GenerationConfig(max_new_tokens=4, temperature=0.0, progress=False))  # warm-up
    t = time.perf_counter()
    out = generate_ids(m, tok, prompts, cfg)
    batched_s = time.perf_counter() - t
    batched_tokens = sum(len(o[0]) for o in out)
    t = time.perf_counter()
    single_tokens = 0
    with torch.inference_mode():
        for ids in prompts:
            g = m.generate(input_ids=torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id)
            single_tokens += g.shape[1] - len(ids)
    single_s = time.perf_counter() - t
    weight_bytes = sum(p.numel() * p.element_size() for p in m.parameters())
    bw = bandwidth_gbs() * 1e9
    step_limit_s = weight_bytes / bw  # one decoding step must read every weight once
    batched_step_s = batched_s / new_tokens
    return {
        "prompts": n_prompts, "new_tokens_each": new_tokens,
        "batched_tokens_per_s": batched_tokens / batched_s, "one_at_a_time_tokens_per_s": single_tokens / single_s,
        "speedup": (batched_tokens / batched_s) / (single_tokens / single_s),
        "tokens_equal": batched_tokens == single_tokens,
        "weight_bytes": weight_bytes, "bandwidth_GBps": bw / 1e9, "bandwidth_limit_step_s": step_limit_s,
        "batched_step_s": batched_step_s, "one_at_a_time_step_s": single_s / single_tokens,
        "bandwidth_limit_fraction_one_at_a_time": step_limit_s / (single_s / single_tokens),
        "bandwidth_limit_tokens_per_s_at_batch": n_prompts / step_limit_s,
    }


class SortingSampler:
    """The sampler revrel used before (baseline only): full softmax, top-512, and a sort of the whole vocabulary
    for every row whose nucleus is wider than 512 tokens."""

    def __init__(self, temperature: float, top_p: float, k: int = 512) -> None:
        self.inner, self.k = NucleusSampler(temperature, top_p, k), k  # the current class, for its _pick

    def __call__(self, input_ids, scores):
        probs = torch.softmax(scores.float() / self.inner.temperature, dim=-1)
        top, idx = probs.topk(self.k, dim=-1)
        token = self.inner._pick(top, idx)
        wide = top.sum(-1) < self.inner.top_p
        if bool(wide.any()):
            token[wide] = self.inner._pick(*probs[wide].sort(dim=-1, descending=True))
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, token.unsqueeze(-1), 0.0)
        return out


def bench_sampling(loaded, repeats: int = 1) -> dict:
    """Sampled generation as revrel runs it, the previous setting (sorting sampler, 32 rows per batch) vs the
    current one (progressive top-k sampler, 64 rows), each combination timed ``repeats`` times (best kept):
    ``eval``: 4 answers to each of 32 RTP prompts, 25 tokens, temperature 1, top-p 0.95 (the toxicity evaluation);
    ``answers``: 128 chat answers of up to 64 tokens, temperature 0.7, top-p 0.9 (Reveal and the keep side), where
    rows end at different lengths and a batch runs until its longest row ends."""
    import revrel.models.generation as G
    from revrel.tasks.base import GENERIC_INSTRUCTIONS
    from revrel.tasks.toxicity import continuation_instruction, rtp_split

    m, tok = loaded.model, loaded.tokenizer
    prompts = [continuation_instruction(r["prompt"]["text"]) for r in rtp_split("toxic", "dev")[:32]]
    cases = {"eval": ([p for p in prompts for _ in range(4)], dict(max_new_tokens=25, temperature=1.0, top_p=0.95)),
             "answers": ((GENERIC_INSTRUCTIONS * 128)[:128], dict(max_new_tokens=64, temperature=0.7, top_p=0.9))}
    current = G.NucleusSampler
    res: dict = {}
    G.generate(m, tok, prompts[:8], G.GenerationConfig(max_new_tokens=4, batch_size=8, progress=False))  # warm-up
    try:
        for case, (rows, kw) in cases.items():
            r = res[case] = {"rows": len(rows), **kw}
            for name, sampler in (("sorting", SortingSampler), ("topk", current)):
                G.NucleusSampler = sampler
                for bs in (32, 64):
                    best = float("inf")
                    for _ in range(repeats):
                        t = time.perf_counter()
                        out = G.generate(m, tok, rows, G.GenerationConfig(batch_size=bs, progress=False, **kw))
                        best = min(best, time.perf_counter() - t)
                    r[f"{name}_bs{bs}_tokens_per_s"] = sum(g.new_tokens for g in out) / best
                    r[f"{name}_bs{bs}_rows_per_s"] = len(rows) / best
            r["speedup_current_vs_previous_rows"] = r["topk_bs64_rows_per_s"] / r["sorting_bs32_rows_per_s"]
            r["speedup_sampler_at_bs32_rows"] = r["topk_bs32_rows_per_s"] / r["sorting_bs32_rows_per_s"]
            r["speedup_batch64_topk_rows"] = r["topk_bs64_rows_per_s"] / r["topk_bs32_rows_per_s"]
            print(case, json.dumps(r), flush=True)
    finally:
        G.NucleusSampler = current
    return res


def _pairs(tok, bs: int, seq: int, prompt: int = 48, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) pairs like Release's: a ``prompt``-token chat prompt (masked) + a response."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, tok.vocab_size - 100, (bs, seq), generator=g).tolist()
    return [(row, [-100] * prompt + row[prompt:]) for row in ids]


def bench_training(loaded, bs: int, seq: int, steps: int, dtypes: tuple[str, ...] = ("float32",)) -> dict:
    """LoRA (Release's train step) vs full-parameter NPO, through the code paths the runs use.

    Both run ``steps`` timed optimizer steps (after one warm-up) on the same batch, in float32 and
    under bf16 autocast. NPO here has no retain term (its default adds one,
    which makes it slower still), so the ratio is conservative for Release.
    """
    import copy

    from peft import get_peft_model

    from revrel.release.losses import npo_loss, seq_logp
    from revrel.release.pem import batch_loss, lora_config

    m, tok = loaded.model, loaded.tokenizer
    n_params = sum(p.numel() for p in m.parameters())
    vocab_hidden = m.get_output_embeddings().weight.numel()
    cfg = PemConfig()
    pairs = _pairs(tok, bs, seq)
    prompt = 48
    tokens, resp_tokens = bs * seq, bs * (seq - prompt)
    # exact forward FLOPs: every body matmul on every token, the LM head only on the labelled positions
    fwd = 2 * (n_params - vocab_hidden) * tokens + 2 * vocab_hidden * resp_tokens

    def timed(model, params, loss_fn, dtype: str) -> float:
        opt = torch.optim.AdamW(params, lr=1e-5)
        times = []
        for i in range(steps + 1):
            t = time.perf_counter()
            with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                loss = loss_fn(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:  # the first step is a warm-up
                times.append(time.perf_counter() - t)
        return sum(times) / len(times)

    res = {"batch": bs, "seq": seq, "prompt_tokens_masked": prompt, "tokens_per_step": tokens, "params": n_params}
    peak = matmul_peak()
    res["matmul_peak_gflops"] = peak / 1e9
    pm = get_peft_model(m, lora_config(cfg))
    lora_params = [p for p in pm.parameters() if p.requires_grad]
    n_lora = sum(p.numel() for p in lora_params)
    res["lora_params"] = n_lora
    for dt in dtypes:
        s = timed(pm, lora_params, lambda mod: batch_loss(mod, tok, pairs)[0], dt)
        res[f"lora_step_s_{dt}"] = s
        res[f"lora_fraction_of_peak_6N_{dt}"] = (6 * n_params + 6 * n_lora) * tokens / s / peak  # the accounting
        res[f"lora_fraction_of_peak_exact_{dt}"] = (2 * fwd + 6 * n_lora * tokens) / s / peak  # fwd + input-grad bwd
    base = pm.unload()
    ref = copy.deepcopy(base).eval()
    for p in base.parameters():
        p.requires_grad_(True)

    def npo(mod):
        logp, _ = seq_logp(mod, tok, pairs)
        with torch.no_grad():
            ref_logp, _ = seq_logp(ref, tok, pairs)
        return npo_loss(logp, ref_logp, 0.1)

    for dt in dtypes:
        s = timed(base, list(base.parameters()), npo, dt)
        res[f"npo_full_step_s_{dt}"] = s
        res[f"npo_fraction_of_peak_exact_{dt}"] = 4 * fwd / s / peak  # fwd + full bwd + reference fwd
    for p in base.parameters():
        p.requires_grad_(False)
    for a in dtypes:
        for b in dtypes:
            res[f"release_{a}_to_npo_{b}_step_ratio"] = res[f"lora_step_s_{a}"] / res[f"npo_full_step_s_{b}"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--training-only", action="store_true", help="skip generation (writes perf_training.json)")
    ap.add_argument("--generation-only", action="store_true", help="skip training (writes perf_generation.json)")
    ap.add_argument("--sampling-only", action="store_true", help="only the sampled-generation comparison (writes perf_sampling.json)")
    ap.add_argument("--train-dtypes", default="float32", help="autocast dtypes to time training in (bfloat16 is very slow on CPU)")
    args = ap.parse_args()
    res = {"machine": machine(), "command": "python benchmarks/perf.py", "args": vars(args)}
    OUT.mkdir(parents=True, exist_ok=True)
    if args.sampling_only:
        res["sampling"] = bench_sampling(load_model(args.model, dtype="float32"))
        print(json.dumps(res["sampling"], indent=1), flush=True)
        (OUT / "perf_sampling.json").write_text(json.dumps(res, indent=1) + "\n")
        return
    for dt in args.dtypes.split(","):
        loaded = load_model(args.model, dtype=dt)
        if not args.training_only:
            res[f"generation_{dt}"] = bench_generation(loaded, args.prompts, args.new_tokens)
            print(dt, json.dumps(res[f"generation_{dt}"], indent=1), flush=True)
        if dt == "float32" and not args.generation_only:
            res["training"] = bench_training(loaded, args.train_batch, args.train_seq, args.steps, tuple(args.train_dtypes.split(",")))
            print(json.dumps(res["training"], indent=1), flush=True)
    name = "perf_training.json" if args.training_only else "perf_generation.json" if args.generation_only else "perf.json"
    (OUT / name).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
