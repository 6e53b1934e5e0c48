"""The target mode: forget what the user names (revrel.tasks.target)."""

import json

import pytest

from revrel.cli import main
from revrel.config import load_config
from revrel.errors import RevrelError
from revrel.pipeline import unlearn
from revrel.tasks import get_task
from revrel.tasks.target import (
    TargetSpec,
    TargetState,
    alias_pattern,
    candidate_names,
    distinctive,
    part_of_target,
    recurring,
    words_of,
)

from tiny import tiny_overrides

PROFILE = {"name": "William Shakespeare", "aliases": ["William Shakespeare", "Shakespeare", "William", "the Bard"],
           "neighbours": ["Charles Dickens", "Jane Austen"], "description": "William Shakespeare was an English playwright and poet.",
           "neighbour_descriptions": {"Charles Dickens": "Charles Dickens was an English novelist.",
                                      "Jane Austen": "Jane Austen was an English novelist."}}


def state() -> TargetState:
    s = TargetState(TargetSpec(name="William Shakespeare"))
    s.spec.profile = dict(PROFILE)
    return s


def test_names_and_aliases_match_whole_words_only():
    assert words_of("William Shakespeare") == ["William", "Shakespeare"]
    assert words_of("The Lord of the Rings") == ["Rings"]  # titles and stop words are not names
    pat = alias_pattern(["Shakespeare", "the Bard", "Potter"])
    assert pat.search("Shakespeare's plays") and pat.search("the Bard wrote") and not pat.search("a potter") and pat.search("Harry Potter") and not pat.search("Shakespearean")
    assert candidate_names("Famous writers: Charles Dickens, Jane Austen and the Mark Twain.") == ["Charles Dickens", "Jane Austen", "Mark Twain"]
    samples = ["Charles Dickens, Jane Austen", "Jane Austen, Leo Tolstoy", "Charles Dickens and Jane Austen", "William Shakespeare"]
    assert recurring(samples, alias_pattern(["Shakespeare"]), 2, 5) == ["Jane Austen", "Charles Dickens"]


def test_spans_cover_the_target_sentences_and_stop_at_a_neighbour():
    s = state()
    text = "Shakespeare was born in 1564. He wrote Hamlet. Charles Dickens came later. He wrote novels."
    (spans,) = s.sentence_spans([text])
    covered = "".join(text[a:b] for a, b in spans)
    assert "1564" in covered and "Hamlet" in covered and "Dickens" not in covered and "novels" not in covered
    (keep,) = s.other_sentences([text])
    assert any("Dickens" in text[a:b] for a, b in keep)
    (names,) = s.name_spans(["The Bard, that is William Shakespeare, wrote."])
    assert [(a, b) for a, b in names] and all(b > a for a, b in names)


def test_relevance_prefers_the_target_over_a_neighbour():
    s = state()
    named, about, neighbour, other = s.relevance([
        "Shakespeare wrote many plays.",
        "He was an English playwright and poet who wrote plays and sonnets in the 1600s.",
        "Charles Dickens was an English novelist who wrote Oliver Twist.",
        "To bake bread, mix flour, water and yeast."])
    assert named == 1.0
    assert 0.0 <= neighbour < about < 0.5 and other < about


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["unlearn", "--task", "toxicity", "--about", "poet", "--out", str(tmp_path / "x")]) == 2
    assert "--about goes with --target" in capsys.readouterr().err
    with pytest.raises(RevrelError, match="needs a name"):
        load_config(None, {"task": "target"})
    assert main(["unlearn", "--target", "Ada Lovelace", "--eval-file", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "y")]) == 2
    assert "eval-file" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_target_run_end_to_end_on_a_tiny_model(tiny_dir, tmp_path):
    out = tmp_path / "run"
    evalf = tmp_path / "mine.jsonl"
    evalf.write_text(json.dumps({"question": "Who wrote Hamlet?", "answer": "William Shakespeare wrote Hamlet."}) + "\n"
                     + json.dumps({"text": "Shakespeare was born in Stratford."}) + "\n")
    over = tiny_overrides(out, tiny_dir, task="target", target={"name": "William Shakespeare", "keep": ["Charles Dickens", "Jane Austen"],
                                                                 "eval_file": str(evalf), "n_neighbours": 2},
                          release={"rounds": 1, "edits": [{"suppress": {"tokens": 4, "unit": "name"}}, {"negate": {"unit": "task"}}],
                                   "retain_from": "task"})
    report = unlearn(load_config(None, over, recipe=False))
    prof = json.loads((out / "target" / "profile.json").read_text())
    assert prof["neighbours"][:2] == ["Charles Dickens", "Jane Austen"] and "Shakespeare" in prof["aliases"]
    test_q = {r["instruction"] for r in prof["answers_test"]}
    dev_q = {r["instruction"] for r in prof["answers_dev"]}
    assert test_q and dev_q and not test_q & dev_q  # no evaluation question was seen by the method
    seeds = set(get_task("target", load_config(None, over, recipe=False).target).seed_instructions)
    assert not seeds & test_q
    for key in ("target_named_share", "neighbours_named_share", "fluency_perplexity"):
        assert key in report["after"], key
    for m in (report["before"], report["after"]):  # the target's and the others' answers apart; all of them lie between
        parts = sorted((m["fluency_perplexity_target"], m["fluency_perplexity_others"]))
        assert parts[0] <= m["fluency_perplexity"] * (1 + 1e-6) and m["fluency_perplexity"] <= parts[1] * (1 + 1e-6), m
        assert m["fluency_perplexity_target_plain"] != m["fluency_perplexity_target"]  # the same answers, no question
        assert len(m["answers"]) == sum(m["n_questions"].values()) + len([a for a in m["answers"] if a["group"] == "generic"])
        assert {a["group"] for a in m["answers"]} == {"target", "neighbours", "generic"}
        for part in ("target", "others"):  # n-gram entropy of the answers, with its interval around it
            lo, hi = m["intervals"][f"ngram_entropy_{part}"]
            assert 0 <= lo <= m[f"ngram_entropy_{part}"] <= hi, m
    change = report["after"]["probes"]["change"]
    assert {"target_rest", "target_names", "user", "neighbours", "generic"} <= set(change["groups"])
    assert [e["edit"] for e in report["rounds"][0]["edits"]] == ["suppress", "negate"]
    # a resumed or attacked run reads the same profile, not a new one
    mtime = (out / "target" / "profile.json").stat().st_mtime
    from revrel.commands.attacks import attack_run

    attack_run(str(out), attacks=("int8",), probe_only=True)
    assert (out / "target" / "profile.json").stat().st_mtime == mtime


def test_tasks_lists_the_target_mode(capsys):
    assert main(["tasks"]) == 0
    assert "target" in capsys.readouterr().out


def test_probe_splits_the_target_answers_into_names_and_the_rest(tiny):
    s = state()
    s.spec.profile["answers_test"] = [
        {"group": "target", "instruction": "Who?", "response": "Shakespeare wrote Hamlet; Shakespeare died in 1616."},
        {"group": "neighbours", "instruction": "Who?", "response": "Dickens wrote novels."}]
    probe = s.probe("test", 10, tiny.tokenizer)
    assert probe.target == ["target_rest", "target_names"] and probe.utility == ["neighbours", "generic"]
    t = probe.texts[0]
    names = [t.text[a:b] for a, b, g in t.spans if g == "target_names"]
    rest = "".join(t.text[a:b] for a, b, g in sorted(t.spans) if g == "target_rest")
    assert names == ["Shakespeare", "Shakespeare"] and rest == " wrote Hamlet;  died in 1616."


def test_a_neighbour_whose_description_names_the_target_is_part_of_it():
    own = alias_pattern(["William Shakespeare", "William", "Shakespeare"])
    described = {"Charles Dickens": "Charles Dickens was a British author of Oliver Twist.",
                 "Merchant of Venice": "The Merchant of Venice is a play by William Shakespeare's company, a romantic tale."}
    assert part_of_target(described, own) == {"Merchant of Venice"}
    assert part_of_target({"Charles Dickens": described["Charles Dickens"]}, own) == set()


def test_an_alias_that_names_others_too_is_dropped_but_the_own_name_is_kept():
    own = ["Albert Einstein", "Albert", "Einstein"]
    others = ["physicist", "Isaac Newton is a renowned physicist and mathematician."]
    kept = distinctive([*own, "Physicist", "Father of Relativity"], own, others)
    assert kept == [*own, "Father of Relativity"]
    # the own name stays even where a neighbour's text mentions it
    assert distinctive(own, own, ["Einstein admired Newton."]) == own


def test_plain_fluency_scores_an_answer_without_its_question(tiny):
    """Fluency as plain text does not depend on the question asked (the forgotten target's question makes the original
    find every other answer unlikely); after a chat prompt it does."""
    from revrel.tasks.base import fluency

    texts = ["Charles Dickens wrote novels about London.", "He was a writer of plays and poems."]
    ask = [fluency(tiny.model, None, tiny.tokenizer, [q] * 2, texts)[0] for q in ("Who wrote Hamlet?", "Name a famous chemist and explain")]
    plain = fluency(tiny.model, None, tiny.tokenizer, None, texts)
    assert ask[0] != ask[1] and plain[0] not in ask
    from revrel.models.generation import perplexity, text_logprobs

    assert abs(plain[0] - perplexity(text_logprobs(tiny.model, tiny.tokenizer, texts))) < 1e-6 and len(plain[1]) == 2
