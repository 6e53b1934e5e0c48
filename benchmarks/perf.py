"""Performance of the two hot paths on this machine, as ratios measured in one run.

generation: revrel's batched sampler vs a plain one-prompt-at-a-time ``transformers.generate`` loop
  (same prompts, greedy, exactly the same number of new tokens), and vs the memory-bandwidth limit
  (bytes of weights read per decoding step / measured bandwidth).
training: LoRA step time on the default model and achieved FLOP/s vs the measured fp32 matmul peak;
  full-parameter NPO steps on the same batches for the Release-vs-NPO step-time ratio.
Writes benchmarks/results/perf.json.   python benchmarks/perf.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from revrel.config import ReleaseConfig
from revrel.models.encoding import chat_ids
from revrel.models.generation import GenerationConfig, generate_ids
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


def _batch(tok, bs: int, seq: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, tok.vocab_size - 100, (bs, seq), generator=g)
    return ids


def bench_training(loaded, bs: int, seq: int, steps: int) -> dict:
    from peft import get_peft_model

    from revrel.release.losses import npo_loss
    from revrel.release.pem import lora_config

    m = loaded.model
    n_params = sum(p.numel() for p in m.parameters())
    cfg = ReleaseConfig()
    ids = _batch(loaded.tokenizer, bs, seq)

    def step_loop(model, params, extra=None):
        opt = torch.optim.AdamW(params, lr=1e-5)
        times = []
        for i in range(steps + 1):
            t = time.perf_counter()
            out = model(input_ids=ids, labels=ids)
            loss = out.loss
            if extra is not None:
                loss = extra(model, out)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:  # first step is warm-up
                times.append(time.perf_counter() - t)
        return sum(times) / len(times)

    pm = get_peft_model(m, lora_config(cfg))
    lora_params = [p for p in pm.parameters() if p.requires_grad]
    n_lora = sum(p.numel() for p in lora_params)
    lora_s = step_loop(pm, lora_params)
    base = pm.unload()
    tokens = bs * seq
    flops_issue = 6 * n_params * tokens + 6 * n_lora * tokens  # the issue's accounting
    flops_frozen = 4 * n_params * tokens + 6 * n_lora * tokens  # frozen base: no weight-gradient matmuls
    peak = matmul_peak()

    import copy

    ref = copy.deepcopy(base).eval()
    for p in base.parameters():
        p.requires_grad_(True)

    def npo_extra(model, out):
        logp = -out.loss * tokens
        with torch.no_grad():
            ref_logp = -ref(input_ids=ids, labels=ids).loss * tokens
        return npo_loss(logp.unsqueeze(0), ref_logp.unsqueeze(0), 0.1)

    npo_s = step_loop(base, list(base.parameters()), npo_extra)
    for p in base.parameters():
        p.requires_grad_(False)
    return {
        "batch": bs, "seq": seq, "tokens_per_step": tokens, "params": n_params, "lora_params": n_lora,
        "lora_step_s": lora_s, "npo_full_step_s": npo_s, "release_to_npo_step_ratio": lora_s / npo_s,
        "matmul_peak_gflops": peak / 1e9,
        "lora_gflops_6N": flops_issue / lora_s / 1e9, "lora_fraction_of_peak_6N": flops_issue / lora_s / peak,
        "lora_gflops_4N": flops_frozen / lora_s / 1e9, "lora_fraction_of_peak_4N": flops_frozen / lora_s / peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    res = {"machine": machine(), "command": "python benchmarks/perf.py", "args": vars(args)}
    for dt in args.dtypes.split(","):
        loaded = load_model(args.model, dtype=dt)
        res[f"generation_{dt}"] = bench_generation(loaded, args.prompts, args.new_tokens)
        print(dt, json.dumps(res[f"generation_{dt}"], indent=1), flush=True)
        if dt == "float32":
            res["training_float32"] = bench_training(loaded, args.train_batch, args.train_seq, args.steps)
            print(json.dumps(res["training_float32"], indent=1), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "perf.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
