"""Tokenization with the chat template, shared by generation, training and scoring."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def chat_ids(tokenizer, instruction: str, system: str | None = None) -> list[int]:
    """Token ids of a one-turn chat prompt, ending where the assistant starts to answer."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": instruction}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    return list(ids)


def encode_pair(tokenizer, instruction: str, response: str, max_length: int,
                spans: Sequence[Sequence[int]] | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one chat turn; labels are -100 on the prompt so only the response is learned.

    With ``spans`` (character ranges of the response) only the tokens inside them are learned, by the
    tokenizer's offsets: a forget PEM then learns the target (the names, the code, the toxic sentence)
    and not the chatty frame around it, which negation would otherwise also remove.
    """
    prompt = chat_ids(tokenizer, instruction)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else tokenizer.eos_token_id
    if spans is None:
        answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [end]
        learn = answer
    else:
        enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
        inside = [any(a < e <= b for a, b in spans) for _, e in enc["offset_mapping"]]
        answer = list(enc["input_ids"]) + [end]
        learn = [t if keep else -100 for t, keep in zip(enc["input_ids"], inside)] + [-100]
    if len(prompt) + len(answer) > max_length:
        # keep at least half the window for the response: a long instruction must not mask every label
        keep_prompt = max(max_length - len(answer), max_length // 2)
        if len(prompt) > keep_prompt:
            prompt = prompt[-keep_prompt:]
    ids = (prompt + answer)[:max_length]
    labels = ([-100] * len(prompt) + learn)[:max_length]
    return ids, labels


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, *, left: bool, label_seqs: Sequence[Sequence[int]] | None = None):
    """Pad to a tensor batch. Left padding for generation, right for training."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long) if label_seqs is not None else None
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
        if labels is not None:
            labels[i, sl] = torch.tensor(label_seqs[i], dtype=torch.long)
    return ids, mask, labels
