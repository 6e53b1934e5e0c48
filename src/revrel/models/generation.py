"""Batched sampling and scoring.

Prompts are tokenized once with the chat template, sorted by length so each batch wastes little
padding, left-padded and decoded together with the KV cache. Each batch reseeds torch from
``seed + batch index`` so a run is reproducible (and a resumed run regenerates the same text).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from revrel.models.encoding import chat_ids, encode_pair, pad_batch


@dataclass
class GenerationConfig:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 0.95
    batch_size: int = 16
    seed: int = 0
    system: str | None = None
    progress: bool = True
    min_new_tokens: int = 0  # benchmarks force equal lengths with this


@dataclass
class Generation:
    prompt: str
    text: str
    prompt_tokens: int
    new_tokens: int


def stop_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        if t in vocab:
            ids.add(vocab[t])
    return sorted(i for i in ids if i is not None)


def _cut_at_stop(row: list[int], stops: list[int]) -> list[int]:
    return row[: next((j for j, t in enumerate(row) if t in stops), len(row))]


@torch.inference_mode()
def generate_ids(model, tokenizer, prompt_ids: Sequence[list[int]], cfg: GenerationConfig, desc: str = "generate") -> list[tuple[list[int], int]]:
    """Sample continuations for pre-tokenized prompts; returns (new token ids, prompt length) in input order."""
    stops = stop_ids(tokenizer)
    if getattr(model, "is_vllm", False):  # optional vLLM backend (revrel.models.vllm_backend)
        done = model.generate_ids(prompt_ids, cfg, stops)
        return [(_cut_at_stop(row, stops), n) for row, n in done]
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    out: list[tuple[list[int], int] | None] = [None] * len(prompt_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    for b, idx in enumerate(tqdm(batches, desc=desc, disable=not cfg.progress or len(batches) < 2, leave=False)):
        ids, mask, _ = pad_batch([prompt_ids[i] for i in idx], pad, left=True)
        torch.manual_seed(cfg.seed * 100_003 + b)
        sample = cfg.temperature > 0
        gen = model.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
            max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens or None, do_sample=sample,
            temperature=cfg.temperature if sample else None, top_p=cfg.top_p if sample else None, top_k=0 if sample else None,
            pad_token_id=pad, eos_token_id=stops,
        )
        new = gen[:, ids.shape[1] :].tolist()
        for row, i in zip(new, idx):
            out[i] = (_cut_at_stop(row, stops), len(prompt_ids[i]))
    return out  # type: ignore[return-value]


def generate(model, tokenizer, prompts: Sequence[str], cfg: GenerationConfig | None = None, desc: str = "generate") -> list[Generation]:
    """Answer each prompt (a user turn) with the chat template; returns text and token counts."""
    cfg = cfg or GenerationConfig()
    prompt_ids = [chat_ids(tokenizer, p, cfg.system) for p in prompts]
    results = generate_ids(model, tokenizer, prompt_ids, cfg, desc)
    return [
        Generation(prompt=p, text=tokenizer.decode(new, skip_special_tokens=True).strip(), prompt_tokens=n, new_tokens=len(new))
        for p, (new, n) in zip(prompts, results)
    ]


@torch.inference_mode()
def sequence_logprobs(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], *, batch_size: int = 16, max_length: int = 512) -> list[tuple[float, int]]:
    """(sum log p(target | chat prompt), number of target tokens) for each pair."""
    pairs = [encode_pair(tokenizer, p, t, max_length) for p, t in zip(prompts, targets)]
    return _score_pairs(model, tokenizer, pairs, batch_size)


@torch.inference_mode()
def text_logprobs(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16, max_length: int = 256) -> list[tuple[float, int]]:
    """(sum log p, tokens) of plain texts (no chat template), for perplexity of natural text."""
    pairs = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"][:max_length]
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        pairs.append((ids, [-100] + ids[1:]))
    return _score_pairs(model, tokenizer, pairs, batch_size)


def labelled_logits(model, tokenizer, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) for the labelled positions of a batch of (input_ids, labels) pairs.

    Only the positions from the first labelled token on go through the LM head (``logits_to_keep``):
    the prompt's logits are never used, and the head (vocabulary x hidden) is a fifth of a small
    model's FLOPs and most of its activation memory. Targets are -100 where nothing is learned.
    """
    ids, mask, labels = pad_batch([b[0] for b in batch], tokenizer.pad_token_id or 0, left=False, label_seqs=[b[1] for b in batch])
    has = (labels[:, 1:] != -100).any(0).nonzero()
    start = int(has[0]) if len(has) else ids.shape[1] - 2
    keep = torch.arange(start, ids.shape[1] - 1, device=model.device)  # position t predicts token t + 1
    kwargs = {"input_ids": ids.to(model.device), "attention_mask": mask.to(model.device)}
    try:
        logits = model(**kwargs, logits_to_keep=keep).logits
    except TypeError:  # a model class without logits_to_keep: compute all logits, then slice
        logits = model(**kwargs).logits[:, start:-1]
    return logits.float(), labels[:, start + 1 :].to(logits.device)


def token_lp(model, tokenizer, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labelled tokens (0 elsewhere) and their mask; keeps gradients."""
    logits, tgt = labelled_logits(model, tokenizer, batch)
    lp = -torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
    return lp, tgt != -100


def token_logprobs(model, tokenizer, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of the labelled tokens, their count) per (input_ids, labels) pair; keeps gradients."""
    lp, mask = token_lp(model, tokenizer, batch)
    return lp.sum(-1), mask.sum(-1)


def _score_pairs(model, tokenizer, pairs, batch_size) -> list[tuple[float, int]]:
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        lp, n = token_logprobs(model, tokenizer, [pairs[i] for i in idx])
        for row, i in enumerate(idx):
            out[i] = (float(lp[row]), int(n[row]))
    return out


def perplexity(scores: Sequence[tuple[float, int]]) -> float:
    """Token-weighted perplexity from (sum logprob, tokens) pairs."""
    total = sum(n for _, n in scores)
    return math.exp(-sum(s for s, _ in scores) / total) if total else float("nan")
