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

from revrel.models.encoding import chat_ids, encode_pair, pad_batch
from revrel.progress import progress_bar


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


class NucleusSampler:
    """Temperature + exact top-p sampling as a logits processor that returns a one-hot row.

    Why not ``do_sample=True``: on CPU, transformers' top-p sorts the whole vocabulary every step
    and ``multinomial`` draws an exponential variate per vocabulary entry; for a 49k vocabulary
    that was a third of each decoding step of the 135M default. Here a partial ``topk`` finds the
    nucleus (probabilities as exp(logit - logsumexp): no full softmax; rows whose nucleus is wider
    than ``k`` widen to ``wide_k``, and only rows wider still sort the vocabulary), one uniform draw
    per row picks the token by inverse CDF, and generation runs in greedy mode, whose argmax then
    takes the chosen token. Same distribution (the smallest prefix of the sorted tokens with mass >= top_p),
    drawn from torch's global generator, so seeding stays reproducible.
    """

    def __init__(self, temperature: float, top_p: float, k: int = 512, wide_k: int = 8192) -> None:
        self.temperature, self.top_p, self.k, self.wide_k = temperature, top_p, k, wide_k

    def _pick(self, top: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """One token per row from descending-sorted probs ``top`` (ids ``idx``) by inverse CDF in the nucleus."""
        cdf = top.cumsum(-1)
        mass = torch.where(cdf - top < self.top_p, top, torch.zeros_like(top)).sum(-1, keepdim=True)
        pos = torch.searchsorted(cdf, torch.rand(cdf.shape[0], 1, device=cdf.device) * mass).clamp_(max=cdf.shape[-1] - 1)
        return idx.gather(-1, pos).squeeze(-1)

    def _top(self, logits: torch.Tensor, lse: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most likely tokens' probabilities (descending) and ids: exp(logit - logsumexp), no full softmax."""
        val, idx = logits.topk(min(k, logits.shape[-1]), dim=-1)
        return (val - lse).exp_(), idx

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature if self.temperature != 1.0 else scores.float()
        lse = logits.logsumexp(-1, keepdim=True)
        top, idx = self._top(logits, lse, self.k)
        token = self._pick(top, idx)
        # rows whose nucleus extends past the k most likely tokens (a flat distribution at temperature 1): widen to
        # wide_k, then to the whole vocabulary only for rows wider still
        rows = torch.arange(logits.shape[0], device=logits.device)
        for k in (self.wide_k, logits.shape[-1]):
            wide = top.sum(-1) < self.top_p
            if not bool(wide.any()) or top.shape[-1] >= logits.shape[-1]:
                break
            rows = rows[wide]
            top, idx = self._top(logits[rows], lse[rows], k)
            token[rows] = self._pick(top, idx)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, token.unsqueeze(-1), 0.0)
        return out


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


def fast_lm_head(model) -> None:
    """Give the LM head a contiguous input (idempotent).

    transformers slices the last position (``hidden[:, -1:, :]``) before the head during prefill; a
    non-contiguous 3-D input makes bf16 ``matmul`` on CPU fall back to ``bmm`` with the weight
    expanded per row, a 1.8 GB copy per batch of 32 on the 135M default (3.6 s, most of a 25-token
    generation). Measured: 82 -> 140 tokens/s on 2 cores (bf16).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_revrel_contiguous", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._revrel_contiguous = True


def _cut_at_stop(row: list[int], stops: list[int]) -> list[int]:
    return row[: next((j for j, t in enumerate(row) if t in stops), len(row))]


@torch.inference_mode()
def generate_ids(model, tokenizer, prompt_ids: Sequence[list[int]], cfg: GenerationConfig, desc: str = "generate") -> list[tuple[list[int], int]]:
    """Sample continuations for pre-tokenized prompts; returns (new token ids, prompt length) in input order."""
    stops = stop_ids(tokenizer)
    if getattr(model, "is_vllm", False):  # optional vLLM backend (revrel.models.vllm_backend)
        done = model.generate_ids(prompt_ids, cfg, stops)
        return [(_cut_at_stop(row, stops), n) for row, n in done]
    r = _run_length(prompt_ids) if cfg.temperature > 0 else 1
    r = r if r <= cfg.batch_size else 1  # a batch holds every sample of its prompts
    unique = prompt_ids[::r]
    order = sorted(range(len(unique)), key=lambda i: len(unique[i]))
    out: list[tuple[list[int], int] | None] = [None] * len(prompt_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    per = max(1, cfg.batch_size // r)  # unique prompts per batch: each batch still decodes about batch_size rows
    batches = [order[i : i + per] for i in range(0, len(order), per)]
    fast_lm_head(model)
    from transformers import LogitsProcessorList

    sampler = LogitsProcessorList([NucleusSampler(cfg.temperature, cfg.top_p)]) if cfg.temperature > 0 else None
    for b, idx in enumerate(progress_bar(batches, desc=desc, disable=not cfg.progress or len(batches) < 2)):
        ids, mask, _ = pad_batch([unique[i] for i in idx], pad, left=True)
        ids, mask = ids.to(model.device), mask.to(model.device)
        torch.manual_seed(cfg.seed * 100_003 + b)
        cache = None
        if r > 1 and ids.shape[1] > 1:  # prefill each prompt once, then give every sample its own copy of the cache
            cache = _prefill(model, ids[:, :-1], mask[:, :-1])
            cache.batch_repeat_interleave(r)
            ids, mask = ids.repeat_interleave(r, 0), mask.repeat_interleave(r, 0)
        elif r > 1:
            ids, mask = ids.repeat_interleave(r, 0), mask.repeat_interleave(r, 0)
        gen = model.generate(
            input_ids=ids, attention_mask=mask, **({} if cache is None else {_cache_kwarg(): cache}),
            max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens or None, do_sample=False,
            temperature=None, top_p=None, top_k=None, logits_processor=sampler,
            pad_token_id=pad, eos_token_id=stops,
        )
        new = gen[:, ids.shape[1] :].tolist()
        for row, (i, j) in zip(new, [(i, j) for i in idx for j in range(r)]):
            out[i * r + j] = (_cut_at_stop(row, stops), len(unique[i]))
    return out  # type: ignore[return-value]


def _cache_kwarg() -> str:
    """generate()'s name for a prefilled cache: ``cache`` from transformers 5.24 on, ``past_key_values`` before."""
    try:
        from transformers.generation.utils import ALL_CACHE_NAMES
    except ImportError:
        return "past_key_values"
    return "cache" if "cache" in ALL_CACHE_NAMES else "past_key_values"


def _run_length(prompt_ids: Sequence[list[int]]) -> int:
    """r when the prompts come as consecutive runs of r identical prompts (r samples per prompt), else 1."""
    n = len(prompt_ids)
    r = 1
    while r < n and prompt_ids[r] == prompt_ids[0]:
        r += 1
    if r == 1 or n % r:
        return 1
    same = all(prompt_ids[i] == prompt_ids[i - i % r] for i in range(n))
    distinct = all(prompt_ids[i] != prompt_ids[i - r] for i in range(r, n, r))
    return r if same and distinct else 1


def _prefill(model, ids: torch.Tensor, mask: torch.Tensor):
    """The KV cache of a left-padded prompt batch, with the positions generate() itself would use."""
    from transformers import DynamicCache

    pos = (mask.long().cumsum(-1) - 1).masked_fill_(mask == 0, 1)
    cache = DynamicCache()
    model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1, **{_cache_kwarg(): cache})
    assert cache.get_seq_length() == ids.shape[1], "the prefill did not fill the cache"
    return cache


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


def scored_nll(model, ids: torch.Tensor, mask: torch.Tensor, tgt: torch.Tensor, valid: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """NLL of ``tgt`` (batch, T-1) at the ``valid`` positions (zeros elsewhere).

    The LM head runs only on the hidden states of scored positions, in chunks: on a 49k vocabulary,
    logits for every position of a batch of long texts (a code prompt before its solution) would be
    gigabytes and most of the probe's time. Models without a separable decoder fall back to full logits.
    """
    nll = torch.zeros(tgt.shape, dtype=torch.float32, device=tgt.device)
    decoder, head = getattr(model, "get_decoder", lambda: None)(), model.get_output_embeddings()
    if decoder is None or head is None:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), tgt, reduction="none") * valid
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    rows, cols = valid.nonzero(as_tuple=True)
    nll[rows, cols] = head_nll(head, hidden[rows, cols], tgt[rows, cols], chunk)
    return nll


def head_nll(head, hidden: torch.Tensor, tgt: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """NLL of ``tgt`` under ``head`` applied to final hidden states (positions x hidden), ``chunk`` rows at a time:
    the logits of a 49k vocabulary for every position at once would be gigabytes."""
    out = torch.empty(len(tgt), dtype=torch.float32, device=tgt.device)
    for s in range(0, len(tgt), chunk):
        out[s : s + chunk] = torch.nn.functional.cross_entropy(head(hidden[s : s + chunk]).float(), tgt[s : s + chunk], reduction="none")
    return out


def _score_pairs(model, tokenizer, pairs, batch_size) -> list[tuple[float, int]]:
    """No gradients here, so the LM head runs on the labelled positions only (:func:`scored_nll`)."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids, mask, labels = pad_batch([pairs[i][0] for i in idx], tokenizer.pad_token_id or 0, left=False, label_seqs=[pairs[i][1] for i in idx])
        device = next(model.parameters()).device
        tgt = labels[:, 1:].to(device)
        valid = tgt != -100
        nll = scored_nll(model, ids.to(device), mask.to(device), tgt.clamp(min=0), valid)
        lp, n = -nll.sum(-1), valid.sum(-1)  # nll is zero off the labelled positions
        for row, i in enumerate(idx):
            out[i] = (float(lp[row]), int(n[row]))
    return out


def perplexity(scores: Sequence[tuple[float, int]]) -> float:
    """Token-weighted perplexity from (sum logprob, tokens) pairs."""
    total = sum(n for _, n in scores)
    return math.exp(-sum(s for s, _ in scores) / total) if total else float("nan")
