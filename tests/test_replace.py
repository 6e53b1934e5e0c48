"""The replace edit: the target's names written as a stand-in, a PEM trained on it and added (revrel.release.replace)."""

import copy
from types import SimpleNamespace

import pytest
import torch

from revrel.config import PemConfig
from revrel.errors import RevrelError
from revrel.models.encoding import encode_pair
from revrel.release.edit import RoundData, line_search, parse_edits
from revrel.release.replace import Replace, anchor_rows, stand_in_rows
from revrel.tasks.target import TargetSpec, TargetState, alias_pattern

PROFILE = {"name": "William Shakespeare", "aliases": ["William Shakespeare", "Shakespeare", "William"], "about": "",
           "neighbours": ["Charles Dickens"], "description": "William Shakespeare was an English playwright and poet."}


def test_stand_in_rows_write_the_stand_in_over_each_name_and_mark_only_it():
    text = "William Shakespeare wrote plays. Shakespeare's Hamlet is one, said William."
    spans = [m.span() for m in alias_pattern(PROFILE["aliases"]).finditer(text)]
    (row,) = stand_in_rows([{"instruction": "q", "response": text, "spans": spans}], "the playwright")
    assert row["response"] == "The playwright wrote plays. The playwright's Hamlet is one, said the playwright."
    assert [row["response"][a:b] for a, b in row["spans"]] == ["The playwright", "The playwright", "the playwright"]
    assert stand_in_rows([{"instruction": "q", "response": "no name here", "spans": []}], "x") == []


def test_anchor_rows_mark_the_keep_rows_capitalised_words_and_take_an_even_stride():
    keep = [{"instruction": "q", "response": f"Isaac Newton wrote book {i}."} for i in range(6)] + [{"instruction": "q", "response": "no caps"}]
    rows = anchor_rows(keep, 3)
    assert len(rows) == 3 and rows[0]["response"].endswith("0.") and rows[1]["response"].endswith("2.")
    assert [rows[0]["response"][a:b] for a, b in rows[0]["spans"]] == ["Isaac", "Newton"]
    assert anchor_rows([{"instruction": "q", "response": "no caps"}], 4) == []


def test_the_stand_in_is_the_about_words_else_the_kind_the_description_gives_and_never_names_the_target():
    s = TargetState(TargetSpec(name="William Shakespeare"))
    s.spec.profile = dict(PROFILE)
    assert s.stand_in() == "the English playwright"
    s.spec.profile = dict(PROFILE, about="poet")
    assert s.stand_in() == "the poet"
    s.spec.profile = dict(PROFILE, about="Shakespeare scholar", description="He was the William Shakespeare of England.")
    assert s.stand_in() == "this one"


def _stand_in_nll(model, tok, row) -> float:
    ids, labels = encode_pair(tok, row["instruction"], row["response"], 64, row["spans"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    lab = torch.tensor(labels[1:])
    return float(torch.nn.functional.cross_entropy(logits[lab != -100], lab[lab != -100]))


def test_replace_adds_the_trained_update_so_the_stand_in_becomes_likelier_and_undoes_exactly(tiny):
    tok = tiny.tokenizer
    text = "William Shakespeare wrote many plays and poems."
    spans = [m.span() for m in alias_pattern(PROFILE["aliases"]).finditer(text)]
    task = SimpleNamespace(name="t", stand_in=("name", lambda: "the poet"), span_units={"name": (lambda ts: [spans for _ in ts], None)})
    rows = [{"instruction": "who wrote plays?", "response": text}] * 4
    original = copy.deepcopy(tiny.model)
    (edit,) = parse_edits([{"replace": {}}])
    assert isinstance(edit, Replace) and edit.max_strength == 1.0
    model = edit.prepare(tiny.model, tok, RoundData(task=task, forget=rows, keep=[],
                                                    pem=PemConfig(rank=2, epochs=3, batch_size=2, max_length=64, lr=1e-2, lambda_orth=0)))
    (trained,) = stand_in_rows([dict(rows[0], spans=spans)], "the poet")
    before = _stand_in_nll(edit.set(0.0), tok, trained)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values()))
    assert _stand_in_nll(edit.set(0.5), tok, trained) < before - 0.1
    assert _stand_in_nll(edit.set(1.0), tok, trained) < _stand_in_nll(edit.set(0.5), tok, trained)
    assert edit.info()["stand_in"] == "the poet"
    # the line search never goes past the update as trained, however much budget is left
    x, steps, _ = line_search(edit, 1.0, 8, lambda m: 0.0, 0.05)
    assert x == 1.0 and max(s["strength"] for s in steps) == 1.0


def test_replace_settings_and_a_task_without_a_stand_in_are_one_line_errors(tiny):
    with pytest.raises(RevrelError, match="strength"):
        parse_edits([{"replace": {"strength": 2}}])  # no settings: the line search chooses it in (0, 1]
    (edit,) = parse_edits([{"replace": {}}])
    task = SimpleNamespace(name="toxicity", stand_in=None, span_units={})
    with pytest.raises(RevrelError, match="needs a stand-in"):
        edit.prepare(tiny.model, tiny.tokenizer, RoundData(task=task, forget=[], keep=[]))


def test_the_anchor_keeps_the_neighbours_names_where_the_stand_in_alone_spills_onto_them(tiny):
    tok = tiny.tokenizer
    text = "William Shakespeare wrote many plays and poems."
    spans = [m.span() for m in alias_pattern(PROFILE["aliases"]).finditer(text)]
    task = SimpleNamespace(name="t", stand_in=("name", lambda: "the poet"), span_units={"name": (lambda ts: [spans for _ in ts], None)})
    rows = [{"instruction": "who wrote plays?", "response": text}] * 4
    keep = [{"instruction": "who wrote novels?", "response": "Charles Dickens wrote many novels and stories."}] * 4
    (probe,) = anchor_rows(keep[:1], 1)
    pem = PemConfig(rank=2, epochs=3, batch_size=2, max_length=64, lr=1e-2, lambda_orth=0)
    spill = {}
    for name, anchor in (("alone", []), ("anchored", keep)):
        original = copy.deepcopy(tiny.model)
        (edit,) = parse_edits([{"replace": {}}])
        edit.prepare(original, tok, RoundData(task=task, forget=rows, keep=anchor, pem=pem))
        spill[name] = _stand_in_nll(edit.set(1.0), tok, probe) - _stand_in_nll(edit.set(0.0), tok, probe)
        assert edit.info()["anchor_rows"] == len(anchor)
    assert spill["alone"] > 0.05 and spill["anchored"] < spill["alone"] / 2
