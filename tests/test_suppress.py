"""Output suppression: the target-specific tokens are the ones chosen, their logits fall by about the
strength and no other token's logit moves, the input embeddings stay, and the edit survives a save."""

import pytest
import torch

from revrel.errors import RevrelError
from revrel.release.suppress import SuppressSweep, pick_tokens, suppress_with_budget, untie_output

TARGET = [{"instruction": "say something", "response": "you are an idiot and a stupid fool", "spans": [[12, 17], [24, 31]]}]
KEEP = [{"instruction": "say something", "response": "thank you for the lovely gift, you are kind"},
        {"instruction": "say something", "response": "the weather is nice and sunny"}]


def span_ids(tok, row) -> set[int]:
    enc = tok(row["response"], add_special_tokens=False, return_offsets_mapping=True)
    return {t for t, (_, e) in zip(enc["input_ids"], enc["offset_mapping"]) if any(a < e <= b for a, b in row["spans"])}


def test_pick_tokens_takes_target_span_tokens_the_keep_side_lacks(tiny):
    tok = tiny.tokenizer
    ids, table = pick_tokens(tok, TARGET, KEEP, 50, 64)
    assert set(ids) == span_ids(tok, TARGET[0])  # only tokens of "idiot" and "stupid", none of the frame
    keep_ids = {t for r in KEEP for t in tok(r["response"], add_special_tokens=False)["input_ids"]}
    assert ids[0] not in keep_ids and all(r["keep"] == 0 for r in table if r["id"] not in keep_ids)
    assert not set(ids) & set(tok.all_special_ids)
    with pytest.raises(RevrelError, match="no target tokens"):
        pick_tokens(tok, [dict(TARGET[0], spans=[[0, 0]])], KEEP, 5, 64)


def test_pick_tokens_min_chars_leaves_out_short_word_pieces(tiny):
    """release.suppress_min_chars: pieces shorter than N characters (besides a leading space) are never chosen, the
    longer target tokens still are; 0 leaves the choice as it was."""
    tok = tiny.tokenizer
    every = pick_tokens(tok, TARGET, KEEP, 50, 64)[0]
    size = {t: len(tok.decode([t]).removeprefix(" ")) for t in every}
    cut = sorted(set(size.values()))[len(set(size.values())) // 2]  # a length that splits the chosen tokens in two
    kept = pick_tokens(tok, TARGET, KEEP, 50, 64, min_chars=cut)[0]
    assert kept and set(kept) == {t for t in every if size[t] >= cut} and len(kept) < len(every)
    assert pick_tokens(tok, TARGET, KEEP, 50, 64, min_chars=0)[0] == every


def test_suppression_lowers_only_the_chosen_logits_and_restores(tiny):
    model, tok = tiny.model, tiny.tokenizer
    emb = model.get_input_embeddings().weight.detach().clone()
    ids = torch.tensor([tok("you are an idiot and a stupid fool")["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits[0]
    sweep = SuppressSweep(model, tok, TARGET, KEEP, 50, 64)
    assert sweep.tied and model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    with torch.no_grad():
        after = sweep.set(6.0)(input_ids=ids).logits[0]
    chosen = torch.zeros(before.shape[-1], dtype=torch.bool)
    chosen[sweep.tokens] = True
    assert torch.allclose(after[:, ~chosen], before[:, ~chosen], atol=1e-5)  # every other token's logit is untouched
    with torch.no_grad():
        h = model.get_decoder()(input_ids=ids).last_hidden_state[0]
    # each chosen logit falls by strength x (h . v): a bias of -strength wherever h . v = 1, which the fit aims at
    expect = (6.0 * (h @ sweep.v)).unsqueeze(1).expand(-1, int(chosen.sum()))
    assert torch.allclose(before[:, chosen] - after[:, chosen], expect, atol=1e-4)
    assert abs(sweep.fit["mean"] - 1.0) < 0.25  # on the rows it was fitted on
    assert torch.equal(model.get_input_embeddings().weight, emb)  # the model still reads the words
    with torch.no_grad():
        back = sweep.set(0.0)(input_ids=ids).logits[0]
    assert torch.allclose(back, before, atol=1e-5)


def test_an_untied_edited_head_survives_save_and_load(tiny, tmp_path):
    from revrel.models.loading import load_model

    sweep = SuppressSweep(tiny.model, tiny.tokenizer, TARGET, KEEP, 50, 64)
    sweep.set(4.0)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path)).model
    assert torch.equal(again.get_output_embeddings().weight, tiny.model.get_output_embeddings().weight)
    assert torch.equal(again.get_input_embeddings().weight, tiny.model.get_input_embeddings().weight)
    assert not torch.equal(again.get_output_embeddings().weight, again.get_input_embeddings().weight)
    assert untie_output(again) is False  # already its own weight


def test_suppression_line_search_halves_the_strength_until_the_budget_holds(tiny):
    from types import SimpleNamespace

    model, tok = tiny.model, tiny.tokenizer
    head = model.get_output_embeddings()
    cfg = SimpleNamespace(suppress=10, suppress_strength=8.0, suppress_prior=False, suppress_min_chars=0, line_search=3, max_length=64)
    original = head.weight.detach().clone()
    moved = lambda m: 1 + float((m.get_output_embeddings().weight.detach() - original).abs().max())  # noqa: E731 (grows with the strength)
    sweep, info = suppress_with_budget(model, tok, TARGET, KEEP, cfg, moved, 1 + float(sweep_step(model, tok)) * 2.5)
    assert [t["strength"] for t in info["line_search"]] == [8.0, 4.0, 2.0] and info["strength"] == 2.0 and sweep is not None
    sweep2, info2 = suppress_with_budget(model, tok, TARGET, KEEP, cfg, lambda m: 2.0, 1.5)
    assert sweep2 is None and info2["strength"] is None
    assert torch.allclose(head.weight[sweep.index], original[sweep.index] - 2.0 * sweep.v)  # the failed search restored strength 2's rows


def sweep_step(model, tok) -> float:
    """The largest |row change| per nat of strength (|v|'s largest entry), to set a budget between strengths."""
    from revrel.release.suppress import constant_direction

    v, _ = constant_direction(model, tok, TARGET + KEEP, 64)
    return float(v.abs().max())


def test_suppression_only_round_edits_the_head_in_the_saved_model_and_reports_it(tiny_dir, tmp_path):
    """release.suppress with release.negate=false: no PEM, the saved model differs from the original only in
    the chosen LM-head rows (the embeddings untouched), the rows' change is kept, the report says how many."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from revrel.config import load_config
    from revrel.evaluation.report import rounds_table
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1, "suppress": 5, "suppress_strength": 3.0,
                                                                               "negate": False, "span_loss": True})))
    r1 = report["rounds"][0]
    assert r1["suppress"]["strength"] == 3.0 and r1["suppress"]["tokens"] == 5 and not r1["reverted"] and "lambda_neg" not in r1
    saved = load_file(str(out / "adapters" / "suppressed_round_1.safetensors"))
    m, orig = AutoModelForCausalLM.from_pretrained(out / "model"), AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert torch.equal(m.model.embed_tokens.weight, orig.model.embed_tokens.weight)
    changed = (m.lm_head.weight != orig.lm_head.weight).any(1).nonzero().flatten()
    assert sorted(changed.tolist()) == sorted(saved["tokens"].tolist())
    assert torch.allclose(m.lm_head.weight[saved["tokens"]] - orig.lm_head.weight[saved["tokens"]], saved["delta"], atol=1e-6)
    assert "5 tokens -3 nats" in "\n".join(rounds_table(report))


@pytest.mark.parametrize("release,msg", [
    ({"suppress": -1}, "must be in \\[0, 5000\\]"),
    ({"suppress": 5, "suppress_strength": 0}, "must be > 0"),
    ({"suppress": 5, "merge": False}, "needs release.merge: true"),
    ({"edit_keep": -1}, "must be in \\[0, 100000\\]"),
])
def test_suppress_config_errors(release, msg):
    from revrel.config import load_config

    with pytest.raises(RevrelError, match=msg):
        load_config(None, {"release": release})


def test_negate_false_with_suppression_alone_is_valid():
    from revrel.config import load_config

    assert load_config(None, {"release": {"negate": False, "suppress": 10}}).release.suppress == 10


def test_expected_keep_counts_are_the_models_probabilities_at_the_learned_positions(tiny):
    """Summed next-token probabilities: one per learned position in all, and with release.suppress_prior a token the
    model expects on the keep side ranks lower than with observed counts alone."""
    from revrel.models.encoding import encode_pair
    from revrel.release.suppress import expected_tokens

    model, tok = tiny.model, tiny.tokenizer
    exp = expected_tokens(model, tok, KEEP, 64)
    positions = sum(sum(t != -100 for t in encode_pair(tok, r["instruction"], r["response"], 64)[1]) for r in KEEP)
    assert sum(exp.values()) == pytest.approx(positions, rel=1e-3)
    plain = dict((r["id"], r["keep"]) for r in pick_tokens(tok, TARGET, KEEP, 50, 64)[1])
    prior = dict((r["id"], r["keep"]) for r in pick_tokens(tok, TARGET, KEEP, 50, 64, expected=exp)[1])
    assert all(prior[t] > plain[t] for t in plain)


def test_a_round_can_suppress_and_then_negate(tiny_dir, tmp_path):
    """release.suppress with negation on: the round edits the head first, then trains and negates its PEM on the
    edited model; its entry carries both, and an unknown suppress_unit is a clear error naming the units."""
    from revrel.config import load_config
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1, "suppress": 5, "suppress_strength": 2.0,
                                                                               "span_loss": True, "lambda_neg": 0.5})))
    r1 = report["rounds"][0]
    assert r1["suppress"]["strength"] == 2.0 and r1["lambda_neg"] == 0.5 and not r1["reverted"]
    assert (out / "adapters" / "suppressed_round_1.safetensors").is_file() and (out / "adapters" / "negated_round_1").is_dir()
    with pytest.raises(RevrelError, match="declares the units"):
        unlearn(load_config(None, tiny_overrides(tmp_path / "bad", tiny_dir, release={"rounds": 1, "suppress": 5, "span_loss": True,
                                                                                     "negate": False, "suppress_unit": "syllable"})))


def test_sweep_bench_suppresses_then_negates_and_zero_is_the_original(tiny):
    """release_sweep.py's combined point: a fixed suppression under a negation curve; lambda 0 is the original."""
    import sys
    from pathlib import Path

    from peft import LoraConfig, get_peft_model

    from revrel.release.sweep import NegationSweep

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from release_sweep import HeldUnder
    finally:
        sys.path.pop(0)
    model, tok = tiny.model, tiny.tokenizer
    ids = torch.tensor([tok("you are an idiot and a stupid fool")["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits[0]
    sup = SuppressSweep(model, tok, TARGET, KEEP, 50, 64)
    pm = get_peft_model(model, LoraConfig(r=2, target_modules=["up_proj"], init_lora_weights=False))
    point = HeldUnder(sup, 6.0, NegationSweep(pm))
    chosen = torch.zeros(before.shape[-1], dtype=torch.bool)
    chosen[sup.tokens] = True
    with torch.no_grad():
        both = point.set(1.0)(input_ids=ids).logits[0]
        point.held.set(0.0)  # negation alone: the suppression lifted
        neg = point.swept.model(input_ids=ids).logits[0]
        h = point.swept.model.get_decoder()(input_ids=ids).last_hidden_state[0]  # the negated model's states
    assert not torch.allclose(neg, before, atol=1e-4)  # the negation moved the model
    assert torch.allclose(both[:, ~chosen], neg[:, ~chosen], atol=1e-5)  # suppression touches only its tokens
    expect = (6.0 * (h @ sup.v)).unsqueeze(1).expand(-1, int(chosen.sum()))
    assert torch.allclose(neg[:, chosen] - both[:, chosen], expect, atol=1e-4)  # ... by the strength along its fitted direction
    with torch.no_grad():
        back = point.set(0.0)(input_ids=ids).logits[0]
    assert torch.allclose(back, before, atol=1e-5)


def test_edit_keep_texts_join_the_keep_side_of_the_token_choice(tmp_path, tiny):
    """release.edit_keep: the texts a run writes to keep.jsonl join retain.jsonl on suppression's keep side, so a
    target word that ordinary text also uses (here "idiot" in a keep text) is no longer taken for a target token."""
    from revrel.io import write_jsonl
    from revrel.release.loop import edit_keep_rows
    from revrel.release.prune import keep_sides

    tok = tiny.tokenizer
    write_jsonl(tmp_path / "retain.jsonl", KEEP)
    def choose():
        keep, extra = keep_sides(TARGET, edit_keep_rows(tmp_path), "retain")
        return pick_tokens(tok, TARGET, keep, 50, 64, extra)[0]

    plain = choose()
    extra = [{"instruction": "say something", "response": "my idiot of a cat"}]
    write_jsonl(tmp_path / "keep.jsonl", extra)
    assert edit_keep_rows(tmp_path) == KEEP + extra
    idiot = span_ids(tok, dict(TARGET[0], spans=[[12, 17]]))
    chosen = choose()
    assert idiot <= set(plain) and not idiot & set(chosen[: len(plain) - len(idiot)])
    assert chosen[: len(plain) - len(idiot)] == [t for t in plain if t not in idiot]


def test_a_run_with_edit_keep_writes_its_keep_texts_and_counts_them(tiny_dir, tmp_path):
    """The run generates release.edit_keep answers to the retain side's training instructions (not the self-probe's)
    once, beside retain.jsonl (where edit_keep_rows reads them, the test above); without edit_keep none."""

    from revrel.config import load_config
    from revrel.io import read_jsonl
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1, "suppress": 5, "negate": False, "span_loss": True,
                                                                               "edit_keep": 6})))
    keep, retain, probe = (read_jsonl(out / f"{n}.jsonl") for n in ("keep", "retain", "probe"))
    assert 0 < len(keep) <= 6 and {r["instruction"] for r in keep} <= {r["instruction"] for r in retain}
    assert not {r["instruction"] for r in keep} & {r["instruction"] for r in probe}
    assert report["rounds"][0]["suppress"]["tokens"] == 5
    bare = tmp_path / "bare"
    unlearn(load_config(None, tiny_overrides(bare, tiny_dir, release={"rounds": 1, "suppress": 5, "negate": False, "span_loss": True})))
    assert not (bare / "keep.jsonl").exists()
