"""Write a Llama- or Qwen2-architecture model (an unlearned run's ``model/``) as a GGUF file, quantized.

Why: llama.cpp and its front ends are how many users run a small model, and they run it quantized
(the embedded default itself arrives as a Q4_1 GGUF). Forgetting that a Q4 round trip undoes is not
forgetting, so revrel exports with the ``gguf`` package's own writer and quantizers (the ones
llama.cpp's converter uses) and ``revrel attack`` / ``revrel eval`` can read the file back.

Layout follows llama.cpp's converters for ``LlamaForCausalLM`` and ``Qwen2ForCausalLM``: tensor names
``blk.N.attn_q`` etc. (Qwen2 adds the Q/K/V biases, ``blk.N.attn_q.bias``), for Llama the Q and K rows
permuted to llama.cpp's rotary layout (transformers undoes it on load; Qwen2's rotary layout is the
one llama.cpp uses), norms and biases kept in F32, and for 4-bit types the token embedding in Q8_0
(as in the shipped Q4_1 file). The tokenizer
is written as a GPT-2 style byte-level BPE (tokens, types, merges, special ids, chat template),
which is what SmolLM2, Qwen2 and the test models use.

``rounding="stochastic"`` snaps Q4_1 weights onto their block's grid by unbiased stochastic rounding
before the quantizer runs (which then reproduces them exactly). Round-to-nearest sends every edit
smaller than half a grid step back to the value it came from; when the model was itself dequantized
from Q4_1 (the default is), that is most of an unlearning edit. Stochastic rounding keeps each
edit in expectation (an edit of a tenth of a step moves a tenth of such weights one whole step),
and leaves a weight that was not edited where it was, but adds independent noise to every edited
weight. ``rounding="gptq"`` (with ``calibration`` text) picks the rounding that keeps each layer's
outputs on that text close instead (see :mod:`revrel.models.gptq_q4_1`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from revrel.errors import RevrelError

QTYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1")
# model_type -> (llama.cpp architecture, Q/K rows permuted to llama.cpp's rotary layout, tokenizer pre-tokenizer name)
ARCHS = {"llama": ("llama", True, "default"), "qwen2": ("qwen2", False, "qwen2")}
ROUNDINGS = ("nearest", "stochastic", "gptq")
_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf_name: str) -> str:
    """HF parameter name -> llama.cpp tensor name (``model.layers.3.mlp.up_proj.weight`` -> ``blk.3.ffn_up.weight``)."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf_name in top:
        return top[hf_name]
    parts = hf_name.split(".")
    if parts[:2] != ["model", "layers"] or parts[-1] not in ("weight", "bias"):
        raise RevrelError(f"GGUF export: no llama.cpp name for parameter {hf_name!r}")
    key = ".".join(parts[3:-1])
    if key not in _NAMES:
        raise RevrelError(f"GGUF export: no llama.cpp name for parameter {hf_name!r}")
    return f"blk.{parts[2]}.{_NAMES[key]}.{parts[-1]}"


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary layout (two halves per head) -> llama.cpp's interleaved pairs, as its converter does."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor_type(name: str, arr: np.ndarray, qtype: str):
    from gguf import GGMLQuantizationType as Q

    block = {"q8_0": 32, "q4_0": 32, "q4_1": 32}
    if arr.ndim == 1 or qtype == "f32":
        return Q.F32
    if qtype == "f16":
        return Q.F16
    if arr.shape[-1] % block[qtype]:
        return Q.F16  # rows that do not fill whole quantization blocks stay in f16 (llama.cpp does the same)
    if name in ("token_embd.weight", "output.weight") and qtype in ("q4_0", "q4_1"):
        return Q.Q8_0  # as llama.cpp's 4-bit mixes do, the embedding and an untied output head keep more bits
    return {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1}[qtype]


def check_format(qtype: str, rounding: str = "nearest") -> None:
    """One-line errors for a bad ``--gguf`` / ``--rounding`` pair (the CLI calls this before loading a model)."""
    if qtype not in QTYPES:
        raise RevrelError(f"--gguf must be one of {', '.join(QTYPES)} (got {qtype!r})")
    if rounding not in ROUNDINGS or (rounding != "nearest" and qtype != "q4_1"):
        raise RevrelError(f"--rounding must be one of {', '.join(ROUNDINGS)}, and {rounding} needs --gguf q4_1 (got {rounding!r}, {qtype!r})")


Q4_1_LEVELS = 15  # Q4_1 stores k in 0..15 per weight: min + k * (max - min) / 15


@torch.no_grad()
def round_q4_1_stochastic(b: torch.Tensor, lo: torch.Tensor, step: torch.Tensor, ends: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
    """Blocks ``b`` (blocks x 32) onto the grid ``lo + k * step`` (each (blocks, 1)), rounded up with probability
    equal to the fractional position: unbiased. A weight already on the grid (within float error) stays on its level,
    and the positions ``ends`` (blocks, 2) are set to levels 0 and 15, so each block keeps its min and max and Q4_1's
    own quantizer finds the same grid and reproduces the values. Returns a new tensor."""
    x = torch.where(step > 0, (b - lo) / torch.where(step > 0, step, 1.0), 0.0)  # position in steps above the minimum
    k = x.floor()
    frac = x - k
    up = frac > 1 - 1e-3
    k += up
    frac[up | (frac < 1e-3)] = 0.0
    k += torch.rand(k.shape, generator=generator) < frac  # one level up with probability frac
    k.clamp_(0, Q4_1_LEVELS)
    k.scatter_(1, ends, torch.tensor([[0.0, float(Q4_1_LEVELS)]]).expand(len(k), 2).contiguous())
    return k * step + lo


def snap_q4_1_stochastic(arr: np.ndarray, rng: np.random.Generator, block: int = 32) -> np.ndarray:
    """``arr`` (rows a multiple of ``block`` long) stochastically onto the Q4_1 grid of each of its own blocks
    (:func:`round_q4_1_stochastic`), for a model that does not come with a grid of its own."""
    b = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(-1, block)
    lo, hi = b.min(1, keepdim=True), b.max(1, keepdim=True)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    out = round_q4_1_stochastic(b, lo.values, (hi.values - lo.values) / Q4_1_LEVELS, torch.cat([lo.indices, hi.indices], 1), gen)
    return out.reshape(arr.shape).numpy()


def _tokenizer_fields(writer, tok, vocab_size: int, pre: str) -> None:
    from gguf import TokenType

    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise RevrelError(f"GGUF export writes byte-level BPE tokenizers only; this one is {model.get('type')!r}")
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    id_to_tok = {i: t for t, i in tok.get_vocab().items()}
    tokens, types = [], []
    for i in range(vocab_size):
        t = id_to_tok.get(i)
        tokens.append(t if t is not None else f"[PAD{i}]")
        types.append(TokenType.UNUSED if t is None else TokenType.CONTROL if i in special else TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for attr, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                      ("unk_token_id", writer.add_unk_token_id), ("pad_token_id", writer.add_pad_token_id)):
        if getattr(tok, attr, None) is not None:
            add(int(getattr(tok, attr)))
    writer.add_add_bos_token(False)
    if getattr(tok, "chat_template", None):
        writer.add_chat_template(tok.chat_template)


def export_gguf(model, tokenizer, out: str | Path, qtype: str = "q8_0", name: str = "revrel-unlearned", rounding: str = "nearest",
                seed: int = 0, calibration: list[str] | None = None) -> dict:
    """Write ``model`` (a transformers ``LlamaForCausalLM`` or ``Qwen2ForCausalLM``) and its tokenizer to ``out`` as GGUF.

    The file is written next to ``out`` and renamed into place, so an interrupted export leaves
    no half-written file under the final name. Returns a summary (path, bytes, tensor types).
    """
    from gguf import GGUFWriter, quants

    check_format(qtype, rounding)
    if rounding == "gptq" and not calibration:
        raise RevrelError("--rounding gptq needs calibration text (revrel.models.gptq_q4_1.run_calibration_texts)")
    rng = np.random.default_rng(seed)
    cfg = model.config
    if getattr(cfg, "model_type", None) not in ARCHS:
        raise RevrelError(f"GGUF export supports {' and '.join(ARCHS)} models (SmolLM2 is llama, Qwen2.5 qwen2); this model is {cfg.model_type!r}")
    arch, permute, pre = ARCHS[cfg.model_type]
    out = Path(out)
    if out.suffix.lower() != ".gguf":
        raise RevrelError(f"the GGUF output must end in .gguf (got {out})")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer = GGUFWriter(str(tmp), arch)
    writer.add_name(name)
    writer.add_context_length(int(cfg.max_position_embeddings))
    writer.add_embedding_length(int(cfg.hidden_size))
    writer.add_block_count(int(cfg.num_hidden_layers))
    writer.add_feed_forward_length(int(cfg.intermediate_size))
    writer.add_head_count(int(cfg.num_attention_heads))
    writer.add_head_count_kv(int(cfg.num_key_value_heads))
    rope = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(int(cfg.vocab_size))
    writer.add_rope_dimension_count(int(head_dim))
    _tokenizer_fields(writer, tokenizer, int(cfg.vocab_size), pre)
    hessians = {}
    if rounding == "gptq":
        from revrel.models.gptq_q4_1 import gptq_round_q4_1, input_hessians

        hessians = input_hessians(model, tokenizer, calibration)
    types: dict[str, int] = {}
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    with torch.no_grad():
        for hf_name, p in model.state_dict().items():
            if hf_name == "lm_head.weight" and tied:
                continue
            gname = gguf_name(hf_name)
            arr = p.detach().to(torch.float32).cpu().numpy()
            t = _tensor_type(gname, arr, qtype)  # the row permutation below keeps the shape, so the type too
            if t.name == "Q4_1" and hf_name in hessians:
                arr = gptq_round_q4_1(torch.from_numpy(arr), hessians[hf_name]).numpy()  # before the Q/K row permutation
            if permute and gname.endswith("attn_q.weight"):
                arr = permute_rows(arr, cfg.num_attention_heads)
            elif permute and gname.endswith("attn_k.weight"):
                arr = permute_rows(arr, cfg.num_key_value_heads)
            if rounding == "stochastic" and t.name == "Q4_1":
                arr = snap_q4_1_stochastic(arr, rng)
            data = quants.quantize(np.ascontiguousarray(arr), t)
            writer.add_tensor(gname, data, raw_dtype=t)
            types[t.name] = types.get(t.name, 0) + 1
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    return {"path": str(out), "bytes": out.stat().st_size, "qtype": qtype, "rounding": rounding, "tensor_types": types}
