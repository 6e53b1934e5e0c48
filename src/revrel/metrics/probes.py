"""Likelihood probes: teacher-forced NLL per token of real text, split into target and utility spans.

A sampled metric on a few dozen prompts cannot see a change of a tenth of a nat; the NLL of fixed
real text can, deterministically. Each task declares a :class:`Probe`: texts with character spans
labelled by group (``toxic`` / ``benign``; ``PER`` / ``ORG`` / ``LOC`` / ``MISC``; ``humaneval`` /
``mbpp`` / ``gsm8k``) and which groups are the *target* (to forget) and which the *utility* (to keep).

Scoring tokenizes every text once with offsets, assigns each token to the span that holds its last
character (vectorised, no per-token Python), and runs one batched forward per length bucket with the
LM head only from the first labelled position on. Per text and group it keeps (sum NLL, tokens), so
a before/after comparison is *paired* over the same texts: its standard error is that of the
per-text differences, far smaller than either level's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from revrel.metrics.stats import ratio_se
from revrel.models.encoding import pad_batch
from revrel.models.generation import head_nll, scored_nll


@dataclass
class ProbeText:
    """One real text; ``spans`` are (start char, end char, group) of the parts to score."""

    text: str
    spans: list[tuple[int, int, str]]


@dataclass
class Probe:
    """A task's probe texts and the roles of their groups."""

    texts: list[ProbeText]
    target: list[str]
    utility: list[str]
    note: str = ""  # what the texts are, shown in reports
    groups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.groups:
            self.groups = list(dict.fromkeys([*self.target, *self.utility]))


def doc_start_id(tokenizer) -> int | None:
    """A document separator before raw text, so the first real token is predicted from something."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return vocab["<|endoftext|>"]
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def chat_prefix(tokenizer, instruction: str) -> str:
    """The chat-template text of a user turn up to where the assistant answers (for chat-form probes)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True)


def encode(tokenizer, texts: list[ProbeText], groups: list[str], max_length: int = 1024) -> list[tuple[list[int], np.ndarray]]:
    """(token ids, group index per token; -1 = not scored) for each text, tokenized in one call. A text
    longer than ``max_length`` tokens loses its *start*: the scored parts (a continuation, a reply)
    sit at the end."""
    gid = {g: i for i, g in enumerate(groups)}
    enc = tokenizer([t.text for t in texts], add_special_tokens=False, return_offsets_mapping=True)
    start = doc_start_id(tokenizer)
    special = set(tokenizer.all_special_ids)
    out = []
    for t, ids, offs in zip(texts, enc["input_ids"], enc["offset_mapping"]):
        chars = np.full(len(t.text) + 1, -1, dtype=np.int64)
        for a, b, g in t.spans:
            if g in gid:
                chars[a:b] = gid[g]
        ends = np.asarray([e for _, e in offs], dtype=np.int64) if offs else np.zeros(0, dtype=np.int64)
        lens = np.asarray([e - s for s, e in offs], dtype=np.int64) if offs else np.zeros(0, dtype=np.int64)
        tok_group = np.where(lens > 0, chars[np.maximum(ends - 1, 0)], -1)
        ids = list(ids)
        if start is not None and (not ids or ids[0] not in special):  # chat-form texts already open with a special token
            ids, tok_group = [start] + ids, np.concatenate([[-1], tok_group])
        out.append((ids[-max_length:], tok_group[-max_length:]))
    return out


def _batches(tokenizer, probe: Probe, batch_size: int, max_length: int, device):
    """(text indices, ids, mask, targets, group per target) of each batch with a scored token, by length."""
    encoded = encode(tokenizer, probe.texts, probe.groups, max_length)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids, mask, groups = pad_batch([encoded[i][0] for i in idx], pad, left=False,
                                      label_seqs=[[int(g) if g >= 0 else -100 for g in encoded[i][1]] for i in idx])
        grp = groups[:, 1:].to(device)
        if bool((grp >= 0).any()):
            yield idx, ids.to(device), mask.to(device), ids[:, 1:].to(device), grp


class _Sums:
    """Per text and group, (sum NLL, tokens), filled a batch at a time."""

    def __init__(self, n: int, groups: list[str]) -> None:
        self.groups = groups
        self.sums, self.counts = np.zeros((n, len(groups)), dtype=np.float64), np.zeros((n, len(groups)), dtype=np.int64)

    def add(self, idx, nll: torch.Tensor, grp: torch.Tensor) -> None:
        G, valid = len(self.groups), grp >= 0
        index = torch.where(valid, grp, torch.full_like(grp, G))  # unscored tokens land in a dump column
        per = torch.zeros(len(idx), G + 1, dtype=torch.float64, device=grp.device).scatter_add_(1, index, (nll * valid).double())
        cnt = torch.zeros(len(idx), G + 1, dtype=torch.int64, device=grp.device).scatter_add_(1, index, valid.long())
        self.sums[idx] = per[:, :G].cpu().numpy()
        self.counts[idx] = cnt[:, :G].cpu().numpy()

    def items(self) -> dict[str, np.ndarray]:
        return {g: np.stack([self.sums[:, j], self.counts[:, j]], axis=1) for j, g in enumerate(self.groups)}


@torch.inference_mode()
def score(model, tokenizer, probe: Probe, *, batch_size: int = 16, max_length: int = 1024) -> dict[str, np.ndarray]:
    """Per group, an array (texts, 2) of (sum NLL, tokens) of that group's spans in each text."""
    out = _Sums(len(probe.texts), probe.groups)
    for idx, ids, mask, tgt, grp in _batches(tokenizer, probe, batch_size, max_length, next(model.parameters()).device):
        out.add(idx, scored_nll(model, ids, mask, tgt, grp >= 0), grp)
    return out.items()


class HeadOnlyScorer:
    """:func:`score` for a run of models that differ only in the LM head (suppression's line search): the final
    hidden states at the scored positions are computed once, by the first model scored, and every call applies
    only the current head to them. Exact: the decoder the first call saw must not change while this is in use."""

    def __init__(self, tokenizer, probe: Probe, batch_size: int = 16, max_length: int = 1024) -> None:
        self.tokenizer, self.probe, self.batch_size, self.max_length = tokenizer, probe, batch_size, max_length
        self.cached: list | None = None

    @torch.inference_mode()
    def __call__(self, model) -> dict[str, np.ndarray]:
        if self.cached is None:
            self.cached = []
            decoder = model.get_decoder()
            for idx, ids, mask, tgt, grp in _batches(self.tokenizer, self.probe, self.batch_size, self.max_length, next(model.parameters()).device):
                hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
                rows, cols = (grp >= 0).nonzero(as_tuple=True)
                self.cached.append((idx, hidden[rows, cols].clone(), tgt[rows, cols], rows, cols, grp))
        out, head = _Sums(len(self.probe.texts), self.probe.groups), model.get_output_embeddings()
        for idx, h, t, rows, cols, grp in self.cached:
            nll = torch.zeros(grp.shape, dtype=torch.float32, device=grp.device)
            nll[rows, cols] = head_nll(head, h, t)
            out.add(idx, nll, grp)
        return out.items()


def _pool(items: dict[str, np.ndarray], groups: list[str]) -> np.ndarray:
    """(sum NLL, tokens) per text over several groups (a role)."""
    return sum(items[g] for g in groups)


def _stat(arr: np.ndarray) -> dict:
    has = arr[:, 1] > 0
    s, n = arr[has, 0], arr[has, 1]
    return {"nll": float(s.sum() / n.sum()) if n.sum() else None, "se": ratio_se(s, n), "texts": int(has.sum()), "tokens": int(n.sum())}


def summarize(items: dict[str, np.ndarray], probe: Probe) -> dict:
    """Mean NLL per token with its standard error, per group and per role (target / utility)."""
    out = {"groups": {g: _stat(items[g]) for g in probe.groups},
           "target": _stat(_pool(items, probe.target)), "utility": _stat(_pool(items, probe.utility)),
           "target_groups": list(probe.target), "utility_groups": list(probe.utility)}
    if probe.note:
        out["note"] = probe.note
    return out


def paired_change(before: np.ndarray, after: np.ndarray) -> dict:
    """Paired change of the mean NLL per token (same texts, same tokens)."""
    has = before[:, 1] > 0
    d, n = after[has, 0] - before[has, 0], before[has, 1]
    return {"change": float(d.sum() / n.sum()) if n.sum() else None, "se": ratio_se(d, n)}


def compare(before: dict[str, np.ndarray], after: dict[str, np.ndarray], probe: Probe) -> dict:
    """Change from ``before`` (the original model) in nats/token, per group and role, and the
    selectivity (target change - utility change; its SE treats the two as independent, which
    over-states it when both come from the same texts)."""
    groups = {g: paired_change(before[g], after[g]) for g in probe.groups}
    tgt = paired_change(_pool(before, probe.target), _pool(after, probe.target))
    utl = paired_change(_pool(before, probe.utility), _pool(after, probe.utility))
    sel = None if tgt["change"] is None or utl["change"] is None else tgt["change"] - utl["change"]
    return {"groups": groups, "target": tgt, "utility": utl,
            "selectivity": {"change": sel, "se": float(np.hypot(tgt["se"], utl["se"]))}}


def items_to_json(items: dict[str, np.ndarray]) -> dict[str, list]:
    """Per-text (sum NLL, tokens) as JSON lists, kept so a later run can be compared pairwise."""
    return {g: [[round(float(s), 5), int(n)] for s, n in a] for g, a in items.items()}


def items_from_json(data: dict[str, list]) -> dict[str, np.ndarray]:
    return {g: np.asarray(v, dtype=np.float64).reshape(-1, 2) for g, v in data.items()}


def split_probe(probe: Probe, spans_fn, groups: list[str] | None = None, names: tuple[str, str] = ("in", "out")) -> Probe:
    """The same texts with each span of ``groups`` (default: the target groups) cut in two: the characters
    inside ``spans_fn``'s spans (e.g. toxicity's profane words) become group ``"<g>:in"``, the rest
    ``"<g>:out"``. Scored with :func:`score` and paired with :func:`compare`, this says how much of a
    target change sits on the few tokens an oracle marks and how much on the text around them, and
    what share of the tokens each part is: the ceiling of a method that only moves the marked ones.

    ``spans_fn`` takes the texts and returns (start, end) character spans per text, as ``Task.target_spans`` does.
    """
    groups = list(probe.target if groups is None else groups)
    marks = spans_fn([t.text for t in probe.texts])
    texts = []
    for t, mine in zip(probe.texts, marks):
        spans: list[tuple[int, int, str]] = []
        for a, b, g in t.spans:
            if g not in groups:
                spans.append((a, b, g))
                continue
            pos = a
            for s, e in sorted((max(s, a), min(e, b)) for s, e in mine if s < b and e > a):
                if s > pos:
                    spans.append((pos, s, f"{g}:{names[1]}"))
                spans.append((max(s, pos), e, f"{g}:{names[0]}"))
                pos = max(pos, e)
            if pos < b:
                spans.append((pos, b, f"{g}:{names[1]}"))
        texts.append(ProbeText(t.text, [s for s in spans if s[1] > s[0]]))
    parts = [f"{g}:{n}" for g in groups for n in names]
    rename = lambda role: [x for g in role for x in ([f"{g}:{n}" for n in names] if g in groups else [g])]  # noqa: E731
    return Probe(texts, target=rename(probe.target), utility=rename(probe.utility), note=f"{probe.note} (split: {', '.join(parts)})")
