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
