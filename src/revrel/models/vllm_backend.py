"""Optional vLLM generation backend (``gen_backend: vllm``), for users on a GPU who outgrow the
plain transformers sampler.

vLLM loads the *original* weights once; the unlearned model is those weights plus the negated
round adapters. Negations are additive (W0 - sum_k lambda_k s_k B_k A_k), so every kept round is
folded into one LoRA of rank sum(r_k) with scaling 1 (:func:`combine_negated`), which vLLM applies
per request through ``LoRARequest``: no weight reload between rounds. Hidden-state features and
soft prompts still use the transformers model, which the view delegates to.

vLLM is not a dependency and is not installed in CI (it needs CUDA); :func:`combine_negated` is
tested against peft's stacked adapters, the engine calls follow vLLM's documented LLM API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from revrel.errors import RevrelError
from revrel.io import atomic_folder

VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # max_lora_rank values vLLM accepts


def combine_negated(folders: Sequence[Path], dst: Path) -> Path:
    """Write one LoRA adapter equal to the sum of the negated adapters in ``folders``.

    Each module's A matrices are stacked along the rank axis and its B matrices side by side, with
    each adapter's own scaling alpha/r folded into its B; the result has ``lora_alpha = r`` (scaling
    1), so B_cat A_cat = sum_k s_k B_k A_k exactly.
    """
    from safetensors.torch import load_file, save_file

    if not folders:
        raise RevrelError("no negated adapters to combine")
    A: dict[str, list[torch.Tensor]] = {}
    B: dict[str, list[torch.Tensor]] = {}
    config = None
    for f in folders:
        cfg = json.loads((Path(f) / "adapter_config.json").read_text())
        scaling = cfg["lora_alpha"] / cfg["r"]
        config = config or cfg
        for k, v in load_file(str(Path(f) / "adapter_model.safetensors")).items():
            if ".lora_A." in k:
                A.setdefault(k, []).append(v)
            elif ".lora_B." in k:
                B.setdefault(k, []).append(v * scaling)
    tensors = {k: torch.cat(v, 0).contiguous() for k, v in A.items()}
    tensors |= {k: torch.cat(v, 1).contiguous() for k, v in B.items()}
    rank = next(iter(tensors.values())).shape[0] if A else 0
    config = dict(config, r=rank, lora_alpha=rank, use_rslora=False)
    with atomic_folder(dst, "adapter") as tmp:
        (Path(tmp) / "adapter_config.json").write_text(json.dumps(config, indent=1))
        save_file(tensors, str(Path(tmp) / "adapter_model.safetensors"), metadata={"format": "pt"})
    return Path(dst)


class VLLMView:
    """Looks like the transformers model (attributes and calls delegate to it) but samples with vLLM."""

    is_vllm = True

    def __init__(self, hf_model, base_folder: str, adapter: Path | None, max_rank: int, dtype: str = "auto") -> None:
        try:
            from vllm import LLM  # type: ignore[import-not-found]
        except ImportError as exc:
            raise RevrelError("gen_backend=vllm needs vLLM (pip install vllm, on a CUDA machine); use gen_backend=hf") from exc
        self.hf_model = hf_model
        rank = next((r for r in VLLM_RANKS if r >= max_rank), VLLM_RANKS[-1])
        self.llm = LLM(model=base_folder, dtype=dtype, enable_lora=True, max_lora_rank=rank, max_loras=1)
        self.adapter, self.version = adapter, 0

    def set_adapter(self, adapter: Path | None) -> None:
        self.adapter, self.version = adapter, self.version + 1

    def __getattr__(self, name):
        return getattr(self.hf_model, name)

    def __call__(self, *args, **kwargs):
        return self.hf_model(*args, **kwargs)

    def generate_ids(self, prompt_ids: Sequence[list[int]], cfg, stops: list[int]) -> list[tuple[list[int], int]]:
        from vllm import SamplingParams  # type: ignore[import-not-found]
        from vllm.lora.request import LoRARequest  # type: ignore[import-not-found]

        sample = cfg.temperature > 0
        params = SamplingParams(temperature=cfg.temperature if sample else 0.0, top_p=cfg.top_p if sample else 1.0,
                                max_tokens=cfg.max_new_tokens, min_tokens=cfg.min_new_tokens, seed=cfg.seed, stop_token_ids=stops)
        lora = LoRARequest(f"negated-{self.version}", self.version + 1, str(self.adapter)) if self.adapter else None
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params, lora_request=lora, use_tqdm=cfg.progress)
        return [(list(o.outputs[0].token_ids), len(p)) for o, p in zip(outs, prompt_ids)]
