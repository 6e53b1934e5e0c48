"""Which tokens suppression lowers, and what each choice costs on dev keep text the budget never read.

On a recorded round (``release_record.py``), the config's edits are applied as a run's round applies them (line
searches under ``release.budget``, the Q4_1 grid, :func:`revrel.rounds.top_up`), once per token rule:

- ``current``: the rule in :func:`revrel.release.suppress.pick_tokens` (target count / (1 + keep count), the keep
  count at least the model's expected count over the self-generated keep texts) on the task's current spans;
- ``observed``: also the tokens the budget's own texts (200 dev benign continuations) hold, counted as keep side
  (scaled to the keep rows' size);
- ``rates``: instead of observed, the model's expected share of each token at the budget texts' positions;
- ``first``: only the first token of each target span is a target token;
- ``smooth``: a token's target count is the model's own expected count of it at the target spans' positions (the
  sum of its next-token probability there) instead of how often it was sampled there;
- ``loose``: a word is profane (toxicity's word unit, both edits' spans) at the word scorer's probability >= 0.5, the
  rule before 72ad354 (now >= 0.9: the words it scores 0.5-0.9, " worst" 0.64, " evil" 0.54, " troll" 0.71, are
  keep-side words of the negation's contrast). Records written before that commit name the 0.5 rule ``current`` and
  the 0.9 rule ``strict``;
- ``calm``: the toxic prompts' non-toxic dev continuations, which the budget never reads, as keep side: a token's
  keep share is at least the larger of its observed share there and the model's expected share at their positions.

Each result is scored on the dev benign continuations the budget reads (``benign``), on the dev texts it never
reads (``held``: the other benign continuations and the toxic prompts' non-toxic ones) and on the dev toxic
continuations; ``occurrences`` counts the chosen tokens in each. Writes one JSON.

    python benchmarks/suppress_tokens.py --rec benchmarks/results/release_rec_toxicity_fs80 --stride 2 \\
        --config src/revrel/recipes/toxicity.yaml --out benchmarks/results/release_rec_toxicity_fs80/suppress_tokens.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

import revrel.release.suppress as S
import revrel.tasks.toxicity as T
from revrel.metrics.probes import Probe, _batches, paired_change, score
from revrel.models.encoding import encode_pair, pad_batch
from revrel.models.loading import load_model

sys.path.insert(0, str(Path(__file__).parent))
from grid_noise import apply_recorded, dev_texts, only  # noqa: E402
from release_sweep import record_cfg  # noqa: E402

VARIANTS = ("current", "observed", "rates", "first", "calm", "smooth", "loose")


def span_text(probe: Probe, groups: set[str]) -> list[str]:
    return [t.text[a:b] for t in probe.texts for a, b, g in t.spans if g in groups]


def counts(tok, texts: list[str]) -> Counter:
    c: Counter = Counter()
    for t in texts:
        c.update(tok(t, add_special_tokens=False)["input_ids"])
    return c


def rates(model, tok, probe: Probe) -> dict[int, float]:
    """The model's mean next-token probability of each token over the probe's scored positions (expected >= 0.1 times)."""
    acc = S._Expected(model.get_output_embeddings())  # suppression's own accumulator of next-token probabilities
    for _, ids, mask, _, grp in _batches(tok, probe, 16, 1024, "cpu"):
        with torch.no_grad():
            acc.add(model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][grp >= 0])
    return {t: float(acc.total[t]) / acc.positions for t in (acc.total >= 0.1).nonzero().flatten().tolist()}


@torch.no_grad()
def span_expected(model, tok, rows: list[dict], max_length: int, floor: float = 0.5) -> dict[int, float]:
    """The model's expected count of each token at the positions of the rows' span tokens (the hidden state before
    each learned token), tokens expected at least ``floor`` times."""
    acc, decoder = S._Expected(model.get_output_embeddings()), model.get_decoder()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for b in range(0, len(rows), 8):
        enc = [encode_pair(tok, r["instruction"], r["response"], max_length, r.get("spans")) for r in rows[b : b + 8]]
        ids, att, labels = pad_batch([e[0] for e in enc], pad, left=False, label_seqs=[e[1] for e in enc])
        acc.add(decoder(input_ids=ids, attention_mask=att).last_hidden_state[:, :-1][labels[:, 1:] != -100])
    return {t: float(acc.total[t]) for t in (acc.total >= floor).nonzero().flatten().tolist()}


def word_rule(variant: str) -> None:
    """Toxicity's word spans for ``variant`` (before the task is built: its span units read the module's functions)."""
    T.profane_word_spans, T.clean_word_spans = WORDS
    if variant == "loose":
        T.profane_word_spans = functools.partial(WORDS[0], threshold=0.5)
        T.clean_word_spans = functools.partial(WORDS[1], threshold=0.5)


def patch(variant: str, model, tok, budget: Probe, calm: Probe | None = None) -> None:
    """Swap suppression's token rule for ``variant`` (the module's own functions are restored first)."""
    S.pick_tokens, S.learned_tokens = ORIGINAL
    if variant in ("observed", "rates", "calm"):
        texts = calm if variant == "calm" else budget
        extra = counts(tok, span_text(texts, set(texts.utility)))
        share = {t: c / sum(extra.values()) for t, c in extra.items()}
        if variant != "observed":
            expected = rates(model, tok, texts)
            share = expected if variant == "rates" else {t: max(share.get(t, 0.0), expected.get(t, 0.0)) for t in share.keys() | expected.keys()}

        def pick(tokenizer, target, keep, n, max_length, extra_keep=None, expected=None):
            n_keep = sum(ORIGINAL[1](tokenizer, keep, max_length).values()) + sum(ORIGINAL[1](tokenizer, extra_keep or [], max_length).values())
            merged = dict(expected or {})
            for t, r in share.items():
                merged[t] = max(merged.get(t, 0.0), r * n_keep)
            return ORIGINAL[0](tokenizer, target, keep, n, max_length, extra_keep, merged)

        S.pick_tokens = pick
    elif variant == "smooth":
        def pick_smooth(tokenizer, target, keep, n, max_length, extra_keep=None, expected=None):
            inside = span_expected(model, tokenizer, target, max_length)
            keep_c = ORIGINAL[1](tokenizer, keep, max_length) + ORIGINAL[1](tokenizer, extra_keep or [], max_length)
            for t, c in (expected or {}).items():
                keep_c[t] = max(keep_c[t], c)
            special = set(tokenizer.all_special_ids)
            ranked = sorted((t for t in inside if t not in special), key=lambda t: (-inside[t] / (1 + keep_c[t]), -inside[t], t))[:n]
            return ranked, [{"token": tokenizer.decode([t]), "id": t, "target": round(inside[t], 2), "keep": round(keep_c[t], 2)} for t in ranked]

        S.pick_tokens = pick_smooth
    elif variant == "first":
        def first(tokenizer, rows, max_length):
            c: Counter = Counter()
            for r in rows:
                _, labels = encode_pair(tokenizer, r["instruction"], r["response"], max_length, r.get("spans"))
                c.update(t for i, t in enumerate(labels) if t != -100 and (not r.get("spans") or i == 0 or labels[i - 1] == -100))
            return c

        S.learned_tokens = first


ORIGINAL = (S.pick_tokens, S.learned_tokens)
WORDS = (T.profane_word_spans, T.clean_word_spans)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rec", required=True)
    ap.add_argument("--config")
    ap.add_argument("--stride", type=int, default=1, help="every STRIDE-th forget row only (a record of a larger Reveal)")
    ap.add_argument("--offset", type=int, default=0, help="from this row on (--stride 2 --offset 1: the other half)")
    ap.add_argument("--calm-group", action="store_true", help="score the toxic prompts' non-toxic continuations as their own group")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rec, out = Path(args.rec), Path(args.out)
    cfg = record_cfg(rec, args.config, [])
    probe = dev_texts(calm_group=args.calm_group)
    keep_groups = list(probe.utility)
    probes = {"keep": only(probe, set(keep_groups)), "toxic": only(probe, {"toxic"})}
    calm = only(dev_texts(calm_group=True), {"calm"})
    results = json.loads(out.read_text()) if out.is_file() else {}
    for variant in args.variants:
        if variant in results:
            continue
        t0 = time.time()
        loaded = load_model(cfg.model, dtype=cfg.dtype)  # fresh weights for each variant
        tok = loaded.tokenizer
        before = {k: score(loaded.model, tok, p, batch_size=16) for k, p in probes.items()}
        word_rule(variant)
        edits, model, done, kept, _ = apply_recorded(rec, cfg, loaded, args.stride,
                                                     lambda kp, m=loaded.model, t=tok, v=variant: patch(v, m, t, kp, calm), args.offset)
        changes = {}
        for k in ("keep", "toxic"):
            items = score(model, tok, probes[k], batch_size=16)
            changes |= {g: paired_change(before[k][g], items[g]) for g in items}
        sup = next(e for e in edits if e.name == "suppress")
        occ = {g: counts(tok, span_text(probe, {g})) for g in keep_groups}
        results[variant] = {
            "strengths": {d["edit"]: d["strength"] for d in done}, "keep_cost": kept and kept["keep_cost"], "changes": changes,
            "occurrences": {g: {"chosen": sum(c[t] for t in sup.tokens), "tokens": sum(c.values())} for g, c in occ.items()},
            "tokens": [dict(r, **{g: occ[g][r["id"]] for g in keep_groups}) for r in sup.table],
            "seconds": round(time.time() - t0, 1)}
        print(variant, json.dumps({k: v for k, v in results[variant].items() if k != "tokens"}), flush=True)
        out.write_text(json.dumps(results, indent=1))
    S.pick_tokens, S.learned_tokens = ORIGINAL
    T.profane_word_spans, T.clean_word_spans = WORDS


if __name__ == "__main__":
    main()
