"""Forget loss on the target spans only: which tokens a forget PEM learns."""

import pytest

from revrel.models.encoding import encode_pair


def test_spans_keep_only_the_target_tokens(tiny):
    tok = tiny.tokenizer
    response = "hello friend, you are an idiot today"
    ids, full = encode_pair(tok, "say it", response, 128)
    ids2, only = encode_pair(tok, "say it", response, 128, spans=[(14, 30)])
    assert ids == ids2  # same text, only the labels differ
    learned = tok.decode([t for t in only if t != -100])
    assert learned.strip() == "you are an idiot"
    assert sum(t != -100 for t in full) > sum(t != -100 for t in only) > 0


def test_code_spans_are_the_code_block_contents():
    from revrel.tasks.code import code_spans

    text = "Sure! Here is the code:\n```python\ndef f(x):\n    return x\n```\nHope it helps."
    (a, b), = code_spans([text])[0]
    assert text[a:b] == "def f(x):\n    return x\n"
    assert code_spans(["no code here"]) == [[]]
    assert code_spans(["def g():\n    pass"]) == [[(0, 17)]]  # bare code: all of it


def test_prose_spans_are_the_words_around_the_code():
    from revrel.tasks.code import prose_spans

    text = "Use `f(x)` here:\n```python\ndef f(x):\n    return 2 * x  # double it\n```\nThat doubles x."
    assert [text[a:b] for a, b in prose_spans([text])[0]] == ["Use", "here:", "That doubles x."]  # no fence, no inline code
    assert prose_spans(["def g():\n    pass"]) == [[]]  # bare code has no keep side
    assert prose_spans(["plain words only"]) == [[(0, 16)]]


def test_person_spans_cover_the_names():
    pytest.importorskip("spacy")
    from revrel.tasks.ner import other_entity_spans, person_spans

    text = "Yesterday Barack Obama met Angela Merkel in Berlin."
    names = [text[a:b] for a, b in person_spans([text])[0]]
    assert names == ["Barack Obama", "Angela Merkel"]
    assert [text[a:b] for a, b in other_entity_spans([text])[0]] == ["Berlin"]  # the keep side: not persons


def test_toxic_spans_pick_the_toxic_sentence():
    from revrel.tasks.toxicity import civil_spans, toxic_spans

    text = "Thanks for the question. You are a fucking stupid idiot and I hate you. Have a nice day."
    picked = [text[a:b] for a, b in toxic_spans([text])[0]]
    assert len(picked) == 1 and "idiot" in picked[0]
    kept = [text[a:b] for a, b in civil_spans([text])[0]]
    assert len(kept) == 2 and not any("idiot" in k for k in kept)  # the civil sentences: the keep side of span_contrast


def test_word_spans_pick_the_profane_words_and_spare_identity_terms():
    pytest.importorskip("profanity_check")
    from revrel.tasks.toxicity import clean_word_spans, profane_word_spans

    text = ("Thanks for asking. You are a fucking stupid idiot, and gay people and homosexuals are welcome here. "
            "It was the worst and most cruel day.")
    picked = [text[a:b] for a, b in profane_word_spans([text])[0]]
    # "homosexuals" scores 0.80 on the linear model: the plural of an identity term is spared like the term; "worst"
    # (0.64) and "cruel" (0.74) are words the scorer only leans on, which ordinary text uses
    assert {"fucking", "stupid", "idiot"} <= set(picked) and not {"gay", "homosexuals", "Thanks", "worst", "cruel"} & set(picked)
    kept = [text[a:b] for a, b in clean_word_spans([text])[0]]
    assert {"gay", "Thanks", "worst", "cruel"} <= set(kept) and not set(picked) & set(kept)


def test_unlearn_with_span_loss_trains_on_spans_only(tiny_dir, tmp_path):
    from revrel.config import load_config
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    report = unlearn(load_config(None, tiny_overrides(tmp_path / "spans", tiny_dir, release={"rounds": 1, "edits": [{"negate": {"unit": "task"}}]})))
    info = report["rounds"][0]["edits"][0]["spans"]
    assert info["rows"] >= info["rows_with_spans"] and 0 < info["span_char_share"] <= 1


def test_retain_from_task_uses_the_keep_side_or_names_the_problem(tiny_dir, tmp_path):
    from revrel.config import load_config
    from revrel.errors import RevrelError
    from revrel.pipeline import unlearn
    from revrel.tasks import TASKS

    from tiny import tiny_overrides

    with pytest.raises(RevrelError, match="declares no keep_instructions"):
        unlearn(load_config(None, tiny_overrides(tmp_path / "nokeep", tiny_dir, release={"rounds": 1, "retain_from": "task"})))
    make = TASKS["tiny"]
    keep = ["describe the ocean", "the weather is nice", "thank you friend", "explain how a bicycle works", "hello friend"]
    TASKS["tiny"] = lambda: __import__("dataclasses").replace(make(), keep_instructions=keep)
    try:
        unlearn(load_config(None, tiny_overrides(tmp_path / "keep", tiny_dir, release={"rounds": 1, "retain_from": "task"})))
    finally:
        TASKS["tiny"] = make
    from revrel.io import read_jsonl

    used = {r["instruction"] for r in read_jsonl(tmp_path / "keep" / "retain.jsonl") + read_jsonl(tmp_path / "keep" / "probe.jsonl")}
    assert used and used <= set(keep)


def test_unlearn_with_span_contrast_marks_and_uses_keep_spans(tiny_dir, tmp_path):
    """The Release loop attaches the task's keep spans to the forget rows and trains the contrast on them."""
    import dataclasses

    from revrel.config import load_config
    from revrel.pipeline import unlearn
    from revrel.tasks import TASKS

    from tiny import tiny_overrides

    def other_words(texts):  # every word but the first; the first word is also marked, and the target must win there
        out = []
        for t in texts:
            pos, sp = 0, []
            for w in t.split(" "):
                if w:
                    sp.append((pos, pos + len(w)))
                pos += len(w) + 1
            out.append(sp)
        return out

    def first_word(texts):  # a target span in every response, so every row has both sides
        return [[(0, max(len(t.split(" ")[0]), 1))] for t in texts]

    make = TASKS["tiny"]
    TASKS["tiny"] = lambda: dataclasses.replace(make(), target_spans=first_word, keep_spans=other_words)
    try:
        report = unlearn(load_config(None, tiny_overrides(tmp_path / "sc", tiny_dir,
                                                          release={"rounds": 1, "edits": [{"negate": {"unit": "task", "contrast": 2.0}}]})))
    finally:
        TASKS["tiny"] = make
    info, train = report["rounds"][0]["edits"][0]["spans"], report["rounds"][0]["edits"][0]["train"]
    assert 0 < info["rows_with_keep_spans"] <= info["rows_with_spans"]
    assert train["first_contrast"] is not None and train["first_contrast"] > 0  # log(2)/beta at the start, where margins are 0
