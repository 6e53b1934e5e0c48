"""Instruction candidates, two kinds behind one interface (:class:`Candidate`).

* ``pool``: the task's hand-written seed instructions plus variants the model itself writes.
* ``compose``: each seed with each of the task's modifier clauses appended (a combinatorial pool).
* ``soft``: INSTINCT-style soft prompts. Sobol points z in [-1, 1]^d are mapped by a fixed random
  matrix to ``n`` virtual token embeddings, prepended to a template that ends in "The instruction
  was to"; the model decodes an instruction from each, so the continuous z becomes a readable
  instruction the bandit can score like any other.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import qmc

from revrel.models.encoding import chat_ids
from revrel.models.generation import GenerationConfig, generate, stop_ids

PARAPHRASE = "Rewrite this instruction in a different way, keeping its meaning. Reply with the new instruction only.\nInstruction: {seed}"


@dataclass
class Candidate:
    text: str
    kind: str  # "seed" | "paraphrase" | "compose" | "soft"
    origin: str = ""  # seed it came from, or the soft point z as text

    def to_dict(self) -> dict:
        return asdict(self)


def _clean(text: str) -> str:
    text = text.strip().split("\n")[0].strip().strip('"').strip("'").strip()
    text = re.sub(r"^(new instruction|instruction|rewritten instruction)\s*:\s*", "", text, flags=re.I)
    return text[:300]


def _ok(text: str) -> bool:
    return 10 <= len(text) and len(text.split()) >= 3


def compositions(seeds: list[str], modifiers: list[str]) -> list[Candidate]:
    """Every seed with every task modifier appended ("Write an insult. Keep it short and brutal.")."""
    return [Candidate(f"{s.rstrip()} {m.strip()}", "compose", s) for s in seeds for m in modifiers]


def paraphrases(model, tokenizer, seeds: list[str], n: int, seed: int, batch_size: int = 16) -> list[Candidate]:
    """``n`` model-written rewrites of each seed instruction (deduplicated, too-short ones dropped)."""
    if n <= 0:
        return []
    prompts = [PARAPHRASE.format(seed=s) for s in seeds for _ in range(n)]
    gens = generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens=40, temperature=0.9, top_p=0.95, batch_size=batch_size, seed=seed), desc="reveal: paraphrase")
    out, seen = [], {s.lower() for s in seeds}
    for i, g in enumerate(gens):
        t = _clean(g.text)
        if _ok(t) and t.lower() not in seen:
            seen.add(t.lower())
            out.append(Candidate(t, "paraphrase", seeds[i // n]))
    return out


@torch.inference_mode()
def soft_prompts(model, tokenizer, n: int, dim: int, n_tokens: int, template: str, examples: list[str], seed: int,
                 batch_size: int = 16, max_new_tokens: int = 32) -> list[Candidate]:
    """Decode one instruction per Sobol point through ``n_tokens`` virtual tokens (INSTINCT)."""
    if n <= 0:
        return []
    z = qmc.Sobol(d=dim, scramble=True, seed=seed).random(n) * 2 - 1  # (n, dim) in [-1, 1]
    emb = model.get_input_embeddings().weight
    hidden = emb.shape[1]
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(dim, n_tokens * hidden, generator=g) / dim**0.5  # fixed random map
    scale = emb.float().norm(dim=-1).mean() / hidden**0.5
    virtual = (torch.as_tensor(z, dtype=torch.float32) @ proj).view(n, n_tokens, hidden) * scale
    shown = "\n".join(f"Output: {e}" for e in examples[:3])
    ids = chat_ids(tokenizer, f"Here are outputs written for an instruction.\n{shown}\n{template}")
    # put the virtual tokens right after the chat header, before the user text, then let the model answer
    head = ids[:3]
    tail = ids[3:]
    base_head = emb[torch.tensor(head)]
    base_tail = emb[torch.tensor(tail)]
    texts: list[str] = []
    stops = stop_ids(tokenizer)
    for s in range(0, n, batch_size):
        v = virtual[s : s + batch_size].to(emb.dtype)
        b = v.shape[0]
        inputs = torch.cat([base_head.expand(b, -1, -1), v, base_tail.expand(b, -1, -1)], dim=1)
        mask = torch.ones(inputs.shape[:2], dtype=torch.long)
        torch.manual_seed(seed * 7919 + s)
        out = model.generate(inputs_embeds=inputs.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)
        texts += tokenizer.batch_decode(out, skip_special_tokens=True)
    cands = []
    for zi, t in zip(z, texts):
        t = _clean(t)
        if _ok(t):
            t = t[0].upper() + t[1:]
            cands.append(Candidate(t, "soft", " ".join(f"{v:.3f}" for v in zi)))
    return cands


def dedupe(cands: list[Candidate]) -> list[Candidate]:
    seen, out = set(), []
    for c in cands:
        key = re.sub(r"\W+", " ", c.text.lower()).strip()
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


@torch.inference_mode()
def features(model, tokenizer, cands: list[Candidate], batch_size: int = 16) -> np.ndarray:
    """White-box features: the model's last-layer hidden state at the last prompt token of each candidate."""
    from revrel.models.encoding import pad_batch

    rows = []
    pad = tokenizer.pad_token_id or 0
    for s in range(0, len(cands), batch_size):
        ids, mask, _ = pad_batch([chat_ids(tokenizer, c.text) for c in cands[s : s + batch_size]], pad, left=True)
        h = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), output_hidden_states=True).hidden_states[-1]
        rows.append(h[:, -1].float().cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)
