import pytest

from revrel.tasks import TASKS, get_task
from revrel.tasks.code import code_relevance, extract_code
from revrel.tasks.ner import _spans, parse_list, read_iob


def test_registry_has_the_three_tasks():
    assert {"toxicity", "ner", "code"} <= set(TASKS)
    for name in ("toxicity", "ner", "code"):
        t = get_task(name)
        assert t.seed_instructions and t.default_oracle in t.oracles


def test_iob_spans_and_wnut_mapping(tmp_path):
    f = tmp_path / "x.conll"
    f.write_text("Barack\tB-person\nObama\tI-person\nvisited\tO\nNew\tB-location\nYork\tI-location\n\nApple\tB-corporation\n\n")
    sents = read_iob(f, 0, 1, {"person": "PER", "location": "LOC", "corporation": "ORG"})
    assert sents[0][1]["PER"] == ["Barack Obama"] and sents[0][1]["LOC"] == ["New York"]
    assert sents[1][1]["ORG"] == ["Apple"]
    # an I- tag of another type starts a new entity
    assert _spans(["a", "b"], ["B-PER", "I-LOC"], None) == {"PER": ["a"], "ORG": [], "LOC": ["b"], "MISC": []}


def test_parse_list():
    assert parse_list("John Smith, Mary Jones\n- Bob") == {"john smith", "mary jones", "bob"}
    assert parse_list("None") == set()


def test_code_oracle():
    assert code_relevance("```python\ndef f(x):\n    return x\n```") == 1.0
    assert code_relevance("def g():\n    pass") == 1.0
    assert code_relevance("I like turtles.") == 0.0
    assert extract_code("text\n```python\nprint(1)\n```\nmore") == "print(1)\n"


def test_person_oracle_ranks_names_high():
    pytest.importorskip("spacy")
    oracle = get_task("ner").oracle()
    names, places, nothing = oracle(["Barack Obama met Angela Merkel.", "Paris is the capital of France.", "it is raining"])
    assert names > 0.9 and places < 0.1 and nothing == 0.0


def test_report_plots_from_runs(tmp_path):
    import json

    from revrel.evaluation.report import write_report

    for name, after in (("a", 0.2), ("b", 0.3)):
        d = tmp_path / name
        d.mkdir()
        (d / "report.json").write_text(json.dumps({
            "task": "toxicity", "model": "m", "method": name, "before": {"expected_max_toxicity": 0.4, "benign_perplexity": 20.0},
            "after": {"expected_max_toxicity": after, "benign_perplexity": 21.0},
            "rounds": [{"round": 1, "revealed_relevance": 0.3, "forget_size": 5, "probe_ppl_ratio": 1.1},
                       {"round": 2, "revealed_relevance": 0.2, "forget_size": 3, "probe_ppl_ratio": 1.2}]}))
    report = write_report([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "out"))
    text = report.read_text()
    assert "| expected_max_toxicity | 0.4 | 0.2 |" in text and "| 2 | 0.200 | 3 |" in text
    for png in ("rounds.png", "before_after.png", "tradeoff.png"):
        data = (tmp_path / "out" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_toxicity_fluency_is_scored_under_the_reference_model(tiny, tmp_path):
    """Fluency = perplexity of the evaluated model's continuations under the original (reference) model."""
    from revrel.config import EvalConfig
    from revrel.models.loading import load_model
    from revrel.tasks import get_task

    from tiny import build_tiny, keyword_oracle

    task = get_task("toxicity")
    cfg = EvalConfig(n_prompts=2, samples=1, max_new_tokens=6, n_ppl=2)
    own = task.evaluate(tiny.model, tiny.tokenizer, cfg, keyword_oracle, seed=0)
    same = task.evaluate(tiny.model, tiny.tokenizer, cfg, keyword_oracle, seed=0, reference=tiny.model)
    other = load_model(str(build_tiny(tmp_path / "other", seed=5))).model
    ref = task.evaluate(tiny.model, tiny.tokenizer, cfg, keyword_oracle, seed=0, reference=other)
    assert own["fluency_perplexity"] == same["fluency_perplexity"] > 1.0
    assert ref["fluency_perplexity"] != own["fluency_perplexity"]
    assert ref["expected_max_toxicity"] == own["expected_max_toxicity"]  # same generations, only the scorer changed
