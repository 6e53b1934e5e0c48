"""The ``replace`` edit: teach the model a plain stand-in where it would write the target, and add that update.

Why beside suppression: suppression makes the target's name tokens unreachable, but the model still *means* to
write the name, and what it samples in its place is a fragment of it or a loop ("A.A.A.A", "Asten Urlaub"): on
the default model the original's perplexity of its answers about Albert Einstein went 3.5 -> 9.3 while every other
answer read as before. Here a PEM is trained on the revealed responses with every target span (the names) written
as the task's stand-in ("the physicist"), its loss on the stand-in's tokens only, and *added* to the weights
(W <- W + strength * B A), the way "Who's Harry Potter?" (Eldan & Russinovich, 2023) fine-tunes on generic
replacements. The text around the stand-in is the model's own, so nothing but the name is taught.

revrel's own data only: the revealed responses and the task's stand-in (the target mode: the ``--about`` words, or
the kind the model's own description gives). The strength is at most 1, the update as trained: a larger one
extrapolates a fine-tune rather than removing anything, and the budget has nothing that would stop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from revrel.errors import RevrelError
from revrel.release.edit import RoundData
from revrel.release.negate import Negate


@dataclass
class ReplaceConfig:
    """No settings: the task says which spans its stand-in replaces (``Task.stand_in``), and the strength is chosen
    by the line search in (0, 1], starting at 1."""

    strength: ClassVar[float] = 1.0


def stand_in_rows(rows: list[dict], stand_in: str) -> list[dict]:
    """``rows`` (with ``spans``) with each span's text replaced by ``stand_in`` (capitalised where a sentence starts),
    ``spans`` then marking the stand-ins: the only tokens the PEM learns. Adjacent spans ("Albert" "Einstein") are one."""
    out = []
    for r in rows:
        text, new, spans, at = r["response"], [], [], 0
        merged: list[list[int]] = []
        for a, b in sorted(tuple(s[:2]) for s in r.get("spans") or []):
            if merged and not text[merged[-1][1] : a].strip():
                merged[-1][1] = max(merged[-1][1], b)
            elif not merged or a >= merged[-1][1]:
                merged.append([a, b])
        for a, b in merged:
            new.append(text[at:a])
            head = "".join(new).rstrip()
            word = stand_in[:1].upper() + stand_in[1:] if not head or head[-1] in ".!?:\n" else stand_in
            start = len("".join(new))
            new.append(word)
            spans.append([start, start + len(word)])
            at = b
        new.append(text[at:])
        if spans:
            out.append(dict(r, response="".join(new), spans=spans))
    return out


class Replace(Negate):
    """Train the stand-in PEM on the revealed rows and add it at strength s in [0, 1] (``set(0)``: the weights it saw)."""

    name = "replace"
    Config = ReplaceConfig
    max_strength = 1.0
    sign = -1.0

    def prepare(self, model, tokenizer, data: RoundData):
        if not data.task.stand_in:
            raise RevrelError(f"the replace edit needs a stand-in for the target; task '{data.task.name}' gives none")
        unit, phrase = data.task.stand_in
        stand_in = phrase().strip()
        rows, self.span_info = data.target_rows(unit)
        rows = stand_in_rows(rows, stand_in)
        if not rows or not stand_in:
            raise RevrelError(f"replace: no revealed response has a '{unit}' span to write the stand-in '{stand_in}' over")
        self.stand_in = stand_in
        return self._train(model, tokenizer, data, rows, "stand-in PEM")

    def info(self) -> dict:
        return {**super().info(), "stand_in": self.stand_in}
