"""Reveal: optimized instructions make the model show what it knows about the forget target."""

from revrel.reveal.bandit import NeuralUCB, run_bandit
from revrel.reveal.optimize import RevealResult, build_candidates, reveal
from revrel.reveal.scoring import diversity, harmonic_score, vendi_score

__all__ = ["NeuralUCB", "RevealResult", "build_candidates", "diversity", "harmonic_score", "reveal", "run_bandit", "vendi_score"]
