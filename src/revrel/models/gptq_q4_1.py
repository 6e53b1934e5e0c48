"""GPTQ-style rounding onto the Q4_1 grid: keep an unlearned model's small edits through a 4-bit export.

Why: the default model arrives as Q4_1, so its weights already sit on that grid, and an unlearning
edit is mostly smaller than half a grid step. llama.cpp's round-to-nearest puts such weights back
where they were (99% of the toxicity preset's forgetting came back). Stochastic rounding keeps the
edit in expectation but adds independent noise to every edited weight, which costs utility. GPTQ
(Frantar et al., 2023) rounds one input column at a time and pushes each rounding error onto the
columns not yet rounded, weighted by the inverse Hessian of the layer's inputs on calibration text,
so the *outputs* ``W x`` on that text stay close to the unlearned model's. Each Q4_1 block keeps its
min and max exactly, so the gguf package's own Q4_1 quantizer finds the same grid and reproduces the
rounded values: the export itself stays llama.cpp's format, only the rounding choices differ.
"""

from __future__ import annotations

from pathlib import Path

import torch

from revrel.errors import RevrelError
from revrel.io import read_jsonl

BLOCK = 32


@torch.no_grad()
def input_hessians(model, tokenizer, texts: list[str], *, max_length: int = 256) -> dict[str, torch.Tensor]:
    """Per Linear layer whose input width fills whole Q4_1 blocks: ``X^T X`` summed over the calibration
    tokens, keyed by the weight's parameter name (``model.layers.0.mlp.up_proj.weight``)."""
    hs: dict[str, torch.Tensor] = {}
    seen: dict[int, tuple] = {}  # q/k/v (and gate/up) read the same input: one product for all of them (the input is
    # kept referenced until the text is done, so its id cannot be reused by another tensor meanwhile)
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and m.in_features % BLOCK == 0 and not name.endswith("lm_head"):
            key = f"{name}.weight"

            def hook(mod, inp, out, key=key):
                x = inp[0].detach()
                if id(x) not in seen:
                    flat = x.reshape(-1, x.shape[-1]).float()
                    seen[id(x)] = (x, flat.T @ flat)
                hs[key] = hs.get(key, 0) + seen[id(x)][1]

            hooks.append(m.register_forward_hook(hook))
    try:
        for t in texts:  # one text at a time: padded positions would add activations that no real token has
            ids = tokenizer(t, add_special_tokens=False)["input_ids"][:max_length]
            if ids:
                model(torch.tensor([ids]))
            seen.clear()
    finally:
        for h in hooks:
            h.remove()
    return hs


@torch.no_grad()
def gptq_inverse(h: torch.Tensor, *, damp: float = 0.01) -> torch.Tensor:
    """The upper Cholesky factor of the damped inverse Hessian that :func:`gptq_round_q4_1` steps with (float32);
    it depends on the inputs only, so a caller that rounds one layer many times computes it once."""
    H = h.to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H += damp * torch.diag(H).mean() * torch.eye(len(H), dtype=torch.float64)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).to(torch.float32)


@torch.no_grad()
def gptq_round_q4_1(w: torch.Tensor, h: torch.Tensor | None = None, *, damp: float = 0.01, lazy: int = 128,
                    grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None, hinv: torch.Tensor | None = None) -> torch.Tensor:
    """``w`` (out, in) rounded onto each (row, 32-column block)'s Q4_1 grid, column by column, with the
    rounding error of each column spread over the later columns by the inverse Hessian ``h`` (in, in).
    Each block's min and max element are kept exactly (they define the grid the quantizer will find).

    ``grid``: a fixed grid instead of ``w``'s own, as :class:`revrel.release.grid.Q41Grid` keeps it per tensor (each
    block's minimum and step, (blocks, 1), and the positions of its min and max, (blocks, 2), which are set to levels
    0 and 15): an edited weight goes back onto the original's grid. ``hinv``: :func:`gptq_inverse` of ``h``, if known."""
    W0 = w.detach().to(torch.float32)
    W = W0.clone()
    out_f, in_f = W.shape
    nb = in_f // BLOCK
    if grid is None:
        blocks = W.reshape(out_f, nb, BLOCK)
        lo, hi = blocks.min(-1).values, blocks.max(-1).values  # (out, n_blocks): the grid, fixed from the start
        d = (hi - lo) / 15
        pinned = torch.zeros_like(blocks, dtype=torch.bool)
        pinned.scatter_(-1, blocks.argmin(-1, keepdim=True), True)
        pinned.scatter_(-1, blocks.argmax(-1, keepdim=True), True)
        pinned, pin_value = pinned.reshape(out_f, in_f), W0
    else:
        glo, gstep, ends = grid
        lo, d = glo.reshape(out_f, nb).float(), gstep.reshape(out_f, nb).float()
        level = torch.full((out_f * nb, BLOCK), -1.0)
        level.scatter_(1, ends, torch.tensor([[0.0, 15.0]]).expand(len(level), 2).contiguous())
        level = level.reshape(out_f, in_f)
        pinned = level >= 0
        pin_value = lo.repeat_interleave(BLOCK, 1) + level.clamp(min=0) * d.repeat_interleave(BLOCK, 1)
    Hinv = hinv if hinv is not None else gptq_inverse(h, damp=damp)
    Q = torch.empty_like(W)
    for i1 in range(0, in_f, lazy):  # GPTQ's lazy batches: the far columns are updated once per batch
        i2 = min(i1 + lazy, in_f)
        W1, err1, H1 = W[:, i1:i2].clone(), torch.empty(out_f, i2 - i1), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j, b = i1 + i, (i1 + i) // BLOCK
            col = W1[:, i]
            k = torch.clamp(torch.round((col - lo[:, b]) / d[:, b].clamp(min=1e-12)), 0, 15)
            q = torch.where(pinned[:, j], pin_value[:, j], lo[:, b] + k * d[:, b])  # a block's min / max: as they were
            Q[:, j] = q
            err1[:, i] = (col - q) / H1[i, i]
            W1[:, i:] -= err1[:, i : i + 1] * H1[i : i + 1, i:]
        W[:, i2:] -= err1 @ Hinv[i1:i2, i2:]
    return Q.to(w.dtype)


def run_calibration_texts(run_dir: str | Path, n: int = 64) -> list[str]:
    """Calibration text for a run's export: its own keep-side retain set and its forget sets (all
    self-generated by the model: no real data), ``n`` of each at most, prompt and response joined."""
    root = Path(run_dir)
    files = [root / "retain.jsonl", root / "forget.jsonl"]
    texts = []
    for f in files:
        rows = read_jsonl(f, allow_empty=True) if f.is_file() else []
        texts += [f"{r.get('instruction', '')}\n{r.get('response', '')}" for r in rows[:n]]
    if not texts:
        raise RevrelError(f"--rounding gptq needs calibration text: {root} has no retain.jsonl / forget.jsonl (give a run folder)")
    return texts
