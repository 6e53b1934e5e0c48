"""Output suppression: lower, in the weights, the logits of the tokens that the revealed target is made of.

Why beside negation and pruning: on toxicity the target is a few words (profanity, insults: 11% of the
tokens of a real toxic continuation on the dev probe), and what a PEM or a pruned neuron changes is
largely shared with the benign text around them. The output side is where those words are one row
each: the unembedding row of a token that occurs inside the revealed target spans and hardly ever on
the keep side can be pushed down without touching any other token's logit.

How it is stored: LLaMA-style heads have no bias, but the final hidden states have a direction ``v``
along which every position projects to about the same value (``h . v = 1 +- 0.04`` on the default
model, fitted by ridge least squares on the rows' own hidden states), so ``W[t] -= strength * v`` lowers
token ``t``'s logit by about ``strength`` nats everywhere. A tied head is untied first (the input
embeddings stay as they are: the model still *reads* the words). The edit is an ordinary weight, so it
survives ``save_pretrained``, the safetensors checkpoint and GGUF export.

revrel's own data only: the target tokens are the task's spans in the *revealed* forget set (e.g.
toxicity's profane words), the keep side the self-generated keep texts and / or the keep spans beside
the target (``release.prune_keep``).
"""

from __future__ import annotations

from collections import Counter

import torch

from revrel.errors import RevrelError
from revrel.models.encoding import encode_pair, pad_batch
from revrel.release.sweep import halving_search


def learned_tokens(tokenizer, rows: list[dict], max_length: int) -> Counter:
    """How often each token id is a learned token of ``rows`` (their ``spans`` where they carry them)."""
    counts: Counter = Counter()
    for r in rows:
        _, labels = encode_pair(tokenizer, r["instruction"], r["response"], max_length, r.get("spans"))
        counts.update(t for t in labels if t != -100)
    return counts


@torch.no_grad()
def expected_tokens(model, tokenizer, rows: list[dict], max_length: int, batch_size: int = 8) -> Counter:
    """How often the model itself expects each token on ``rows``: the sum of its next-token probabilities over
    the positions that predict their learned tokens. A word piece that a small keep set happens to lack
    ('st', 'Th') is still expected there, so it is not taken for a target token (release.suppress_prior)."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total = torch.zeros(head.weight.shape[0], dtype=torch.float64)
    for b in range(0, len(rows), batch_size):
        enc = [encode_pair(tokenizer, r["instruction"], r["response"], max_length, r.get("spans")) for r in rows[b : b + batch_size]]
        ids, att, labels = pad_batch([e[0] for e in enc], pad, left=False, label_seqs=[e[1] for e in enc])
        h = decoder(input_ids=ids, attention_mask=att).last_hidden_state[:, :-1][labels[:, 1:] != -100]
        for c in range(0, len(h), 512):
            total += torch.softmax(head(h[c : c + 512]).float(), -1).sum(0).double()
    return Counter({i: float(v) for i, v in enumerate(total.tolist()) if v > 1e-3})


def pick_tokens(tokenizer, target_rows: list[dict], keep_rows: list[dict], n: int, max_length: int,
                extra_keep: list[dict] | None = None, expected: Counter | None = None, min_chars: int = 0) -> tuple[list[int], list[dict]]:
    """The ``n`` token ids most specific to the target: count inside the target spans / (1 + count on the keep
    side, plus the model's ``expected`` count there when given), ties by the target count; special tokens never,
    nor tokens with fewer than ``min_chars`` characters besides a leading space (release.suppress_min_chars).
    Returns the ids and a readable table of them."""
    inside = learned_tokens(tokenizer, target_rows, max_length)
    keep = learned_tokens(tokenizer, keep_rows, max_length) + learned_tokens(tokenizer, extra_keep or [], max_length)
    for t, v in (expected or {}).items():
        keep[t] += v
    special = set(tokenizer.all_special_ids)
    ranked = sorted((t for t in inside if t not in special and len(tokenizer.decode([t]).removeprefix(" ")) >= min_chars),
                    key=lambda t: (-inside[t] / (1 + keep[t]), -inside[t], t))[:n]
    if not ranked:
        raise RevrelError("release.suppress: the forget rows have no target tokens to suppress (does the task mark target spans?)")
    return ranked, [{"token": tokenizer.decode([t]), "id": t, "target": inside[t], "keep": round(keep[t], 2)} for t in ranked]


@torch.no_grad()
def constant_direction(model, tokenizer, rows: list[dict], max_length: int, batch_size: int = 8, ridge: float = 1e-2) -> tuple[torch.Tensor, dict]:
    """A direction ``v`` with ``h . v ~= 1`` for the final hidden states ``h`` at the response positions of
    ``rows`` (ridge least squares); with it a row edit ``-s * v`` acts as a logit bias of ``-s``. Also the
    fit's spread (std of ``h . v``), which says how far the edit is from an exact bias."""
    decoder = model.get_decoder()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    d = model.get_output_embeddings().weight.shape[1]
    gram, rhs, hs = torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), []
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(rows), batch_size):
            enc = [encode_pair(tokenizer, r["instruction"], r["response"], max_length) for r in rows[b : b + batch_size]]
            ids, att, labels = pad_batch([e[0] for e in enc], pad, left=False, label_seqs=[e[1] for e in enc])
            h = decoder(input_ids=ids, attention_mask=att).last_hidden_state[labels != -100].to(torch.float64)
            gram += h.T @ h
            rhs += h.sum(0)
            hs.append(h[:64])
    finally:
        model.train(was_training)
    if not hs:
        raise RevrelError("release.suppress: no rows to fit the bias direction on")
    v = torch.linalg.solve(gram + ridge * torch.eye(d, dtype=torch.float64), rhs)
    proj = torch.cat(hs) @ v
    return v.to(torch.float32), {"mean": round(float(proj.mean()), 4), "std": round(float(proj.std()), 4)}


def untie_output(model) -> bool:
    """Give the LM head its own weight (a copy of the tied embedding), so editing it leaves the input
    embeddings alone; the config says so, so a saved model loads untied. Returns whether it was tied."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None:
        raise RevrelError("release.suppress: the model has no separate output embedding to edit")
    tied = head.weight.data_ptr() == emb.weight.data_ptr()
    if tied:
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=emb.weight.requires_grad)
    model.config.tie_word_embeddings = False
    if getattr(model.config, "get_text_config", None):
        model.config.get_text_config().tie_word_embeddings = False
    return tied


class SuppressSweep:
    """Suppression strength without re-measuring: ``set(strength)`` gives the model whose chosen tokens' logits
    are lowered by about ``strength`` nats from the head as it was at construction (the same interface as
    :class:`revrel.release.prune.PruneSweep` and :class:`revrel.release.sweep.NegationSweep`)."""

    def __init__(self, model, tokenizer, target_rows: list[dict], keep_rows: list[dict], n: int, max_length: int,
                 extra_keep: list[dict] | None = None, prior: bool = False, min_chars: int = 0) -> None:
        self.model = model
        self.tied = untie_output(model)
        expected = expected_tokens(model, tokenizer, keep_rows + (extra_keep or []), max_length) if prior else None
        self.tokens, self.table = pick_tokens(tokenizer, target_rows, keep_rows, n, max_length, extra_keep, expected, min_chars)
        self.v, self.fit = constant_direction(model, tokenizer, target_rows + keep_rows, max_length)
        self.index = torch.tensor(self.tokens)
        self.original = model.get_output_embeddings().weight[self.index].detach().clone()
        self.strength = 0.0

    @classmethod
    def from_config(cls, model, tokenizer, target_rows: list[dict], keep_rows: list[dict], cfg, extra_keep: list[dict] | None = None):
        """The sweep a Release config asks for (``cfg``: a ReleaseConfig's suppress, max_length, suppress_prior, suppress_min_chars)."""
        return cls(model, tokenizer, target_rows, keep_rows, cfg.suppress, cfg.max_length, extra_keep, cfg.suppress_prior, cfg.suppress_min_chars)

    def set(self, strength: float):
        w = self.model.get_output_embeddings().weight
        with torch.no_grad():
            w[self.index] = self.original - strength * self.v.to(w.dtype)
        self.strength = strength
        return self.model

    def delta(self) -> torch.Tensor:
        """The rows' change now (tokens x hidden), what a checkpoint keeps."""
        return self.model.get_output_embeddings().weight[self.index].detach() - self.original

    def info(self) -> dict:
        return {"tokens": len(self.tokens), "strength": self.strength, "untied": self.tied, "fit": self.fit, "top": self.table[:20]}


def suppress_with_budget(model, tokenizer, target_rows: list[dict], keep_rows: list[dict], cfg, measure, limit: float,
                         extra_keep: list[dict] | None = None) -> tuple[SuppressSweep | None, dict]:
    """Release by output suppression: ``cfg.suppress`` tokens at ``cfg.suppress_strength``, the strength halved
    (at most ``cfg.line_search`` tries) while ``measure(model)`` exceeds ``limit``, as negation halves lambda.
    Returns the sweep at the kept strength (None when none met the budget: the head is restored) and what was tried."""
    sweep = SuppressSweep.from_config(model, tokenizer, target_rows, keep_rows, cfg, extra_keep)
    strength, searched, ratio = halving_search(sweep, cfg.suppress_strength, cfg.line_search, measure, limit, "strength")
    info = sweep.info() | {"strength": strength, "line_search": searched, "probe_ppl_ratio": ratio}
    return (sweep if strength is not None else None), info
