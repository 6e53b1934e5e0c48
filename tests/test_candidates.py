from revrel.config import load_config
from revrel.reveal.optimize import build_candidates
from revrel.tasks import get_task
from revrel.tasks.base import Task


def _task(modifiers):
    base = get_task("tiny")
    return Task(name="t", description="", seed_instructions=list(base.seed_instructions), oracles=base.oracles,
                default_oracle=base.default_oracle, evaluate=base.evaluate, modifiers=modifiers)


def test_every_kind_is_selectable_and_compose_is_seed_x_modifier(tiny):
    task = _task(["Be rude.", "Keep it short."])
    kinds = {}
    for sel in (["pool"], ["compose"], ["soft"], ["pool", "compose", "soft"]):
        cfg = load_config(recipe=False, overrides={"reveal": {"candidates": sel, "n_paraphrases": 1, "n_soft": 4, "soft_dim": 4, "soft_tokens": 2}})
        cands = build_candidates(tiny.model, tiny.tokenizer, task, cfg.reveal, seed=0)
        kinds[tuple(sel)] = {c.kind for c in cands}
        if sel == ["compose"]:
            texts = [c.text for c in cands]
            assert len(texts) == 3 * 2 and "write a rude comment Keep it short." in texts
            assert all(c.origin in task.seed_instructions for c in cands)
    assert kinds[("pool",)] <= {"seed", "paraphrase"} and "seed" in kinds[("pool",)]
    assert kinds[("compose",)] == {"compose"}
    assert kinds[("soft",)] <= {"soft", "seed"}  # seeds only as the fallback when no soft prompt decodes to a usable instruction
    assert {"seed", "compose"} <= kinds[("pool", "compose", "soft")]


def test_extra_instructions_join_the_seeds_and_their_compositions(tiny):
    task = _task(["Keep it short."])
    extra = "Write a sports report that names the players."
    cfg = load_config(recipe=False, overrides={"reveal": {"candidates": ["pool", "compose"], "n_paraphrases": 0, "extra_instructions": [extra]}})
    texts: dict[str, list[str]] = {}
    for c in build_candidates(tiny.model, tiny.tokenizer, task, cfg.reveal, seed=0):
        texts.setdefault(c.kind, []).append(c.text)
    assert extra in texts["seed"] and f"{extra} Keep it short." in texts["compose"]
    assert len(texts["seed"]) == len(task.seed_instructions) + 1


def test_builtin_tasks_declare_modifiers():
    for name in ("toxicity", "ner", "code"):
        assert len(get_task(name).modifiers) >= 4


def test_forget_samples_add_responses_from_the_top_instructions_only(tiny):
    from revrel.reveal.optimize import reveal

    task = get_task("tiny")
    oracle = task.oracle()
    embed = lambda texts: __import__("torch").randn(len(texts), 4)  # noqa: E731 - diversity needs any embedding
    base = {"optimizer": "fixed", "k": 2, "top": 2, "relevance_threshold": 0.0, "max_new_tokens": 4}
    plain = reveal(tiny.model, tiny.tokenizer, task, oracle, embed, load_config(recipe=False, overrides={"reveal": base}).reveal)
    more = reveal(tiny.model, tiny.tokenizer, task, oracle, embed, load_config(recipe=False, overrides={"reveal": {**base, "forget_samples": 3}}).reveal)
    n = len(task.seed_instructions)
    assert plain.generations == 2 * n and more.generations == 2 * n + 2 * 3
    extra = [e for e in more.evaluated if e.get("extra_samples")]
    assert len(extra) == 2 and all(len(e["responses"]) == 5 == len(e["relevances"]) for e in extra)
    assert {e["instruction"] for e in extra} == {r["instruction"] for r in more.table(2)}
    assert len(more.forget) > len(plain.forget)


def test_same_draws_give_every_round_the_same_samples_of_the_same_model(tiny):
    from revrel.reveal.optimize import reveal

    task = get_task("tiny")
    oracle = task.oracle()
    embed = lambda texts: __import__("torch").randn(len(texts), 4)  # noqa: E731

    def responses(round_, same):
        cfg = load_config(recipe=False, overrides={"reveal": {"optimizer": "fixed", "k": 2, "max_new_tokens": 6, "same_draws": same}}).reveal
        return [r for e in reveal(tiny.model, tiny.tokenizer, task, oracle, embed, cfg, round_=round_).evaluated for r in e["responses"]]

    assert responses(1, True) == responses(2, True)
    assert responses(1, False) != responses(2, False)


def test_random_choice_follows_the_same_schedule_seeds_first_then_budget_others(tiny):
    from revrel.reveal.optimize import reveal

    task = _task(["Be rude.", "Keep it short."])
    embed = lambda texts: __import__("torch").randn(len(texts), 4)  # noqa: E731
    for seed_first in (True, False):
        cfg = load_config(recipe=False, overrides={"reveal": {"optimizer": "random", "candidates": ["pool", "compose"], "n_paraphrases": 0, "budget": 3,
                                             "k": 1, "max_new_tokens": 3, "seed_first": seed_first}}).reveal
        kinds = [e["kind"] for e in reveal(tiny.model, tiny.tokenizer, task, task.oracle(), embed, cfg).evaluated]
        n_seeds = len(task.seed_instructions) if seed_first else 0
        assert kinds[:n_seeds] == ["seed"] * n_seeds and len(kinds) == n_seeds + 3
        if seed_first:
            assert kinds[n_seeds:] == ["compose"] * 3  # the random arms are drawn from the non-seed candidates


def test_every_forget_rule_runs_through_reveal(tiny):
    from revrel.reveal.optimize import reveal

    task = get_task("tiny")
    oracle = task.oracle()
    embed = lambda texts: __import__("torch").randn(len(texts), 8)  # noqa: E731
    base = {"optimizer": "fixed", "k": 3, "top": 2, "relevance_threshold": 0.0, "max_new_tokens": 6}
    for rule in ("pulls", "instructions", "greedy"):
        res = reveal(tiny.model, tiny.tokenizer, task, oracle, embed, load_config(recipe=False, overrides={"reveal": {**base, "forget_from": rule}}).reveal)
        generated = {t for e in res.evaluated for t in e["responses"]}
        assert res.forget and all(r["response"] in generated for r in res.forget), rule
        assert len(res.forget) <= 2 * 3 or rule == "instructions", rule
