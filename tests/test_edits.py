"""Release as a list of edits: a sweep (benchmarks/release_sweep.py, Stack) and a run's round compose the very same
edits, so the sweep's model at the run's strengths is the run's model, weight for weight."""

import sys
from pathlib import Path

import torch

from tiny import tiny_overrides


def test_a_sweep_at_the_runs_strengths_rebuilds_the_runs_model(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    from revrel.config import load_config
    from revrel.models.loading import load_model
    from revrel.pipeline import unlearn
    from revrel.tasks import get_task

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from release_sweep import prepare_point
    finally:
        sys.path.pop(0)
    out = tmp_path / "run"
    edits = [{"prune": {"strength": 0.05}}, {"negate": {"strength": 0.5, "unit": "task"}}]
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1, "edits": edits})))
    r1 = report["rounds"][0]
    assert [(e["edit"], e["strength"]) for e in r1["edits"]] == [("prune", 0.05), ("negate", 0.5)]
    cfg = load_config(out / "config.yaml")
    loaded = load_model(str(tiny_dir))
    original = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    stack = prepare_point(out, cfg, loaded, get_task(cfg.task))  # the run folder has what a record has
    model = stack.set(0.5)
    run_w = load_file(str(out / "model" / "model.safetensors"))
    mine = model.state_dict()
    changed = [k for k in run_w if not torch.equal(run_w[k], original[k])]
    assert changed and any("down_proj" in k for k in changed) and any("q_proj" in k for k in changed)
    assert all(torch.equal(mine[k], run_w[k]) for k in run_w), [k for k in run_w if not torch.equal(mine[k], run_w[k])][:3]
    back = stack.set(0.0).state_dict()
    assert all(torch.equal(back[k], original[k]) for k in original)  # lifting every edit gives the original back



def _scale_edit(max_strength: float = 100.0, variants=("",)):
    """A real Edit on a one-weight model: strength x sets the weight to 1 + x (variant b: 1 + 2x)."""
    from revrel.release.edit import Edit

    class Scale(Edit):
        name = "scale"

        def prepare(self, model, tokenizer, data):
            self.model, self.factor = model, 1.0
            return model

        def variants(self):
            return list(variants)

        def use(self, variant):
            self.set(0.0)
            self.factor = 2.0 if variant == "b" else 1.0

        def set(self, strength):
            with torch.no_grad():
                self.model.weight.fill_(1.0 + self.factor * strength)
            self.strength = strength
            return self.model

    Scale.max_strength = max_strength
    edit = Scale(type("Cfg", (), {"strength": 1.0})())
    edit.prepare(torch.nn.Linear(1, 1, bias=False), None, None)
    return edit


def _cost(model) -> float:
    return float(model.weight) - 1.0  # the keep-side cost of strength x is x (2x for variant b)


def test_line_search_finds_the_strongest_strength_within_the_limit_from_either_side():
    from revrel.release.edit import line_search

    for limit in (0.3, 5.0):  # below the start (halving, then bisecting) and above it (doubling, then bisecting)
        edit = _scale_edit()
        x, searched, cost = line_search(edit, 1.0, 8, _cost, limit)
        assert limit / 1.2 <= x <= limit and abs(cost - x) < 1e-6 and abs(_cost(edit.model) - x) < 1e-5  # within 20% of the best, left there
        held = [s["strength"] for s in searched if s["keep_cost"] <= limit]
        assert x == max(held) and all(s["strength"] > limit for s in searched if s["keep_cost"] > limit)
    edit = _scale_edit(max_strength=3.0)
    assert line_search(edit, 1.0, 8, _cost, 100.0)[0] == 3.0  # never above the edit's maximum
    edit = _scale_edit()
    x, searched, _ = line_search(edit, 1.0, 4, lambda m: _cost(m) + 1.0, 0.5)  # no strength is cheap enough
    assert x is None and len(searched) == 4 and float(edit.model.weight) == 1.0 and edit.strength == 0.0


def test_line_search_steps_where_the_costs_seen_put_the_limit():
    """A cost growing as the strength squared, limit 0.01 from 1.0: the log-log steps find a strength within 10% of
    the best (0.1) in 4 costs; halving and bisecting took 7 to reach 0.088. Costs that are not positive (a keep side
    that improves) fall back to doubling."""
    from revrel.release.edit import line_search

    edit = _scale_edit()
    x, searched, _ = line_search(edit, 1.0, 8, lambda m: _cost(m) ** 2, 0.01)
    assert 0.09 <= x <= 0.1 and len(searched) <= 4
    edit = _scale_edit(max_strength=8.0)
    x, searched, _ = line_search(edit, 1.0, 8, lambda m: -_cost(m), 0.01)
    assert [t["strength"] for t in searched] == [1.0, 2.0, 4.0, 8.0] and x == 8.0


def test_line_search_uses_the_budget_where_the_cost_is_steep():
    """A cost growing as the strength to the 8th (pruning near a cliff): a bracket within 20% can still leave half the
    budget unspent; the search goes on inside it until the kept strength costs at least USED of the limit."""
    from revrel.release.edit import USED, line_search

    for power in (2, 8, 16):
        edit = _scale_edit(max_strength=100.0)
        x, searched, cost = line_search(edit, 0.05, 8, lambda m, p=power: (_cost(m) / 0.5) ** p * 0.04, 0.04)
        assert cost >= USED * 0.04 and x <= 0.5 and len(searched) <= 6, (power, searched)


def test_choose_keeps_the_variant_that_forgets_most_at_its_own_budget_strength():
    from revrel.release.edit import choose

    edit = _scale_edit(variants=("a", "b"))
    # b costs twice as much per unit of strength, so its strength within 1.0 is half of a's; the gain says which
    # forgets more at that point: here b (gain = 3x of b vs x of a)
    gains = {"a": 1.0, "b": 3.0}
    x, _, cost, compared = choose(edit, 8, _cost, 1.0, gain=lambda m: gains[compared_variant(edit)] * edit.strength)
    assert compared["chosen"] == "b" and abs(x - 0.5) < 0.1 and cost <= 1.0
    assert float(edit.model.weight) == 1.0 + 2 * x  # the chosen variant is applied at its strength
    assert set(compared["variants"]) == {"a", "b"}


def compared_variant(edit) -> str:
    return "b" if edit.factor == 2.0 else "a"


def test_keep_probe_samples_the_whole_dev_split_until_every_keep_group_has_its_share():
    """A probe whose texts mix the target with the keep groups (NER: a person beside an organisation) and whose dev
    file runs in blocks (CoNLL: document by document) gave a keep side from the head of the file with few texts per
    group; the keep side now samples the whole split until each group has its share, scores a text's keep spans even
    where the text holds the target, never a target span, and a probe that already has its share is unchanged."""
    from types import SimpleNamespace

    from revrel.metrics.probes import Probe, ProbeText
    from revrel.release.budget import KEEP_TEXTS, keep_probe

    def mixed(split, n, tokenizer):  # every 2nd text holds a person; ORG in every text, MISC in every 5th
        texts = [ProbeText(f"s{i}", [(0, 1, "ORG")] + [(1, 2, "PER")] * (i % 2) + [(0, 2, "MISC")] * (i % 5 == 0))
                 for i in range(min(n, 20 * KEEP_TEXTS))]
        return Probe(texts, target=["PER"], utility=["ORG", "MISC"])

    p = keep_probe(SimpleNamespace(name="mixed", probe=mixed), None, [])
    count = {g: sum(any(s[2] == g for s in t.spans) for t in p.texts) for g in ("ORG", "MISC", "PER")}
    assert count["PER"] == 0 and count["MISC"] >= KEEP_TEXTS and count["ORG"] >= KEEP_TEXTS  # head of 200: 40 MISC
    assert len({t.text for t in p.texts}) == len(p.texts)
    index = sorted(int(t.text[1:]) for t in p.texts)
    assert sum(i % 2 for i in index) > len(index) / 4  # texts with a person give their organisations
    assert index[len(index) // 2] > 5 * KEEP_TEXTS  # half of it past the first quarter of the 20x split: not its head
    assert p.texts == keep_probe(SimpleNamespace(name="mixed", probe=mixed), None, []).texts  # the same on every run

    def enough(split, n, tokenizer):  # toxicity's shape: one group per text, KEEP_TEXTS of each in the first call
        return Probe([ProbeText(f"t{i}", [(0, 1, "toxic" if i % 2 else "benign")]) for i in range(2 * n)],
                     target=["toxic"], utility=["benign"])

    p = keep_probe(SimpleNamespace(name="enough", probe=enough), None, [])
    assert [t.text for t in p.texts] == [f"t{i}" for i in range(0, 2 * KEEP_TEXTS, 2)]


def _slot_edit(slot: int, head_only: bool, start: float = 1.0):
    """A real Edit that sets weight ``slot`` of a shared two-weight model to its strength."""
    from revrel.release.edit import Edit

    class Slot(Edit):
        name = f"slot{slot}"

        def prepare(self, model, tokenizer, data):
            self.model = model
            return model

        def set(self, strength):
            with torch.no_grad():
                self.model.weight[0, slot] = strength
            self.strength = strength
            return self.model

    Slot.head_only = head_only
    return Slot(type("Cfg", (), {"strength": start})())


def _jumpy_cost(model) -> float:
    """Slot 0 costs its strength; slot 1 too, plus a jump of 1.0 at 0.3 (a grid flip of a sensitive weight)."""
    a, b = (float(v) for v in model.weight[0])
    return a + b + (1.0 if b >= 0.3 else 0.0)


def test_the_budget_the_last_edit_leaves_goes_to_an_earlier_head_only_edit():
    """Two edits, limits 0.5 then 1.0; the second's cost jumps at 0.3, so it stops near 0.8 in all. A head-only first
    edit is searched again on top, up to the whole limit; one that is not head-only is left where it was."""
    from revrel.release.edit import USED, RoundData
    from revrel.rounds import apply_edits

    for head_only in (True, False):
        model = torch.nn.Linear(2, 1, bias=False).requires_grad_(False)
        model.weight.zero_()
        first, last = _slot_edit(0, head_only), _slot_edit(1, False)
        data = RoundData(task=None, forget=[], keep=[])
        model, done, kept, reverted = apply_edits(model, None, data, [first, last], _jumpy_cost, [0.5, 1.0], 10)
        assert not reverted and 0.28 <= done[1]["strength"] < 0.3
        total = _jumpy_cost(model)
        assert abs(kept["keep_cost"] - total) < 1e-4 and total <= 1.0
        if head_only:
            assert done[0]["strength"] > 0.6 and abs(float(model.weight[0, 0]) - done[0]["strength"]) < 1e-6 and total >= USED
            assert done[0]["top_up"]["line_search"][0]["strength"] < done[0]["strength"]
        else:
            assert 0.45 <= done[0]["strength"] <= 0.5 and "top_up" not in done[0] and total < USED
