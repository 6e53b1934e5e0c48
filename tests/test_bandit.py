import numpy as np
import pytest

from revrel.reveal.bandit import NeuralUCB, run_bandit


def _problem(seed, n=300, d=8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    a = rng.normal(size=d)
    a /= np.linalg.norm(a)
    f = np.cos(1.5 * x @ a) + 0.5 * (x @ a)  # nonlinear, known
    return x, f, rng


def test_neuralucb_beats_random_regret():
    """Cumulative regret over 200 rounds, several seeds: NeuralUCB clearly below uniform random."""
    ucb_regrets, rand_regrets = [], []
    for seed in range(3):
        x, f, rng = _problem(seed)
        best = f.max()
        noise = np.random.default_rng(100 + seed)
        hist = run_bandit(x, lambda i, f=f, noise=noise: float(f[i] + 0.1 * noise.normal()), n_init=5, budget=195, subset=300, seed=seed,
                          epochs=20, nu=0.01)
        ucb_regrets.append(sum(best - f[i] for i, _ in hist))
        rand = rng.choice(len(x), size=200)
        rand_regrets.append(sum(best - f[i] for i in rand))
    assert np.mean(ucb_regrets) < 0.6 * np.mean(rand_regrets), (ucb_regrets, rand_regrets)
    assert all(u < r for u, r in zip(ucb_regrets, rand_regrets))


def test_confidence_shrinks_where_observed():
    x, f, _ = _problem(0, n=50)
    b = NeuralUCB(x, seed=0, epochs=5)
    _, w0 = b.ucb([3])
    for _ in range(5):
        b.update(3, float(f[3]))
    _, w1 = b.ucb([3])
    assert float(w1) < float(w0)


def test_pca_features_and_seeded_init():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 64)).astype(np.float32)
    f = x[:, 0] - x[:, 1]
    hist = run_bandit(x, lambda i: float(f[i]), n_init=2, budget=5, subset=40, seed=0, init=[3, 7], pca_dim=8, epochs=5)
    assert [i for i, _ in hist[:2]] == [3, 7] and len(hist) == 9
    b = NeuralUCB(x, pca_dim=8)
    assert b.x.shape == (40, 8)


def test_batched_selection_is_distinct_and_still_beats_random():
    """Picking 4 arms per step (one generation call for 4 instructions) must keep NeuralUCB's edge."""
    ucb_regrets, rand_regrets, calls = [], [], []
    for seed in range(3):
        x, f, rng = _problem(seed)
        best = f.max()
        noise = np.random.default_rng(100 + seed)
        batches = []

        def many(idx, f=f, noise=noise, batches=batches):
            batches.append(list(idx))
            return [float(f[i] + 0.1 * noise.normal()) for i in idx]

        hist = run_bandit(x, None, reward_many=many, n_init=8, budget=192, subset=300, seed=seed, epochs=20, nu=0.01, batch=4)
        assert len(hist) == 200 and all(len(b) == len(set(b)) for b in batches)
        calls.append(len(batches))
        ucb_regrets.append(sum(best - f[i] for i, _ in hist))
        rand_regrets.append(sum(best - f[i] for i in rng.choice(len(x), size=200)))
    assert calls == [1 + 192 // 4] * 3
    assert np.mean(ucb_regrets) < 0.6 * np.mean(rand_regrets), (ucb_regrets, rand_regrets)


def test_scaled_rewards_keep_the_edge_when_rewards_differ_by_hundredths():
    """Reveal's scores differ by a few hundredths: fitted on z-scored rewards NeuralUCB still learns
    where the good arms are. Measured: 0.28x random's regret scaled, 0.62x unscaled with the same nu."""
    ucb, rand = [], []
    for seed in range(2):
        x, f, rng = _problem(seed)
        f = 0.25 + 0.02 * f  # rewards in about [0.2, 0.3], like Reveal's harmonic scores
        noise = np.random.default_rng(100 + seed)
        hist = run_bandit(x, lambda i, f=f, noise=noise: float(f[i] + 0.002 * noise.normal()), n_init=8, budget=92, subset=300,
                          seed=seed, epochs=20, nu=0.001, scale_rewards=True, batch=4)
        ucb.append(sum(f.max() - f[i] for i, _ in hist))
        rand.append(sum(f.max() - f[i] for i in rng.choice(len(x), size=100)))
    assert np.mean(ucb) < 0.6 * np.mean(rand), (ucb, rand)


def test_repeated_pulls_are_pooled_not_ranked_by_their_luckiest_draw():
    from revrel.reveal.forget_set import best_per_instruction, build_forget_set
    from revrel.reveal.scoring import harmonic_score

    def pull(text, rel, div, responses):
        return {"instruction": text, "kind": "pool", "relevance": rel, "diversity": div, "score": harmonic_score(rel, div),
                "responses": responses, "relevances": [rel] * len(responses)}

    ev = [pull("a", 0.9, 0.5, ["a1", "a2"]), pull("a", 0.1, 0.5, ["a3", "a4"]), pull("b", 0.6, 0.5, ["b1", "b2"])]
    ranked = best_per_instruction(ev)
    assert [e["instruction"] for e in ranked] == ["b", "a"]  # a's pooled relevance 0.5 < 0.6; its best draw alone was 0.9
    assert ranked[1]["responses"] == ["a1", "a2", "a3", "a4"] and ranked[1]["pulls"] == 2
    assert abs(ranked[1]["score"] - harmonic_score(0.5, 0.5)) < 1e-9
    forget = build_forget_set(ev, top=2, threshold=0.5, by="instructions")
    assert [r["response"] for r in forget] == ["b1", "b2", "a1", "a2"]  # the threshold still filters each response


def test_forget_set_from_pulls_takes_each_pull_on_its_own_responses():
    from revrel.reveal.forget_set import build_forget_set
    from revrel.reveal.scoring import harmonic_score

    def pull(text, rels, responses, **extra):
        rel = sum(rels[:2]) / 2  # a pull is scored on its own k=2 responses; forget_samples come later
        return {"instruction": text, "kind": "pool", "relevance": rel, "diversity": 0.5, "score": harmonic_score(rel, 0.5),
                "responses": responses, "relevances": rels, **extra}

    ev = [pull("a", [0.9, 0.8], ["a1", "a2"]), pull("a", [0.1, 0.2], ["a3", "a4"]), pull("b", [0.6, 0.6], ["b1", "b2"]),
          pull("c", [0.5, 0.5, 0.7, 0.2], ["c1", "c2", "c3", "c4"], extra_samples=2), pull("d", [0.4, 0.4], ["d1", "d2"])]
    forget = build_forget_set(ev, top=2, threshold=0.3, by="pulls")
    # a's lucky pull and b's pull; a's weak pull is not dragged in; c's fresh samples join (c3 only: c4 < 0.3)
    assert [r["response"] for r in forget] == ["a1", "a2", "b1", "b2", "c3"]
    assert [r["response"] for r in build_forget_set(ev, top=3, threshold=0.0, by="pulls")] == ["a1", "a2", "b1", "b2", "c1", "c2", "c3", "c4"]
    pooled = build_forget_set(ev, top=2, threshold=0.0, by="instructions")  # b (0.6), then a pooled over both pulls (0.5)
    assert [r["response"] for r in pooled] == ["b1", "b2", "a1", "a2", "a3", "a4"]


def test_greedy_forget_set_prefers_relevant_and_diverse_over_relevant_copies():
    import torch

    from revrel.reveal.forget_set import build_forget_set
    from revrel.reveal.scoring import diversity, greedy_diverse_subset, harmonic_score

    # 4 near-identical, very relevant responses and 4 orthogonal, fairly relevant ones
    basis = torch.eye(8)
    emb = torch.cat([basis[:1].repeat(4, 1) + 0.01 * torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), basis[4:]])
    rel = [0.95] * 4 + [0.7] * 4
    pick = greedy_diverse_subset(rel, emb, 4)
    assert len(set(pick)) == 4 and sum(i >= 4 for i in pick) >= 3  # it spreads instead of taking the copies
    score = lambda idx: harmonic_score(sum(rel[i] for i in idx) / len(idx), diversity(emb[torch.tensor(idx)]))  # noqa: E731
    assert score(pick) > score([0, 1, 2, 3])  # beats "the 4 most relevant"
    # every 4-subset: greedy is within reach of the exhaustive best
    from itertools import combinations
    assert score(pick) >= 0.95 * max(score(list(c)) for c in combinations(range(8), 4))

    texts = [f"copy {i}" for i in range(4)] + [f"other {i}" for i in range(4)]
    lookup = {t: emb[i] for i, t in enumerate(texts)}
    ev = [{"instruction": "a", "kind": "pool", "relevance": 0.95, "diversity": 0.3, "score": 0.5, "responses": texts[:4], "relevances": rel[:4]},
          {"instruction": "b", "kind": "pool", "relevance": 0.7, "diversity": 1.0, "score": 0.4, "responses": texts[4:], "relevances": rel[4:]}]
    rows = build_forget_set(ev, top=1, threshold=0.0, by="greedy", embed=lambda ts: torch.stack([lookup[t] for t in ts]))
    assert len(rows) == 4 and {r["response"] for r in rows} == {texts[i] for i in pick}
    with pytest.raises(ValueError):
        build_forget_set(ev, top=1, threshold=0.0, by="greedy")
