"""Selective pruning: activity is measured on the positions that predict learned tokens, the most
target-specific neurons are the ones zeroed, and a zeroed neuron no longer reaches the output."""

import pytest
import torch

from revrel.config import PemConfig
from revrel.errors import RevrelError
from revrel.release.edit import RoundData, line_search
from revrel.release.prune import Prune, PruneConfig, down_projections, neuron_activity, prune_neurons, specificity

ROWS = [{"instruction": "say something", "response": "you are an idiot and a stupid fool"},
        {"instruction": "say something", "response": "thank you for the lovely gift"}]


def prepared(model, tok, target=ROWS[:1], keep=ROWS[1:]) -> Prune:
    """A prune edit prepared on ``model`` (whole responses as the target: unit "")."""
    e = Prune(PruneConfig(unit=""))
    e.prepare(model, tok, RoundData(task=None, forget=target, keep=keep, pem=PemConfig(max_length=64)))
    return e


def test_activity_shape_and_span_mask(tiny):
    model, tok = tiny.model, tiny.tokenizer
    downs = down_projections(model)
    whole = neuron_activity(model, tok, ROWS, 64)
    assert whole.shape == (len(downs), downs[0].in_features)
    assert (whole >= 0).all() and whole.sum() > 0
    # only the word "idiot": fewer positions, other activity means
    spans = [dict(ROWS[0], spans=[[12, 17]])]
    assert not torch.allclose(neuron_activity(model, tok, spans, 64), whole)
    with pytest.raises(RevrelError, match="no learned tokens"):
        neuron_activity(model, tok, [dict(ROWS[0], spans=[[0, 0]])], 64)


def test_activity_counts_the_position_before_each_learned_token(tiny):
    """The activity of a one-token span is the activation at the position *before* it (that position
    predicts it): equal to the hook's reading there, not at the span's own position."""
    from revrel.models.encoding import encode_pair

    model, tok = tiny.model, tiny.tokenizer
    row = dict(ROWS[0], spans=[[0, 3]])
    ids, labels = encode_pair(tok, row["instruction"], row["response"], 64, row["spans"])
    learned = [i for i, lab in enumerate(labels) if lab != -100]
    seen = []
    h = down_projections(model)[0].register_forward_pre_hook(lambda m, a: seen.append(a[0][0].abs()))
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    h.remove()
    expect = seen[0][[i - 1 for i in learned]].mean(0)
    got = neuron_activity(model, tok, [row], 64)[0]
    assert torch.allclose(got.float(), expect, atol=1e-5)


def test_prune_zeroes_the_most_specific_neurons_and_changes_the_output(tiny):
    model, tok = tiny.model, tiny.tokenizer
    target = neuron_activity(model, tok, ROWS[:1], 64)
    keep = neuron_activity(model, tok, ROWS[1:], 64)
    score = specificity(target, keep)
    ids = torch.tensor([tok("you are an idiot")["input_ids"]])
    before = model(input_ids=ids).logits.detach()
    mask = prune_neurons(model, score, 0.1)
    n = int(round(0.1 * score.numel()))
    assert int(mask.sum()) == n
    # exactly the top-n scores were chosen
    assert score[mask].min() >= score[~mask].max()
    for i, d in enumerate(down_projections(model)):
        assert (d.weight[:, mask[i]] == 0).all()
        assert (d.weight[:, ~mask[i]] != 0).any()
    assert not torch.allclose(model(input_ids=ids).logits, before)
    # a second call adds new neurons on top of the pruned ones
    more = prune_neurons(model, score, 0.05, mask)
    assert int(more.sum()) == n + int(round(0.05 * score.numel())) and (more | mask).equal(more)


def test_specificity_prefers_target_only_neurons():
    target = torch.tensor([[1.0, 1.0, 0.0]])
    keep = torch.tensor([[1.0, 0.01, 1.0]])
    assert specificity(target, keep).argmax().item() == 1


def test_pruning_only_round_zeroes_neurons_in_the_saved_model_and_reports_them(tiny_dir, tmp_path):
    """edits [prune]: no PEM is trained, the saved model has exactly the
    masked down-projection columns zeroed (and nothing else changed), the report says how many."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from revrel.config import load_config
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    out = tmp_path / "run"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1, "edits": [{"prune": {"strength": 0.05}}]})))
    r1 = report["rounds"][0]
    assert r1["edits"][0]["strength"] == 0.05 and r1["edits"][0]["edit"] == "prune" and not r1["reverted"] and len(r1["edits"]) == 1
    assert not (out / "adapters" / "round_1").exists() and not (out / "adapters" / "retain").exists()
    mask = load_file(str(out / "adapters" / "pruned_round_1.safetensors"))["mask"].bool()
    assert int(mask.sum()) == r1["edits"][0]["neurons"] == round(0.05 * mask.numel())
    m, orig = AutoModelForCausalLM.from_pretrained(out / "model"), AutoModelForCausalLM.from_pretrained(tiny_dir)
    changed = [n for (n, a), (_, b) in zip(m.named_parameters(), orig.named_parameters()) if not torch.equal(a, b)]
    assert changed and all("mlp.down_proj" in n for n in changed)
    for i, layer in enumerate(m.model.layers):
        w = layer.mlp.down_proj.weight
        assert (w[:, mask[i]] == 0).all() and torch.equal(w[:, ~mask[i]], orig.model.layers[i].mlp.down_proj.weight[:, ~mask[i]])
    from revrel.commands.report import rounds_table

    assert "| prune 0.05 |" in "\n".join(rounds_table(report))


def test_pruning_line_search_halves_the_share_until_the_budget_holds(tiny):
    """The budget signal here is the share of zeroed columns itself (1 + share): 0.4 and 0.2 exceed 1.15,
    0.1 holds; a budget nothing meets restores every weight and leaves no mask."""
    model, tok = tiny.model, tiny.tokenizer
    before = [d.weight.detach().clone() for d in down_projections(model)]
    zero_share = lambda m: 1 + float(torch.cat([(d.weight == 0).all(0) for d in down_projections(m)]).float().mean())  # noqa: E731
    edit = prepared(model, tok)
    share, searched, _ = line_search(edit, 0.4, 3, zero_share, 1.15)
    assert [t["strength"] for t in searched] == [0.4, 0.2, 0.1] and share == 0.1
    assert int(edit.mask.sum()) == searched[-1]["neurons"] == round(0.1 * edit.mask.numel())
    share, searched, _ = line_search(edit, 0.4, 3, lambda m: 2.0, 1.5)
    assert share is None and edit.mask is None and len(searched) == 3
    assert all(torch.equal(d.weight, w) for d, w in zip(down_projections(model), before))


@pytest.mark.parametrize("edit,msg", [
    ({"prune": {"strength": 0.7}}, "release.edits\\[0\\].prune.strength is a share of the MLP neurons and must be in \\[0, 0.5\\]"),
    ({"prune": {"share": 0.1}}, "unknown config key 'release.edits\\[0\\].prune.share'; known keys: strength, unit"),
    ("prunee", "release.edits\\[0\\]: unknown edit 'prunee'; known edits: negate, prune, suppress"),
])
def test_prune_config_errors(edit, msg):
    from revrel.release.edit import parse_edits

    with pytest.raises(RevrelError, match=msg):
        parse_edits([edit])


def test_keep_side_must_be_one_of_three():
    from revrel.config import load_config

    with pytest.raises(RevrelError, match="release.keep_side must be retain, spans or both"):
        load_config(None, {"release": {"keep_side": "all"}})


def test_prune_set_takes_each_share_from_the_prepared_weights(tiny):
    """set(share) equals pruning that share once on a fresh model; set(0) gives the original back bit for bit."""
    import copy

    model, tok = tiny.model, tiny.tokenizer
    fresh = copy.deepcopy(model)
    before = [d.weight.detach().clone() for d in down_projections(model)]
    edit = prepared(model, tok)
    edit.set(0.2)
    edit.set(0.1)  # not cumulative: 0.1 of the original, not 0.1 more
    expect = prune_neurons(fresh, specificity(neuron_activity(fresh, tok, ROWS[:1], 64), neuron_activity(fresh, tok, ROWS[1:], 64)), 0.1)
    assert edit.mask.equal(expect)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(down_projections(model), down_projections(fresh)))
    edit.set(0.0)
    assert edit.mask is None and all(torch.equal(d.weight, w) for d, w in zip(down_projections(model), before))


def test_keep_activity_of_two_sets_is_the_larger_per_neuron(tiny):
    from revrel.release.prune import keep_activity

    model, tok = tiny.model, tiny.tokenizer
    a, b = neuron_activity(model, tok, ROWS[:1], 64), neuron_activity(model, tok, ROWS[1:], 64)
    both = keep_activity(model, tok, ROWS[:1], 64, ROWS[1:])
    assert torch.equal(both, torch.maximum(a, b)) and (both > a).any() and (both > b).any()


def test_keep_side_spans_on_a_task_without_them_is_a_clear_error(tiny_dir, tmp_path):
    from revrel.config import load_config
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_dir, release={
        "rounds": 1, "edits": [{"prune": {"strength": 0.05}}], "keep_side": "both"}))
    with pytest.raises(RevrelError, match="does not declare keep spans"):
        unlearn(cfg)


def test_a_second_round_never_picks_a_neuron_an_earlier_round_zeroed(tiny):
    """Round 2 sees round 1's zeroed columns: its share is all new neurons, even with the same scores."""
    model, tok = tiny.model, tiny.tokenizer
    score = specificity(neuron_activity(model, tok, ROWS[:1], 64), neuron_activity(model, tok, ROWS[1:], 64))
    first = prune_neurons(model, score, 0.1)
    second = prune_neurons(model, score, 0.1)  # a fresh call, as a new round makes
    assert not (first & second).any() and int(second.sum()) == int(first.sum())
    dead = torch.stack([(d.weight == 0).all(dim=0) for d in down_projections(model)])
    assert dead.equal(first | second)
