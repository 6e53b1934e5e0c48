"""Output suppression: the target-specific tokens are the ones chosen, their logits fall by about the
strength and no other token's logit moves, the input embeddings stay, and the edit survives a save."""

import pytest
import torch

from revrel.config import PemConfig
from revrel.errors import RevrelError
from revrel.release.edit import RoundData, line_search
from revrel.release.suppress import Suppress, SuppressConfig, pick_tokens, untie_output

TARGET = [{"instruction": "say something", "response": "you are an idiot and a stupid fool", "spans": [[12, 17], [24, 31]]}]
KEEP = [{"instruction": "say something", "response": "thank you for the lovely gift, you are kind"},
        {"instruction": "say something", "response": "the weather is nice and sunny"}]


def suppress(model, tok, n: int = 50, target=TARGET, keep=KEEP) -> Suppress:
    """A suppress edit prepared on ``model`` from rows that already carry their spans (unit "")."""
    e = Suppress(SuppressConfig(tokens=n, unit=""))
    e.prepare(model, tok, RoundData(task=None, forget=target, keep=keep, pem=PemConfig(max_length=64)))
    return e


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


def test_expected_counts_add_up_to_the_keep_tokens_and_demote_what_the_model_expects(tiny):
    """The model's expected counts sum to the keep side's response tokens (also from a stride of its rows), and a
    target token the keep side is expected to use often ranks below one it is not, though neither was sampled there."""
    from revrel.models.encoding import encode_pair
    from revrel.release.suppress import expected_counts

    tok = tiny.tokenizer
    n = sum(sum(t != -100 for t in encode_pair(tok, r["instruction"], r["response"], 64)[1]) for r in KEEP)
    assert sum(expected_counts(tiny.model, tok, KEEP, 64, floor=0.0).values()) == pytest.approx(n, rel=1e-4)
    assert sum(expected_counts(tiny.model, tok, KEEP, 64, max_rows=1, floor=0.0).values()) == pytest.approx(n, rel=1e-4)
    ids, _ = pick_tokens(tok, TARGET, KEEP, 50, 64)
    demoted, _ = pick_tokens(tok, TARGET, KEEP, 50, 64, expected={ids[0]: 5.0})
    assert demoted[-1] == ids[0] and set(demoted) == set(ids)


def test_one_pass_gives_the_counts_of_the_keep_rows_and_a_direction_that_fits_both_sides(tiny):
    """Suppression's single forward: the same expected counts as a pass over the keep rows alone, and a bias direction
    fitted on keep and target rows alike (h . v near 1 on both), as the separate fit over all rows gives."""
    from revrel.release.suppress import _response_hidden, constant_direction, counts_and_direction, expected_counts

    tok, model = tiny.tokenizer, tiny.model
    keep = KEEP * 3
    counts, v, info = counts_and_direction(model, tok, TARGET, keep, 64, floor=0.0)
    alone = expected_counts(model, tok, keep, 64, floor=0.0)
    assert counts.keys() == alone.keys() and all(counts[t] == pytest.approx(alone[t], rel=1e-5) for t in alone)
    for rows in (TARGET, keep):
        proj = torch.cat(list(_response_hidden(model, tok, rows, 64))) @ v
        assert proj.mean().item() == pytest.approx(1.0, abs=0.1)
    v_all, _ = constant_direction(model, tok, TARGET + keep, 64)
    assert torch.allclose(v, v_all, rtol=1e-3, atol=1e-4)  # the same rows here: the same least-squares fit
    assert info["std"] >= 0


def test_head_only_keep_cost_equals_the_full_forward_at_every_strength(tiny):
    """Suppression's line search scores the keep side from cached decoder states: the same cost as a full forward at
    each strength, though only the first call runs the decoder."""
    from revrel.release.budget import KeepCost, rows_probe

    tok = tiny.tokenizer
    probe = rows_probe(tok, KEEP + TARGET, "self", utility=True)
    cost = KeepCost(probe, tok, KeepCost.baseline(probe, tiny.model, tok))
    edit = suppress(tiny.model, tok)
    fast = cost.head_only()
    calls = []
    hook = edit.model.get_decoder().register_forward_hook(lambda *a: calls.append(1))
    try:
        for s in (0.0, 2.0, 8.0, 3.0):
            quick = fast(edit.set(s))
            assert quick == pytest.approx(cost(edit.set(s)), abs=1e-5)
            assert s == 0.0 or quick > 0  # lowering words the keep rows hold costs something
    finally:
        hook.remove()
    assert len(calls) == 1 + 4  # one decoder pass for the cached states, one per full-forward check


def test_suppression_lowers_only_the_chosen_logits_and_restores(tiny):
    model, tok = tiny.model, tiny.tokenizer
    emb = model.get_input_embeddings().weight.detach().clone()
    ids = torch.tensor([tok("you are an idiot and a stupid fool")["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits[0]
    sweep = suppress(model, tok)
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

    sweep = suppress(tiny.model, tiny.tokenizer)
    sweep.set(4.0)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path)).model
    assert torch.equal(again.get_output_embeddings().weight, tiny.model.get_output_embeddings().weight)
    assert torch.equal(again.get_input_embeddings().weight, tiny.model.get_input_embeddings().weight)
    assert not torch.equal(again.get_output_embeddings().weight, again.get_input_embeddings().weight)
    assert untie_output(again) is False  # already its own weight


def test_suppression_line_search_lowers_the_strength_until_the_budget_holds(tiny):
    model, tok = tiny.model, tiny.tokenizer
    head = model.get_output_embeddings()
    original = head.weight.detach().clone()
    moved = lambda m: 1 + float((m.get_output_embeddings().weight.detach() - original).abs().max())  # noqa: E731 (grows with the strength)
    edit = suppress(model, tok, 10)
    limit = 1 + float(sweep_step(model, tok)) * 2.5
    strength, searched, _ = line_search(edit, 8.0, 4, moved, limit)
    tried = [t["strength"] for t in searched]
    assert tried[0] == 8.0 and max(tried[1:]) < 8.0 and strength == max(t["strength"] for t in searched if t["keep_cost"] <= limit)
    assert 2.5 / 1.2 <= strength <= 2.5
    assert torch.allclose(head.weight[edit.index], original[edit.index] - strength * edit.v)
    strength2, _, _ = line_search(edit, 8.0, 3, lambda m: 2.0, 1.5)
    assert strength2 is None and torch.equal(head.weight, original)  # a failed search undoes the edit


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

    from revrel.commands.report import rounds_table
    from revrel.config import load_config
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1, "edits": [{"suppress": {"tokens": 5, "strength": 3.0}}]})))
    r1 = report["rounds"][0]
    assert [e["edit"] for e in r1["edits"]] == ["suppress"] and r1["edits"][0]["strength"] == 3.0 and r1["edits"][0]["tokens"] == 5
    assert not r1["reverted"] and not (out / "adapters" / "round_1").exists()
    saved = load_file(str(out / "adapters" / "suppressed_round_1.safetensors"))
    m, orig = AutoModelForCausalLM.from_pretrained(out / "model"), AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert torch.equal(m.model.embed_tokens.weight, orig.model.embed_tokens.weight)
    changed = (m.lm_head.weight != orig.lm_head.weight).any(1).nonzero().flatten()
    assert sorted(changed.tolist()) == sorted(saved["tokens"].tolist())
    assert torch.allclose(m.lm_head.weight[saved["tokens"]] - orig.lm_head.weight[saved["tokens"]], saved["delta"], atol=1e-6)
    assert "| suppress 3 |" in "\n".join(rounds_table(report))


def test_a_round_can_suppress_and_then_negate(tiny_dir, tmp_path):
    """edits [suppress, negate]: the round edits the head first, then trains and negates its PEM on the edited model;
    its entry carries both, and an unknown unit is a clear error naming the units."""
    from revrel.config import load_config
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={
        "rounds": 1, "edits": [{"suppress": {"tokens": 5, "strength": 2.0}}, {"negate": {"strength": 0.5, "unit": "task"}}]})))
    r1 = report["rounds"][0]
    assert [(e["edit"], e["strength"]) for e in r1["edits"]] == [("suppress", 2.0), ("negate", 0.5)] and not r1["reverted"]
    assert (out / "adapters" / "suppressed_round_1.safetensors").is_file() and (out / "adapters" / "negated_round_1").is_dir()
    with pytest.raises(RevrelError, match="declares the units"):
        unlearn(load_config(None, tiny_overrides(tmp_path / "bad", tiny_dir, release={"rounds": 1, "edits": [{"suppress": {"unit": "syllable"}}]})))


def test_keep_texts_join_the_keep_side_of_the_token_choice(tmp_path, tiny):
    """release.keep_texts: the texts a run writes to keep.jsonl join retain.jsonl on suppression's keep side, so a
    target word that ordinary text also uses (here "idiot" in a keep text) is no longer taken for a target token."""
    from revrel.config import RunConfig
    from revrel.io import write_jsonl
    from revrel.rounds import round_data

    tok = tiny.tokenizer
    write_jsonl(tmp_path / "retain.jsonl", KEEP)
    cfg = RunConfig()
    cfg.release.keep_texts = 1

    def choose():
        return suppress(tiny.model, tok, keep=round_data(cfg, None, tmp_path, 1, TARGET, []).keep).tokens

    plain = choose()
    extra = [{"instruction": "say something", "response": "my idiot of a cat"}]
    write_jsonl(tmp_path / "keep.jsonl", extra)
    assert round_data(cfg, None, tmp_path, 1, TARGET, []).keep == KEEP + extra
    idiot = span_ids(tok, dict(TARGET[0], spans=[[12, 17]]))
    chosen = choose()
    assert idiot <= set(plain) and not idiot & set(chosen[: len(plain) - len(idiot)])
    assert chosen[: len(plain) - len(idiot)] == [t for t in plain if t not in idiot]


def test_a_run_with_keep_texts_writes_them_and_counts_them(tiny_dir, tmp_path):
    """The run generates release.keep_texts answers to the retain side's training instructions (not the self-probe's)
    once, beside retain.jsonl (where round_data reads them, the test above); without keep_texts none."""
    from revrel.config import load_config
    from revrel.io import read_jsonl
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1, "edits": [{"suppress": {"tokens": 5}}],
                                                                               "keep_texts": 6})))
    keep, retain, probe = (read_jsonl(out / f"{n}.jsonl") for n in ("keep", "retain", "probe"))
    assert 0 < len(keep) <= 6 and {r["instruction"] for r in keep} <= {r["instruction"] for r in retain}
    assert not {r["instruction"] for r in keep} & {r["instruction"] for r in probe}
    assert report["rounds"][0]["edits"][0]["tokens"] == 5
    bare = tmp_path / "bare"
    unlearn(load_config(None, tiny_overrides(bare, tiny_dir, release={"rounds": 1, "edits": [{"suppress": {"tokens": 5}}]})))
    assert not (bare / "keep.jsonl").exists()
