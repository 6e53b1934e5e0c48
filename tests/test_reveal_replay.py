"""The offline replay benchmark (benchmarks/reveal_replay.py) on a synthetic recorded pool."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]


def _replay():
    spec = importlib.util.spec_from_file_location("reveal_replay", ROOT / "benchmarks" / "reveal_replay.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pool(stem: Path, n: int = 20, samples: int = 8, d: int = 6) -> np.ndarray:
    """Candidates whose true relevance is a known function of their features; 4 of them are seeds."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(n, d, generator=g)
    true = torch.sigmoid(2 * feats[:, 0])  # relevance driven by feature 0
    rel = (true[:, None] + 0.05 * torch.randn(n, samples, generator=g)).clamp(0, 1)
    save_file({"features": feats, "instruction_embedding": feats.clone(), "relevance": rel,
               "response_embedding": torch.randn(n, samples, 16, generator=g).half()}, f"{stem}.safetensors")
    cands = [{"text": f"instruction {i}", "kind": "seed" if i < 4 else "pool", "source": ""} for i in range(n)]
    Path(f"{stem}.json").write_text(json.dumps({"candidates": cands}))
    return rel.double().mean(1).numpy()


def test_replay_pairs_draws_and_finds_the_learnable_arms(tmp_path):
    rr = _replay()
    true = _pool(tmp_path / "pool")
    pool = rr.Pool(str(tmp_path / "pool"))
    assert np.allclose(pool.true_rel, true)
    kw = {"nu": 0.001, "pca_dim": 0, "hidden": 32, "epochs": 30, "batch": 2, "subset": 20, "scale_rewards": True}
    out = rr.compare(pool, 6, k=4, budget=6, top=3, alpha=0.5, bandit_kw=kw, rank="observed", threshold=0.0, forget_samples=0)
    # the seeds are scored on the same draws by both optimizers, so they pick the same seed
    assert out["seed_pick"]["diff"] == 0.0
    # relevance is a smooth function of the features, so the bandit's arms beat uniform choice
    assert out["chosen"]["neuralucb"] > out["chosen"]["random"]
    assert 0 < out["forget_matched"]["neuralucb"] <= 1 and out["forget_size"]["random"] == 12
