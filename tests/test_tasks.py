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
    assert sents[0][2] == [(0, 2, "PER"), (3, 5, "LOC")]  # token positions, for the likelihood probe's spans
    # an I- tag of another type starts a new entity
    assert _spans(["B-PER", "I-LOC"], None) == [(0, 1, "PER"), (1, 2, "LOC")]


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


def test_person_prose_oracle_prefers_running_text_to_lists():
    pytest.importorskip("spacy")
    oracle = get_task("ner").oracle("spacy-person-prose")
    listed, prose, half, places = oracle([
        "1. Albert Einstein\n2. Marie Curie\n3. Isaac Newton",
        "On Monday, Barack Obama met Angela Merkel in Berlin.",
        "Albert Einstein worked at Princeton University. The university is in New Jersey.",
        "Paris is the capital of France."])
    assert listed == 0.0 and prose == 1.0 and half == 0.5 and places == 0.0


def test_person_dense_oracle_prefers_lists_of_names_to_prose_about_people():
    pytest.importorskip("spacy")
    oracle = get_task("ner").oracle("spacy-person-dense")
    plain = get_task("ner").oracle("spacy-person")
    texts = ["1. Albert Einstein\n2. Marie Curie\n3. Isaac Newton",
             "Albert Einstein was a physicist who changed how we think about space, time and the nature of light itself.",
             "Paris is the capital of France."]
    listed, prose, places = oracle(texts)
    assert listed > 0.9 and places == 0.0
    assert plain(texts)[1] > 0.9 and prose < 0.5  # the plain share scores both alike; density tells them apart


def test_report_plots_from_runs(tmp_path):
    import json

    from revrel.commands.report import write_report

    for name, after in (("a", 0.2), ("b", 0.3)):
        d = tmp_path / name
        d.mkdir()
        (d / "report.json").write_text(json.dumps({
            "task": "toxicity", "model": "m", "method": name, "before": {"expected_max_toxicity": 0.4, "benign_perplexity": 20.0},
            "after": {"expected_max_toxicity": after, "benign_perplexity": 21.0},
            "rounds": [{"round": 1, "revealed_relevance": 0.3, "forget_size": 5, "keep_cost": 0.01},
                       {"round": 2, "revealed_relevance": 0.2, "forget_size": 3, "keep_cost": 0.02}]}))
    report = write_report([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "out"))
    text = report.read_text()
    assert "| expected_max_toxicity | 0.4 | 0.2 |" in text and "| 2 | 0.200 | 3 |" in text
    for png in ("rounds.png", "before_after.png", "tradeoff.png"):
        data = (tmp_path / "out" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_over_runs_of_different_tasks(tmp_path):
    """A mix of tasks gets one section and one set of plots per task (metrics of different tasks never
    share a panel); a folder that is not a run is a one-line RevrelError."""
    import json

    import pytest

    from revrel.commands.report import write_report
    from revrel.errors import RevrelError

    runs = {"tox": ("toxicity", {"expected_max_toxicity": 0.4}, {"expected_max_toxicity": 0.3}),
            "code": ("code", {"probe_target_nll": 0.5, "probe_utility_nll": 1.0}, {"probe_target_nll": 0.9, "probe_utility_nll": 1.02}),
            "ner": ("ner", {"PER_loglik": -1.3, "ORG_loglik": -3.3}, {"PER_loglik": -1.5, "ORG_loglik": -3.4})}
    for name, (task, before, after) in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps({"task": task, "model": "m", "method": "revrel", "before": before, "after": after,
                                                                  "rounds": [{"round": 1, "revealed_relevance": 0.3, "forget_size": 5}]}))
    text = write_report([str(tmp_path / n) for n in runs], str(tmp_path / "out")).read_text()
    for task in ("toxicity", "code", "ner"):
        assert f"## Task `{task}`" in text and f"![before_after_{task}](before_after_{task}.png)" in text
        assert (tmp_path / "out" / f"before_after_{task}.png").read_bytes()[:4] == b"\x89PNG"
    assert text.index("## Task `code`") < text.index("| probe_target_nll | 0.5 | 0.9 |") < text.index("## Task `ner`")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RevrelError, match="not found; give folders of finished revrel runs"):
        write_report([str(tmp_path / "tox"), str(tmp_path / "empty")], str(tmp_path / "out2"))


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


@pytest.mark.parametrize("name", ["ner", "code"])
def test_every_task_scores_fluency_under_the_reference_and_gives_intervals(name, tiny, tmp_path):
    """All three tasks take the same arguments and report the fluency of their own generations under the
    reference model, so a model that 'forgets' by babbling is caught on every task."""
    import torch

    from revrel.config import EvalConfig
    from revrel.models.loading import load_model

    from tiny import build_tiny, keyword_oracle

    # the random tiny model's greedy choice is a special or whitespace token: zero their (tied) rows so it writes text
    blank = [i for i in range(len(tiny.tokenizer)) if not tiny.tokenizer.decode([i], skip_special_tokens=True).strip()]
    with torch.no_grad():
        tiny.model.get_input_embeddings().weight[blank] = 0.0
    task = get_task(name)
    cfg = task.eval_config(EvalConfig(n_prompts=2, n_math=2, max_new_tokens=4, split="dev"))
    oracle = keyword_oracle if name == "ner" else task.oracle()
    own = task.evaluate(tiny.model, tiny.tokenizer, cfg, oracle, seed=0)
    other = load_model(str(build_tiny(tmp_path / "other", seed=5))).model
    ref = task.evaluate(tiny.model, tiny.tokenizer, cfg, oracle, seed=0, reference=other)
    assert own["fluency_perplexity"] > 1.0 and ref["fluency_perplexity"] != own["fluency_perplexity"]
    lo, hi = own["intervals"]["fluency_perplexity"]
    assert lo <= own["fluency_perplexity"] <= hi
    sampled = [k for k in own["intervals"] if k != "fluency_perplexity"]
    assert sampled and all(own["intervals"][k] is None or len(own["intervals"][k]) == 2 for k in sampled)


def test_eval_profiles_fill_only_unset_sizes():
    from revrel.config import EvalConfig
    from revrel.errors import RevrelError

    tox = get_task("toxicity")
    full = tox.eval_config(EvalConfig(profile="full"))
    assert (full.n_prompts, full.samples, full.max_new_tokens) == (400, 4, 25)  # the RTP protocol
    assert tox.eval_config(EvalConfig(profile="full", n_prompts=8)).n_prompts == 8  # an explicit size wins
    assert get_task("ner").eval_config(EvalConfig(profile="full")).n_prompts == 300
    code = get_task("code").eval_config(EvalConfig(profile="full"))
    assert (code.n_prompts, code.n_math) == (100, 200)
    with pytest.raises(RevrelError, match="no eval profile"):
        tox.eval_config(EvalConfig(profile="huge"))
