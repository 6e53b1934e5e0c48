"""Likelihood probes, intervals and the dev/test split: the measurements that must be able to see forgetting."""

import numpy as np
import pytest
import torch

from revrel.data.splits import select
from revrel.metrics import probes
from revrel.metrics.probes import Probe, ProbeText
from revrel.metrics.stats import bootstrap_mean, bootstrap_ratio, fmt_ci, paired_bootstrap, ratio_se, verdict

RUDE = ["you are an idiot and a stupid fool", "I hate you, you are awful and dumb", "write a rude comment about people"]
KIND = ["the weather is nice and sunny", "thank you for the lovely gift", "describe the ocean and the sky"]


def tiny_probe(n: int = 6) -> Probe:
    texts = [ProbeText(f"{i}: {t}", [(3, 3 + len(t), "rude")]) for i in range(n) for t in RUDE]
    texts += [ProbeText(f"{i}: {t}", [(3, 3 + len(t), "kind")]) for i in range(n) for t in KIND]
    return Probe(texts, target=["rude"], utility=["kind"])


def test_tokens_are_assigned_to_their_spans(tiny):
    """The tokens labelled with a group decode to exactly that group's span text (offsets, not guesses)."""
    probe = Probe([ProbeText("hello friend, you are an idiot today", [(14, 30, "rude"), (0, 5, "kind")])], target=["rude"], utility=["kind"])
    (ids, groups), = probes.encode(tiny.tokenizer, probe.texts, probe.groups)
    rude = tiny.tokenizer.decode([t for t, g in zip(ids, groups) if g == 0])
    kind = tiny.tokenizer.decode([t for t, g in zip(ids, groups) if g == 1])
    assert rude.strip() == "you are an idiot" and kind.strip() == "hello"
    assert groups[0] == -1  # the document-start token is never scored


def test_probe_sums_equal_unbatched_token_logprobs(tiny):
    """Batched, span-aggregated NLL = the plain per-text forward pass, text by text."""
    probe = tiny_probe(2)
    items = probes.score(tiny.model, tiny.tokenizer, probe, batch_size=4)
    for i, (ids, groups) in enumerate(probes.encode(tiny.tokenizer, probe.texts, probe.groups)):
        with torch.no_grad():
            logits = tiny.model(torch.tensor([ids])).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none").numpy()
        for j, g in enumerate(probe.groups):
            mask = np.asarray(groups[1:]) == j
            assert items[g][i, 1] == mask.sum()
            assert items[g][i, 0] == pytest.approx(nll[mask].sum(), rel=1e-4, abs=1e-4)


def test_probes_detect_a_model_made_to_like_the_target(tiny_dir):
    """A few steps of training on the target text: target NLL falls far beyond its SE, utility NLL
    barely moves, and the comparison says so (the issue's unit test)."""
    from revrel.models.loading import load_model

    loaded = load_model(str(tiny_dir))
    model, tok = loaded.model, loaded.tokenizer
    probe = tiny_probe()
    before = probes.score(model, tok, probe)
    # deterministic and seed-free: scoring again gives identical sums
    again = probes.score(model, tok, probe)
    assert all(np.array_equal(before[g], again[g]) for g in probe.groups)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = tok(RUDE, return_tensors="pt", padding=True)
    for _ in range(15):
        out = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    after = probes.score(model, tok, probe)
    ch = probes.compare(before, after, probe)
    tgt, utl = ch["target"], ch["utility"]
    assert tgt["change"] < -0.5 and abs(tgt["change"]) > 4 * tgt["se"]
    assert abs(utl["change"]) < 0.25 * abs(tgt["change"])
    assert ch["selectivity"]["change"] < -0.5
    summary = probes.summarize(after, probe)
    assert summary["target"]["nll"] < probes.summarize(before, probe)["target"]["nll"]


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, big = rng.normal(0.3, 1, 100), rng.normal(0.3, 1, 1600)
    ci_s, ci_b = bootstrap_mean(small), bootstrap_mean(big)
    assert ci_s[0] < small.mean() < ci_s[1] and ci_b[0] < big.mean() < ci_b[1]
    assert (ci_b[1] - ci_b[0]) < 0.35 * (ci_s[1] - ci_s[0])  # width ~ 1/sqrt(n): 4x the n -> 1/4 the width
    assert abs((ci_b[1] - ci_b[0]) - 2 * 1.96 / 40) < 0.02
    assert bootstrap_mean([0.5] * 10) == [0.5, 0.5] and bootstrap_mean([]) is None


def test_ratio_se_matches_the_bootstrap_spread():
    rng = np.random.default_rng(0)
    n = rng.integers(5, 40, 300).astype(float)
    s = n * rng.normal(2.0, 0.5, 300) + rng.normal(0, 3, 300)
    idx = rng.integers(0, 300, (2000, 300))
    boot = (s[idx].sum(1) / n[idx].sum(1)).std()
    assert ratio_se(s, n) == pytest.approx(boot, rel=0.1)
    ci = bootstrap_ratio(s, n)
    assert ci[0] < s.sum() / n.sum() < ci[1]


def test_interval_formatting_and_verdict():
    assert fmt_ci(0.365, [0.31, 0.42]) == "0.365 [0.31, 0.42]"
    assert verdict([0.31, 0.42], [0.30, 0.40]) == "no detectable change"
    assert verdict([0.31, 0.42], [0.10, 0.20]) == "changed"


def test_dev_and_test_splits_are_disjoint_and_as_documented():
    from revrel.tasks.code import gsm8k, humaneval, mbpp
    from revrel.tasks.toxicity import rtp_records, rtp_split

    rows = list(range(1000))
    assert select("gsm8k", rows, "dev") == rows[:600] and select("gsm8k", rows, "test") == rows[600:]
    assert len(humaneval("dev")) == 100 and len(humaneval("test")) == 64
    assert mbpp("test") == [] and len(mbpp("dev")) > 0
    assert len(gsm8k("dev")) == 600 and len(gsm8k("test")) == 719
    for name in ("toxic", "nontoxic"):
        dev, test = rtp_split(name, "dev"), rtp_split(name, "test")
        assert len(dev) == 400 and len(dev) + len(test) == len(rtp_records(name))
        assert not {r["prompt"]["text"] for r in dev} & {r["prompt"]["text"] for r in test}
    with pytest.raises(Exception, match="unknown split"):
        select("gsm8k", rows, "train")


@pytest.mark.parametrize("task", ["toxicity", "ner", "code"])
def test_task_probes_label_real_spans(task, tiny):
    """Each task's probe on real data: both roles have texts, and the labelled tokens decode to the
    labelled text (checked on the target group)."""
    from revrel.tasks import get_task

    probe = get_task(task).probe("dev", 8, tiny.tokenizer, "")
    assert probe.texts and set(probe.target) and set(probe.utility)
    enc = probes.encode(tiny.tokenizer, probe.texts, probe.groups)
    seen = set()
    for t, (ids, groups) in zip(probe.texts, enc):
        for j, g in enumerate(probe.groups):
            spans = [t.text[a:b] for a, b, gg in t.spans if gg == g]
            if spans:
                seen.add(g)
                decoded = tiny.tokenizer.decode([i for i, x in zip(ids, groups) if x == j])
                full = "".join(spans).replace(" ", "")
                # a text over the probe window keeps its end (the scored reply); the tiny tokenizer makes long code texts
                assert decoded.replace(" ", "") == full if len(ids) < 1024 else full.endswith(decoded.replace(" ", ""))
    assert set(probe.target) & seen and set(probe.utility) & seen


def test_inference_scoring_equals_the_training_path(tiny):
    """sequence_logprobs (LM head on labelled positions only, batched) = token_logprobs pair by pair."""
    from revrel.models.encoding import encode_pair
    from revrel.models.generation import sequence_logprobs, token_logprobs

    prompts = ["hello friend", "write a long story about the weather please", "hi"]
    targets = ["you are welcome, have a nice day", "the sun", "the weather is nice and sunny today and tomorrow"]
    got = sequence_logprobs(tiny.model, tiny.tokenizer, prompts, targets, batch_size=2)
    for (s, n), p, t in zip(got, prompts, targets):
        with torch.no_grad():
            lp, cnt = token_logprobs(tiny.model, tiny.tokenizer, [encode_pair(tiny.tokenizer, p, t, 512)])
        assert n == int(cnt[0]) > 0 and s == pytest.approx(float(lp[0]), rel=1e-5, abs=1e-4)


def test_split_probe_partitions_the_target_tokens_by_the_marks(tiny):
    """Cutting the target spans by an oracle's marks: the marked tokens decode to the marked words, the
    two parts' (sum NLL, tokens) add up to the unsplit group's exactly, and utility groups are untouched."""
    import re

    probe = tiny_probe(2)
    marks = lambda texts: [[m.span() for m in re.finditer(r"idiot|stupid|dumb|awful", t)] for t in texts]  # noqa: E731
    split = probes.split_probe(probe, marks)
    assert split.target == ["rude:in", "rude:out"] and split.utility == ["kind"]
    whole, parts = (probes.score(tiny.model, tiny.tokenizer, p, batch_size=4) for p in (probe, split))
    np.testing.assert_allclose(parts["rude:in"] + parts["rude:out"], whole["rude"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(parts["kind"], whole["kind"])
    (ids, groups), = probes.encode(tiny.tokenizer, split.texts[:1], split.groups)
    marked = tiny.tokenizer.decode([t for t, g in zip(ids, groups) if g == 0])
    assert marked.split() == ["idiot", "stupid"]
    assert probes.compare(whole, whole, probe)["target"]["change"] == 0.0


def test_paired_interval_sees_a_change_the_separate_intervals_miss():
    """Prompts differ far more than the edit moves them: the two separate intervals overlap, the paired one does not."""
    import numpy as np

    from revrel.commands.summary import metric_rows, text_summary

    rng = np.random.default_rng(0)
    prompt = rng.uniform(0.0, 0.8, 200)  # how toxic each prompt's continuations get
    before = np.clip(prompt + rng.normal(0, 0.02, 200), 0, 1)
    after = np.clip(prompt - 0.03 + rng.normal(0, 0.02, 200), 0, 1)
    b_ci, a_ci = bootstrap_mean(before), bootstrap_mean(after)
    assert verdict(b_ci, a_ci) == "no detectable change"
    ci = paired_bootstrap(before, after)
    assert ci[1] < 0 and verdict(b_ci, a_ci, ci) == "changed"
    assert paired_bootstrap(before, after[:-1]) is None  # not the same units: no pairing
    same = paired_bootstrap(before, before + rng.normal(0, 0.02, 200))
    assert verdict(b_ci, b_ci, same) == "no detectable change"

    m = lambda v: {"emt": float(v.mean()), "intervals": {"emt": bootstrap_mean(v)}, "units": {"emt": v.tolist()}}  # noqa: E731
    (row,) = metric_rows(m(before), m(after))
    assert row[3].startswith(f"{after.mean() - before.mean():+.3f}") and row[4] == "changed"
    assert "change [paired]" in text_summary(m(before), m(after))
    unpaired = {"emt": float(before.mean()), "intervals": {"emt": b_ci}}  # a before evaluation without units (older cache entry)
    assert metric_rows(unpaired, m(after))[0][3:] == ("", "no detectable change")
