"""Release as an ordered list of edits, and the one line search that sets each edit's strength.

An edit (``negate``, ``prune``, ``suppress``; registered in :data:`EDITS`) is prepared once from a round's
data (:class:`RoundData`: the revealed rows, their target spans, the keep side) and then exposes one number,
its *strength*, that can be set, measured and undone: ``set(x)`` gives the model with the edit at ``x``
from the weights it was prepared on, ``set(0)`` gives those weights back bit for bit. A round applies the
list in order, each edit prepared on the model the earlier ones left, and :func:`line_search` chooses each
strength under the round's keep-side budget. The sweep harness (``benchmarks/release_sweep.py``) drives the
very same objects through :class:`Stack`, so a round and a sweep cannot compose the edits differently.

A new edit is one module with a config dataclass and an :class:`Edit` subclass, plus one line in :data:`EDITS`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from revrel.config import PemConfig, _build
from revrel.errors import RevrelError

log = logging.getLogger("revrel")


@dataclass
class RoundData:
    """What a round's edits are prepared from. Only revrel's own data: the revealed rows and the self-generated keep side."""

    task: Any
    forget: list[dict]  # the revealed forget rows (instruction, response, ...)
    keep: list[dict]  # self-generated keep-side texts: the retain rows (+ keep.jsonl with release.keep_texts)
    keep_side: str = "retain"  # release.keep_side: what pruning and suppression spare
    pem: PemConfig = field(default_factory=PemConfig)
    seed: int = 0  # the forget PEM's training seed
    prev_A: dict[str, torch.Tensor] | None = None  # A matrices the forget PEM stays orthogonal to (O-LoRA)
    adapters: Path | None = None  # where a round's adapters are written (None: nowhere, e.g. a sweep)
    round: int = 1
    check: list[dict] = field(default_factory=list)  # revealed rows held out of training, to compare an edit's variants on
    _spans: dict = field(default_factory=dict, repr=False)

    def target_rows(self, unit: str, keep: bool = False) -> tuple[list[dict], dict | None]:
        """The forget rows with the target spans of ``unit`` attached (rows without any are dropped; "" = whole
        responses, no spans) and with ``keep`` the keep spans beside them; cached, since edits share them."""
        if not unit:
            return self.forget, None
        key = (unit, keep)
        if key not in self._spans:
            from revrel.release.spans import with_target_spans

            self._spans[key] = with_target_spans(self.task, self.forget, keep=keep, unit=unit)
        return self._spans[key]

    def keep_rows(self, rows: list[dict]) -> tuple[list[dict], list[dict] | None]:
        """(keep rows, extra keep rows) for pruning and suppression, as ``release.keep_side`` says: the self-generated
        keep texts (retain), the keep spans inside the target ``rows`` (spans), or both (the extra set)."""
        inside = [dict(r, spans=r["keep_spans"]) for r in rows if r.get("keep_spans")]
        keep, extra = {"retain": (self.keep, None), "spans": (inside, None), "both": (self.keep, inside)}[self.keep_side]
        if not keep or (self.keep_side == "both" and not extra):
            raise RevrelError(f"release.keep_side={self.keep_side}: no forget row has keep spans; use release.keep_side=retain")
        return keep, extra


def stride(rows: list, n: int) -> list:
    """At most ``n`` of ``rows``, an even stride over them."""
    return rows if len(rows) <= n else [rows[i * len(rows) // n] for i in range(n)]


class Edit:
    """One Release edit. Subclasses set ``name`` and ``Config`` and implement :meth:`prepare` and :meth:`set`."""

    name: ClassVar[str]
    Config: ClassVar[type]
    max_strength: ClassVar[float] = 100.0  # the line search never goes above this
    head_only: ClassVar[bool] = False  # every strength changes only the LM head (its keep-side cost reuses the decoder's states)
    after_set: Callable | None = None  # set by the run: applied to the model after every strength (see :meth:`to`)

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.strength = 0.0
        self.model = None

    def prepare(self, model, tokenizer, data: RoundData):
        """Measure / train what the edit needs on ``model`` (the weights every ``set`` starts from); returns the model."""
        raise NotImplementedError

    def set(self, strength: float):
        """The model with the edit at ``strength`` (0: the weights :meth:`prepare` saw, exactly)."""
        raise NotImplementedError

    def to(self, strength: float):
        """:meth:`set`, then the run's ``after_set`` hook on the model (the grid rounding,
        :meth:`revrel.release.grid.Q41Grid.snap`): what the line search calls, so the cost it measures is of the
        weights the run keeps."""
        model = self.set(strength)
        return self.after_set(model) if self.after_set is not None else model

    def variants(self) -> list[str]:
        """Ways to apply the prepared edit that the round compares at equal keep-side cost (negate: by depth)."""
        return [""]

    def use(self, variant: str) -> None:
        """Apply the edit as ``variant`` from now on (strength back to 0)."""

    def save(self, folder: Path, k: int) -> None:
        """Keep round ``k``'s edit at its strength beside the adapters (the merged model already has it)."""

    def info(self) -> dict:
        """What the report shows about the prepared edit (besides its strength and line search)."""
        return {}

    def at_strength(self) -> dict:
        """What a line-search step records besides the strength and the ratio (e.g. how many neurons are pruned)."""
        return {}


def _registry() -> dict[str, type[Edit]]:
    from revrel.release.negate import Negate
    from revrel.release.prune import Prune
    from revrel.release.suppress import Suppress

    return {e.name: e for e in (Negate, Prune, Suppress)}  # the registry line of a new edit goes here


EDITS: dict[str, type[Edit]] = {}


def edit_types() -> dict[str, type[Edit]]:
    """Name -> Edit class of every registered edit."""
    if not EDITS:
        EDITS.update(_registry())
    return EDITS


def parse_edits(specs: list) -> list[Edit]:
    """``release.edits`` (a list of one-key mappings ``{name: {settings}}``, or bare names) -> fresh Edit objects.
    Unknown edits, unknown settings and bad values are a RevrelError naming the entry."""
    types = edit_types()
    if not isinstance(specs, list) or not specs:
        raise RevrelError("release.edits must be a non-empty list, e.g. [{negate: {strength: 1}}]")
    out = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {spec: {}}
        if not isinstance(spec, dict) or len(spec) != 1:
            raise RevrelError(f"release.edits[{i}] must be one mapping 'name: {{settings}}' (e.g. negate: {{strength: 1}}), got {spec!r}")
        (name, settings), = spec.items()
        if name not in types:
            raise RevrelError(f"release.edits[{i}]: unknown edit '{name}'; known edits: {', '.join(sorted(types))}")
        settings = settings if settings is not None else {}
        if not isinstance(settings, dict):
            raise RevrelError(f"release.edits[{i}].{name} must be a mapping of settings, got {settings!r}")
        cfg = _build(types[name].Config, settings, prefix=f"release.edits[{i}].{name}.")
        check = getattr(cfg, "check", None)
        if check:
            check(f"release.edits[{i}].{name}")
        out.append(types[name](cfg))
    return out


def edit_fields() -> dict[str, list[str]]:
    """Each registered edit's settable fields (for the docs' option count and the preset test)."""
    return {name: [f.name for f in dataclasses.fields(t.Config)] for name, t in edit_types().items()}


def _next_strength(ok: float | None, c_ok: float | None, bad: float | None, c_bad: float | None, limit: float, top: float) -> float:
    """The next strength to try: where a power law through the costs seen (``cost ~ strength ** p``, a line in
    log-log) reaches ``limit``. Below every strength tried, p = 1 (a cost that grows faster than linearly then
    lands within the limit); above, p = 1 too (overshoots into a bracket); inside a bracket, p from its two ends,
    kept in the middle 60% of the bracket's log-width so that either end moves. Where costs are not positive or
    not increasing the steps are the plain ones: halve, double, geometric midpoint."""
    if ok is not None and bad is not None:
        lo, hi = math.log(ok), math.log(bad)
        x = 0.5 * (lo + hi)
        if 0 < c_ok < limit < c_bad:
            p = (math.log(c_bad) - math.log(c_ok)) / (hi - lo)
            x = lo + (math.log(limit) - math.log(c_ok)) / p
        return math.exp(min(max(x, lo + 0.2 * (hi - lo)), lo + 0.8 * (hi - lo)))
    if ok is not None:
        grow = limit / c_ok if c_ok > 0 else 2.0
        return min(ok * min(max(grow, 2.0), 16.0), top)
    shrink = limit / c_bad if 0 < limit < c_bad else 0.5
    return bad * min(max(shrink, 1 / 16), 0.5)


USED = 0.9  # a kept strength whose cost is at least this share of its limit has used the budget (line_search)


def line_search(edit: Edit, start: float, tries: int, measure, limit: float) -> tuple[float | None, list[dict], float | None]:
    """The strongest strength of ``edit`` whose keep-side cost ``measure(model)`` (nats/token) stays within ``limit``.

    From ``start``: up while the cost holds (up to the edit's ``max_strength``), down while it does not, then inside
    the bracket between the strongest that held and the weakest that did not, ``tries`` costs in all, until the
    bracket is within 20% and the strength kept costs at least :data:`USED` of the limit (costs are measured on the
    same keep texts at every step, so a 15% step that would spend a quarter of the budget more is not noise), or
    the bracket is within 2%; each step aims where the costs seen say the limit is (:func:`_next_strength`: 2 to 16
    times up, 2 to 16 times down, a log-log secant inside). The same rule on every model: the start only saves
    steps, the budget decides. Returns the strength kept (None when none held: then ``edit.set(0)`` restored the
    weights the edit was prepared on), every step tried, and the kept step's cost."""
    ok, bad, x, searched, cost_ok, cost_bad = None, None, start, [], None, None
    for _ in range(tries):
        cost = measure(edit.to(x))
        groups = getattr(measure, "last", None)  # each keep group's change (KeepCost), kept so no step is re-measured
        searched.append({"strength": x, **edit.at_strength(), "keep_cost": round(cost, 4), **({"groups": dict(groups)} if groups else {})})
        log.info("%s strength %.4g: keep-side cost %+.4f nats/token (limit %.4f)", edit.name, x, cost, limit)
        if cost <= limit:
            ok, cost_ok = x, cost
        else:
            bad, cost_bad = x, cost
        if ok is not None and bad is not None and (bad / ok < 1.02 or (bad / ok < 1.2 and cost_ok >= USED * limit)):
            break  # the bracket is within 20% and the budget used, or it is within 2%
        if ok is not None and bad is None and ok >= edit.max_strength:
            break
        x = _next_strength(ok, cost_ok, bad, cost_bad, limit, edit.max_strength)
    if ok is None:
        edit.to(0.0)
        return None, searched, None
    if searched[-1]["strength"] != ok:
        edit.to(ok)
    return ok, searched, cost_ok


def choose(edit: Edit, tries: int, measure, limit: float, gain=None) -> tuple[float | None, list[dict], float | None, dict]:
    """:func:`line_search` for each of the edit's variants; with several, the one whose kept strength scores the
    highest ``gain(model)`` (the held-out revealed rows' target NLL) is applied. Returns the line search's triple
    for the variant kept and what was compared."""
    variants = edit.variants()
    if len(variants) == 1 or gain is None:
        edit.use(variants[0])
        return (*line_search(edit, edit.cfg.strength, tries, measure, limit), {})
    tried = {}
    for v in variants:
        edit.use(v)
        x, searched, cost = line_search(edit, edit.cfg.strength, tries, measure, limit)
        tried[v] = {"strength": x, "keep_cost": cost, "gain": None if x is None else round(gain(edit.model), 4), "line_search": searched}
    ok = [v for v in variants if tried[v]["strength"] is not None]
    if not ok:
        edit.use(variants[0])
        return None, tried[variants[0]]["line_search"], None, {"variants": tried}
    best = max(ok, key=lambda v: tried[v]["gain"])
    edit.use(best)
    edit.to(tried[best]["strength"])
    return tried[best]["strength"], tried[best]["line_search"], tried[best]["keep_cost"], {"variants": tried, "chosen": best}


@dataclass
class Stack:
    """Edits applied in order for a sweep: every edit but the last held at its configured strength, the last swept.
    ``set(x)``: the last at ``x`` on top of the others; ``set(0)`` lifts them all and gives back the original."""

    edits: list[Edit]

    @classmethod
    def prepare(cls, edits: list[Edit], model, tokenizer, data: RoundData) -> Stack:
        for i, e in enumerate(edits):
            model = e.prepare(model, tokenizer, data)
            if i < len(edits) - 1:
                model = e.set(e.cfg.strength)
        return cls(edits)

    @property
    def model(self):
        return self.edits[-1].model

    def set(self, x: float):
        if x == 0:
            model = self.edits[-1].set(0.0)
            for e in reversed(self.edits[:-1]):
                model = e.set(0.0)
            return model
        for e in self.edits[:-1]:
            e.set(e.cfg.strength)
        return self.edits[-1].set(x)
