"""The ``replace`` edit: teach the model a plain stand-in where it would write the target, and add that update.

Why beside suppression: suppression makes the target's name tokens unreachable, but the model still *means* to
write the name, and what it samples in its place is a fragment of it or a loop ("A.A.A.A", "Asten Urlaub"): on
the default model the original's perplexity of its answers about Albert Einstein went 3.5 -> 9.3 while every other
answer read as before. Here a PEM is trained on the revealed responses with every target span (the names) written
as the task's stand-in ("the physicist"), its loss on the stand-in's tokens only, and *added* to the weights
(W <- W + strength * B A), the way "Who's Harry Potter?" (Eldan & Russinovich, 2023) fine-tunes on generic
replacements. The text around the stand-in is the model's own, so nothing but the name is taught.

The anchor: trained on the stand-in alone, the PEM learns "write the stand-in where a name goes" and says it about
the neighbours too (Einstein, dev: +6.8 nats/token on their answers at strength 1). So as many keep rows as
stand-in rows train beside them, each on its own capitalised words (names and sentence starts, where the stand-in
would spill): there the update must leave the model's own choice as it was.

revrel's own data only: the revealed responses and the task's stand-in (the target mode: the ``--about`` words, or
the kind the model's own description gives). The strength is at most 1, the update as trained: a larger one
extrapolates a fine-tune rather than removing anything, and the budget has nothing that would stop it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import ClassVar

from revrel.errors import RevrelError
from revrel.release.edit import RoundData, stride
from revrel.release.negate import Negate

log = logging.getLogger("revrel")

CAPITALISED = re.compile(r"\b[A-Z][\w'.-]*")


def anchor_rows(keep: list[dict], n: int) -> list[dict]:
    """At most ``n`` keep rows (an even stride), each with ``spans`` on its capitalised words: the anchor beside the
    stand-in rows (see the module docstring); rows with none are skipped."""
    rows = [dict(r, spans=spans) for r in keep if (spans := [m.span() for m in CAPITALISED.finditer(r["response"])])]
    return stride(rows, n)


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
        rows = stand_in_rows(rows, stand_in) if stand_in else []
        self.stand_in = stand_in
        if not rows:  # nothing to teach: the edit is the identity at every strength, and the report says so
            log.warning("replace: no revealed response names the target ('%s' spans); the edit does nothing", unit)
            self.train, self.rows, self.orth, self.folder, self.layers_w, self.depth = None, 0, None, None, [], {"all": set()}
            self.model = model
            self.use("all")
            return model
        self.anchors = anchor_rows(data.keep, len(rows))
        return self._train(model, tokenizer, data, rows + self.anchors, "stand-in PEM")

    def info(self) -> dict:
        return {**super().info(), "stand_in": self.stand_in, "anchor_rows": len(getattr(self, "anchors", []))}
