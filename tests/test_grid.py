"""release.grid: edits on a Q4_1-sourced model are rounded onto its grid, so llama.cpp's Q4_1 rounding keeps them."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from revrel.config import load_config
from revrel.models.loading import load_model
from revrel.pipeline import unlearn
from revrel.release.grid import Q41Grid

from tiny import tiny_overrides

Q41 = GGMLQuantizationType.Q4_1


def q41_round_trip(w: torch.Tensor) -> torch.Tensor:
    """What a Q4_1 GGUF export and reload does to a weight (the gguf package's quantizer, llama.cpp's rounding)."""
    arr = np.ascontiguousarray(w.detach().numpy().astype(np.float32))
    return torch.from_numpy(quants.dequantize(quants.quantize(arr, Q41), Q41).reshape(arr.shape).copy())


def on_grid(model) -> None:
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and mod.weight.shape[-1] % 32 == 0:
                mod.weight.copy_(q41_round_trip(mod.weight))


@pytest.fixture()
def grid_model(tiny):
    on_grid(tiny.model)
    return tiny


def test_small_edits_vanish_in_q4_1_unless_snapped_and_snapping_is_unbiased_and_exact(grid_model):
    model = grid_model.model
    grid = Q41Grid.of(model)
    assert grid is not None and grid.info()["tensors"] >= 7 * 2  # q, k, v, o, gate, up, down of each layer
    name = "model.layers.0.mlp.down_proj"
    w = model.get_submodule(name).weight
    w0 = w.detach().clone()
    others = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(name)}
    step = grid.tensors[name].step.repeat_interleave(32, 1).reshape(w.shape)
    delta = 0.2 * step * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)).clamp(-2, 2)  # |delta| < half a step
    lo = grid.tensors[name].lo.repeat_interleave(32, 1).reshape(w.shape)
    delta = (w0 + delta).clamp(lo, lo + 15 * step) - w0  # each block's min and max stay (else the grid itself moves) ...
    delta.view(-1, 32).scatter_(1, grid.tensors[name].ends, 0.0)  # ... even where several weights share them
    with torch.no_grad():
        w.add_(delta)
    assert torch.equal(q41_round_trip(w), w0)  # the problem: nearest rounding sends the whole edit back
    grid.snap(model, seed=3)
    snapped = w.detach().clone()
    assert torch.equal(q41_round_trip(snapped), snapped) or torch.allclose(q41_round_trip(snapped), snapped, atol=1e-6, rtol=0)
    moved = snapped - w0
    assert float(moved.abs().max() / step.max()) <= 1.0 + 1e-4 and (moved != 0).float().mean() > 0.05  # whole steps, some weights
    assert abs(float(moved.sum() - delta.sum())) < 4 * float((step**2 * 0.25).sum().sqrt())  # unbiased (4 SE)
    assert all(torch.equal(p, others[n]) for n, p in model.named_parameters() if n in others)  # untouched tensors stay
    with torch.no_grad():
        w.copy_(w0 + delta)
    assert torch.equal(grid.snap(model, seed=3).get_submodule(name).weight, snapped)  # same draws for a seed
    with torch.no_grad():
        w.copy_(w0 + 2 * delta.clamp(min=0))
    grid.snap(model, seed=3)
    assert bool(((w - w0) >= (snapped - w0).clamp(min=0)).all())  # a stronger edit moves a superset (common random numbers)


def test_random_weights_have_no_grid(tiny):
    assert Q41Grid.of(tiny.model) is None


def test_run_on_a_q4_1_model_keeps_its_edits_on_the_grid(tiny_dir, tmp_path):
    src = load_model(str(tiny_dir))
    on_grid(src.model)
    folder = tmp_path / "q41"
    src.model.save_pretrained(folder)
    src.tokenizer.save_pretrained(folder)
    original = {n: p.detach().clone() for n, p in src.model.named_parameters()}
    edits = {"edits": [{"negate": {"strength": 4.0}}], "rounds": 1, "pem": {"lr": 0.05, "epochs": 2}}
    on = unlearn(load_config(None, tiny_overrides(tmp_path / "on", folder, release=edits)))
    assert on["grid"]["tensors"] >= 14
    model = load_model(str(tmp_path / "on" / "model")).model
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, original[n])]
    assert changed  # the edit is there ...
    for mod_name, mod in model.named_modules():
        if mod_name + ".weight" in changed and isinstance(mod, torch.nn.Linear):
            assert torch.allclose(q41_round_trip(mod.weight), mod.weight, atol=1e-6, rtol=0), mod_name  # ... and on the grid
    plain = unlearn(load_config(None, tiny_overrides(tmp_path / "plain", tiny_dir, release=edits)))
    assert plain["grid"] is None  # a model that is not on a grid: edits stay plain float32
