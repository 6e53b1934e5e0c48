"""Run folder layout and crash-safe checkpoints.

A round is complete when ``progress.json`` says so; it is written last, after the round's adapter,
forget set, metrics and model state, each of which is written atomically. ``--resume`` restarts from
the last complete round, so a kill at any point loses at most the round in flight.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model

from revrel.errors import RevrelError
from revrel.io import atomic_folder, atomic_path, atomic_write_json


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    progress = property(lambda self: self.root / "progress.json")
    model = property(lambda self: self.root / "model")
    adapters = property(lambda self: self.root / "adapters")
    report = property(lambda self: self.root / "report.json")

    def round_dir(self, k: int) -> Path:
        return self.root / "rounds" / f"round_{k}"

    def prepare(self, *, resume: bool, overwrite: bool) -> dict | None:
        """Create the folder; return saved progress when resuming. Refuses to clobber a finished or foreign run."""
        if self.root.exists() and not self.root.is_dir():
            raise RevrelError(f"--out {self.root} is a file; give a folder path")
        if self.root.is_dir() and any(self.root.iterdir()):
            if resume:
                return self.load_progress()
            if not overwrite:
                raise RevrelError(f"output folder {self.root} already exists; pass --resume to continue it or --overwrite to replace it")
            shutil.rmtree(self.root)
        elif resume:
            pass  # nothing to resume: start fresh
        self.root.mkdir(parents=True, exist_ok=True)
        return None

    def load_progress(self) -> dict | None:
        if not self.progress.is_file():
            return None
        try:
            return json.loads(self.progress.read_text())
        except ValueError as exc:
            raise RevrelError(f"{self.progress} is corrupt; rerun with --overwrite") from exc

    def save_progress(self, progress: dict) -> None:
        atomic_write_json(self.progress, progress)

    def state_path(self, k: int) -> Path:
        return self.root / "state" / f"model_round_{k}.safetensors"

    def save_state(self, model: torch.nn.Module, k: int) -> str:
        """Write round k's weights under a round-specific name, so progress.json (written after)
        always points at a complete state of the round it records."""
        path = self.state_path(k)
        with atomic_path(path) as tmp:
            try:
                st_save_model(model, str(tmp))
            except OSError as exc:
                raise RevrelError(f"could not write {path}: {exc.strerror or exc}; free disk space") from exc
        return path.name

    def prune_states(self, keep: str | None) -> None:
        for p in (self.root / "state").glob("*.safetensors"):
            if p.name != keep:
                p.unlink(missing_ok=True)

    def load_state(self, model: torch.nn.Module, name: str) -> None:
        path = self.root / "state" / name
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as fh:
                untied = {"lm_head.weight", "model.embed_tokens.weight"} <= set(fh.keys())
            if untied:  # a round that suppressed tokens (the suppress edit) gave the LM head its own weight
                from revrel.release.suppress import untie_output

                untie_output(model)
            st_load_model(model, str(path))
        except Exception as exc:  # safetensors raises its own error type on corrupt files
            raise RevrelError(f"checkpoint {path} is unreadable ({type(exc).__name__}); rerun with --overwrite") from exc


def save_adapter(peft_model, folder: Path) -> None:
    """peft ``save_pretrained`` (safetensors) into a temp folder, then rename into place."""
    with atomic_folder(folder, "adapter") as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)


def load_adapter_A(folder: Path) -> dict[str, torch.Tensor]:
    """The A matrices of a saved LoRA adapter, keyed like :func:`revrel.release.orthogonality.lora_A`."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "adapter_model.safetensors"))
    out = {}
    for k, v in tensors.items():
        if ".lora_A." in k:
            out[k.split(".lora_A.")[0].removeprefix("base_model.model.")] = v
    return out
