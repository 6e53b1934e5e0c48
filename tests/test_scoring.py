import torch

from revrel.reveal.scoring import diversity, harmonic_score, vendi_score


def test_vendi_identical_is_one():
    x = torch.randn(1, 16).repeat(5, 1)
    assert abs(vendi_score(x) - 1.0) < 1e-6


def test_vendi_orthogonal_is_k():
    for k in (2, 5, 8):
        assert abs(vendi_score(torch.eye(k, 16) * 3.0) - k) < 1e-6


def test_vendi_between_and_diversity_in_unit_interval():
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    v = vendi_score(x)
    assert 1.0 < v < 6.0
    assert 0 < diversity(x) <= 1.0


def test_harmonic_score_needs_both():
    assert harmonic_score(1.0, 1.0) > 0.99
    assert harmonic_score(0.0, 1.0) < 1e-3
    assert harmonic_score(1.0, 0.0) < 1e-3
    # alpha weights diversity: with alpha=1 only diversity counts
    assert abs(harmonic_score(0.2, 0.8, alpha=1.0) - 0.8) < 1e-4
    assert abs(harmonic_score(0.2, 0.8, alpha=0.0) - 0.2) < 1e-4
