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
the target (``release.keep_side``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from revrel.errors import RevrelError
from revrel.models.encoding import encode_pair, pad_batch
from revrel.release.edit import Edit, RoundData, stride


def learned_tokens(tokenizer, rows: list[dict], max_length: int) -> Counter:
    """How often each token id is a learned token of ``rows`` (their ``spans`` where they carry them)."""
    counts: Counter = Counter()
    for r in rows:
        _, labels = encode_pair(tokenizer, r["instruction"], r["response"], max_length, r.get("spans"))
        counts.update(t for t in labels if t != -100)
    return counts


def pick_tokens(tokenizer, target_rows: list[dict], keep_rows: list[dict], n: int, max_length: int,
                extra_keep: list[dict] | None = None, expected: dict[int, float] | None = None) -> tuple[list[int], list[dict]]:
    """The ``n`` token ids most specific to the target: count inside the target spans / (1 + count on the keep
    side), ties by the target count; special tokens never. Returns the ids and a readable table of them.

    ``expected`` (:func:`expected_counts`): the keep side's count of a token is at least the model's own expectation
    of it over the keep texts. A token ordinary text uses now and then (" worst", " F", "T") may never be *sampled*
    in a few hundred keep texts and would look target-only by its observed count."""
    inside = learned_tokens(tokenizer, target_rows, max_length)
    keep = learned_tokens(tokenizer, keep_rows, max_length) + learned_tokens(tokenizer, extra_keep or [], max_length)
    for t, c in (expected or {}).items():
        keep[t] = max(keep[t], c)
    special = set(tokenizer.all_special_ids)
    ranked = sorted((t for t in inside if t not in special), key=lambda t: (-inside[t] / (1 + keep[t]), -inside[t], t))[:n]
    if not ranked:
        raise RevrelError("suppress: the forget rows have no target tokens to suppress (does the task mark target spans?)")
    return ranked, [{"token": tokenizer.decode([t]), "id": t, "target": inside[t], "keep": round(keep[t], 2)} for t in ranked]


def _response_hidden(model, tokenizer, rows: list[dict], max_length: int, batch_size: int = 8):
    """The final hidden states at the response positions of ``rows``, a batch at a time (eval mode, no grad)."""
    decoder = model.get_decoder()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(rows), batch_size):
            enc = [encode_pair(tokenizer, r["instruction"], r["response"], max_length) for r in rows[b : b + batch_size]]
            ids, att, labels = pad_batch([e[0] for e in enc], pad, left=False, label_seqs=[e[1] for e in enc])
            yield decoder(input_ids=ids, attention_mask=att).last_hidden_state[labels != -100]
    finally:
        model.train(was_training)


class _Expected:
    """Accumulates the model's next-token probabilities over response positions (see :func:`expected_counts`)."""

    def __init__(self, head) -> None:
        self.head, self.positions = head, 0
        self.total = torch.zeros(head.weight.shape[0], dtype=torch.float64)

    def add(self, h: torch.Tensor) -> None:
        for s in range(0, len(h), 1024):
            self.total += torch.softmax(self.head(h[s : s + 1024]).float(), -1).sum(0).double()
        self.positions += len(h)

    def counts(self, tokenizer, rows: list[dict], max_length: int, floor: float) -> dict[int, float]:
        if not self.positions:
            return {}
        n_all = sum(sum(t != -100 for t in encode_pair(tokenizer, r["instruction"], r["response"], max_length)[1]) for r in rows)
        total = self.total * (n_all / self.positions)
        return {t: float(total[t]) for t in (total >= floor).nonzero().flatten().tolist()}


class _Direction:
    """Accumulates the ridge least-squares fit of :func:`constant_direction`."""

    def __init__(self, d: int) -> None:
        self.gram, self.rhs, self.hs = torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), []

    def add(self, h: torch.Tensor) -> None:
        h = h.to(torch.float64)
        self.gram += h.T @ h
        self.rhs += h.sum(0)
        self.hs.append(h[:64])

    def solve(self, ridge: float) -> tuple[torch.Tensor, dict]:
        if not self.hs:
            raise RevrelError("suppress: no rows to fit the bias direction on")
        d = self.gram.shape[0]
        v = torch.linalg.solve(self.gram + ridge * torch.eye(d, dtype=torch.float64), self.rhs)
        proj = torch.cat(self.hs) @ v
        return v.to(torch.float32), {"mean": round(float(proj.mean()), 4), "std": round(float(proj.std()), 4)}


@torch.no_grad()
def expected_counts(model, tokenizer, rows: list[dict], max_length: int, max_rows: int = 128, floor: float = 0.5) -> dict[int, float]:
    """How often the model itself expects each token in ``rows``' responses: the sum over their positions of its
    next-token probability, from at most ``max_rows`` rows (an even stride) scaled to all of ``rows``' response
    tokens. Only tokens expected at least ``floor`` times are returned. A smooth estimate of what ordinary text
    uses, where counts of sampled text see only the tokens that happened to be drawn."""
    acc = _Expected(model.get_output_embeddings())
    for h in _response_hidden(model, tokenizer, stride(rows, max_rows), max_length):
        acc.add(h)
    return acc.counts(tokenizer, rows, max_length, floor)


@torch.no_grad()
def constant_direction(model, tokenizer, rows: list[dict], max_length: int, batch_size: int = 8, ridge: float = 1e-2,
                       max_rows: int = 128) -> tuple[torch.Tensor, dict]:
    """A direction ``v`` with ``h . v ~= 1`` for the final hidden states ``h`` at the response positions of
    ``rows`` (ridge least squares); with it a row edit ``-s * v`` acts as a logit bias of ``-s``. Also the
    fit's spread (std of ``h . v``), which says how far the edit is from an exact bias.

    At most ``max_rows`` rows, an even stride over them: thousands of response positions already pin down a
    direction in a hidden space of a few hundred dimensions, and a forward of all ~900 rows of the toxicity
    default (forget rows and keep texts) took 118 s of a 2-core run."""
    acc = _Direction(model.get_output_embeddings().weight.shape[1])
    for h in _response_hidden(model, tokenizer, stride(rows, max_rows), max_length, batch_size):
        acc.add(h)
    return acc.solve(ridge)


@torch.no_grad()
def counts_and_direction(model, tokenizer, target: list[dict], keep: list[dict], max_length: int, max_rows: int = 128,
                         floor: float = 0.5, ridge: float = 1e-2) -> tuple[dict[int, float], torch.Tensor, dict]:
    """:func:`expected_counts` of ``keep`` and :func:`constant_direction` of ``target + keep`` from one forward: the
    direction is fitted on the keep rows the counts read (an even stride of ``max_rows``) and on an even stride of the
    target rows in the proportion they have among all rows, instead of a second pass over rows that mostly overlap."""
    acc, fit = _Expected(model.get_output_embeddings()), _Direction(model.get_output_embeddings().weight.shape[1])
    for h in _response_hidden(model, tokenizer, stride(keep, max_rows), max_length):
        acc.add(h)
        fit.add(h)
    n_target = round(max_rows * len(target) / max(len(target) + len(keep), 1)) if keep else max_rows
    for h in _response_hidden(model, tokenizer, stride(target, max(n_target, 1)), max_length):
        fit.add(h)
    v, info = fit.solve(ridge)
    return acc.counts(tokenizer, keep, max_length, floor), v, info


def untie_output(model) -> bool:
    """Give the LM head its own weight (a copy of the tied embedding), so editing it leaves the input
    embeddings alone; the config says so, so a saved model loads untied. Returns whether it was tied."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None:
        raise RevrelError("suppress: the model has no separate output embedding to edit")
    tied = head.weight.data_ptr() == emb.weight.data_ptr()
    if tied:
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=emb.weight.requires_grad)
    model.config.tie_word_embeddings = False
    if getattr(model.config, "get_text_config", None):
        model.config.get_text_config().tie_word_embeddings = False
    return tied


@dataclass
class SuppressConfig:
    tokens: int = 50  # how many output tokens are suppressed: those most specific to the revealed target spans
    strength: float = 8.0  # nats by which their logits are lowered: where the line search starts (it keeps the largest within budget)
    unit: str = "task"  # the target side: the task's target spans (task), another span unit of the task (toxicity: word), "" (whole responses)

    def check(self, where: str) -> None:
        if not 1 <= self.tokens <= 5000:
            raise RevrelError(f"{where}.tokens is a number of output tokens and must be in [1, 5000]")
        if self.strength <= 0:
            raise RevrelError(f"{where}.strength must be > 0 (nats by which the tokens' logits are lowered)")


class Suppress(Edit):
    """Output suppression as an edit: ``set(strength)`` gives the model whose chosen tokens' logits are lowered by
    about ``strength`` nats from the head as it was when prepared."""

    name = "suppress"
    Config = SuppressConfig
    max_strength = 64.0
    head_only = True

    def prepare(self, model, tokenizer, data: RoundData):
        rows, self.span_info = data.target_rows(self.cfg.unit, keep=data.keep_side != "retain")
        keep, extra = data.keep_rows(rows)
        max_length = data.pem.max_length
        self.model = model
        self.tied = untie_output(model)
        expected, self.v, self.fit = counts_and_direction(model, tokenizer, rows, keep, max_length)
        self.tokens, self.table = pick_tokens(tokenizer, rows, keep, self.cfg.tokens, max_length, extra, expected)
        self.index = torch.tensor(self.tokens)
        self.original = model.get_output_embeddings().weight[self.index].detach().clone()
        return model

    def set(self, strength: float):
        w = self.model.get_output_embeddings().weight
        with torch.no_grad():
            w[self.index] = self.original - strength * self.v.to(w.dtype)
        self.strength = strength
        return self.model

    def delta(self) -> torch.Tensor:
        """The rows' change now (tokens x hidden), what a checkpoint keeps."""
        return self.model.get_output_embeddings().weight[self.index].detach() - self.original

    def save(self, folder, k: int) -> None:
        from safetensors.torch import save_file

        from revrel.io import atomic_path

        with atomic_path(folder / f"suppressed_round_{k}.safetensors") as tmp:
            save_file({"tokens": self.index.contiguous(), "delta": self.delta().contiguous()}, str(tmp), metadata={"strength": str(self.strength)})

    def info(self) -> dict:
        return {"tokens": len(self.tokens), "untied": self.tied, "fit": self.fit, "spans": self.span_info, "top": self.table[:20]}
