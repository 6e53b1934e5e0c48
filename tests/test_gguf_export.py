"""GGUF export: the file reads back (transformers' GGUF loader, as llama.cpp users' files are read)
with the same weights, tokenizer and logits; quantized exports stay close; bad input is one line."""

import pytest
import torch

from revrel.errors import RevrelError
from revrel.models.gguf_export import export_gguf, gguf_name, permute_rows


def _load(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32), AutoTokenizer.from_pretrained(tiny_dir)


def _read(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32),
            AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_f32_export_reads_back_identical(tiny_dir, tmp_path):
    model, tok = _load(tiny_dir)
    info = export_gguf(model, tok, tmp_path / "m.gguf", "f32")
    assert info["tensor_types"] == {"F32": len(model.state_dict()) - 1}  # tied lm_head not written
    back, btok = _read(tmp_path / "m.gguf")
    text = "hello friend, you are an idiot"
    ids = tok(text)["input_ids"]
    assert btok(text)["input_ids"] == ids
    assert btok.decode(ids) == tok.decode(ids)
    for (n, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), n  # the Q/K permutation is undone exactly on load
    assert torch.allclose(_logits(model, ids), _logits(back, ids), atol=1e-5)


def test_qwen2_export_reads_back_identical_with_its_biases_and_quantizes(tmp_path):
    """Qwen2 (the second model of the benchmarks): Q/K/V biases written, no Q/K permutation (llama.cpp's qwen2 rotary
    layout is transformers'), so an f32 file reads back bit-identical and a q4_1 file close."""
    from tiny import build_tiny

    model, tok = _load(build_tiny(tmp_path / "qwen", arch="qwen2"))
    with torch.no_grad():
        for layer in model.model.layers:  # random biases: zero ones would read back equal even if never written
            layer.self_attn.q_proj.bias.normal_()
            layer.self_attn.k_proj.bias.normal_()
    info = export_gguf(model, tok, tmp_path / "q.gguf", "f32")
    assert info["tensor_types"] == {"F32": len(model.state_dict()) - 1}
    back, _ = _read(tmp_path / "q.gguf")
    assert back.config.model_type == "qwen2"
    for (n, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), n
    ids = tok("hello friend, you are an idiot")["input_ids"]
    assert torch.allclose(_logits(model, ids), _logits(back, ids), atol=1e-5)
    export_gguf(model, tok, tmp_path / "q4.gguf", "q4_1")
    back, _ = _read(tmp_path / "q4.gguf")
    b0, b1 = model.model.layers[0].self_attn.q_proj.bias, back.model.layers[0].self_attn.q_proj.bias
    assert torch.equal(b0, b1)  # biases stay F32 in a 4-bit file
    assert (_logits(model, ids) - _logits(back, ids)).abs().max() < 1.0


@pytest.mark.parametrize("qtype,tol", [("q8_0", 0.02), ("q4_1", 0.25)])
def test_quantized_export_stays_close(tiny_dir, tmp_path, qtype, tol):
    model, tok = _load(tiny_dir)
    info = export_gguf(model, tok, tmp_path / f"m.{qtype}.gguf", qtype)
    assert qtype.upper() in info["tensor_types"]
    back, _ = _read(tmp_path / f"m.{qtype}.gguf")
    w, wq = model.model.layers[0].mlp.up_proj.weight, back.model.layers[0].mlp.up_proj.weight
    rel = ((w - wq).norm() / w.norm()).item()
    assert 0 < rel < tol  # quantized, so not identical; but close


def test_names_and_permutation():
    assert gguf_name("model.layers.3.mlp.up_proj.weight") == "blk.3.ffn_up.weight"
    assert gguf_name("model.embed_tokens.weight") == "token_embd.weight"
    assert gguf_name("model.layers.0.self_attn.k_proj.bias") == "blk.0.attn_k.bias"
    w = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3).numpy()
    p = permute_rows(w, 2)  # 2 heads of 4 rows: halves [0,1 | 2,3] -> pairs (0,2), (1,3)
    assert [int(r[0]) for r in p[:4]] == [0, 6, 3, 9]
    with pytest.raises(RevrelError, match="no llama.cpp name"):
        gguf_name("model.layers.0.block_sparse_moe.gate.weight")


def test_bad_inputs_are_one_line_errors(tiny_dir, tmp_path):
    model, tok = _load(tiny_dir)
    with pytest.raises(RevrelError, match="must be one of"):
        export_gguf(model, tok, tmp_path / "m.gguf", "q3_k")
    with pytest.raises(RevrelError, match="end in .gguf"):
        export_gguf(model, tok, tmp_path / "m.bin", "q8_0")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_export_and_refusal(tiny_dir, tmp_path, capsys):
    from revrel.cli import main

    out = tmp_path / "m.gguf"
    assert main(["export", "--model", str(tiny_dir), "--gguf", "q8_0", "--out", str(out), "-q"]) == 0
    assert "q8_0" in capsys.readouterr().out and out.is_file()
    size = out.stat().st_size
    assert main(["export", "--model", str(tiny_dir), "--gguf", "q8_0", "--out", str(out), "-q"]) != 0
    assert "--overwrite" in capsys.readouterr().err and out.stat().st_size == size  # the existing file is untouched
    assert main(["export", "--model", str(tiny_dir), "--gguf", "q2", "--out", str(tmp_path / "x.gguf"), "-q"]) != 0
    assert "must be one of" in capsys.readouterr().err


def _q4_1_round_trip(arr):
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    return quants.dequantize(quants.quantize(np.ascontiguousarray(arr), GGMLQuantizationType.Q4_1), GGMLQuantizationType.Q4_1)


def test_stochastic_rounding_keeps_small_edits_that_nearest_rounds_away():
    """A model dequantized from Q4_1 (like the default), edited by a fifth of a grid step: nearest rounding
    gives the original back; stochastic rounding keeps the edit on average and leaves unedited blocks alone."""
    import numpy as np

    from revrel.models.gguf_export import snap_q4_1_stochastic

    rng = np.random.default_rng(0)
    w0 = _q4_1_round_trip(rng.normal(size=(64, 256)).astype(np.float32))  # on the Q4_1 grid
    step = (w0.reshape(-1, 32).max(1) - w0.reshape(-1, 32).min(1)) / 15
    edit = np.zeros_like(w0)
    edit[:32] = 0.2 * step.reshape(64, 8)[:32].repeat(32, axis=1)  # half the rows: + a fifth of their block's step
    blocks = w0.reshape(-1, 32)
    inner = (blocks > blocks.min(1, keepdims=True)) & (blocks < blocks.max(1, keepdims=True))  # keep each block's grid
    edit *= inner.reshape(w0.shape)
    w = w0 + edit
    nearest = _q4_1_round_trip(w)
    assert np.abs(nearest - w0).max() < 1e-3 * step.max()  # the whole edit rounded away
    snapped = snap_q4_1_stochastic(w, np.random.default_rng(1))
    kept = (snapped - w0)[:32].sum() / edit[:32].sum()
    assert 0.8 < kept < 1.2  # unbiased: the edit survives in expectation
    assert np.abs(snapped[32:] - w0[32:]).max() < 1e-5  # unedited: untouched
    back = _q4_1_round_trip(snapped)
    assert np.abs(back - snapped).max() < 2e-3 * step.max()  # Q4_1's own quantizer reproduces the snapped values


def test_stochastic_export_needs_q4_1(tiny_dir, tmp_path):
    model, tok = _load(tiny_dir)
    with pytest.raises(RevrelError, match="stochastic needs --gguf q4_1"):
        export_gguf(model, tok, tmp_path / "m.gguf", "q8_0", rounding="stochastic")
    info = export_gguf(model, tok, tmp_path / "m.gguf", "q4_1", rounding="stochastic")
    assert info["rounding"] == "stochastic" and "Q4_1" in info["tensor_types"]
    back, _ = _read(tmp_path / "m.gguf")
    w, wq = model.model.layers[0].mlp.up_proj.weight, back.model.layers[0].mlp.up_proj.weight
    assert 0 < ((w - wq).norm() / w.norm()).item() < 0.35


def test_gptq_rounding_keeps_layer_outputs_closer_than_stochastic_and_reproduces_exactly():
    """On activations with a few dominant directions (as real ones have), GPTQ rounding of an edited
    on-grid matrix keeps W x closer to the edited W x than stochastic rounding, keeps more of the edit's
    effect than nearest rounding, and Q4_1's own quantizer reproduces it (each block keeps its min/max)."""
    import numpy as np

    from revrel.models.gguf_export import snap_q4_1_stochastic
    from revrel.models.gptq_q4_1 import gptq_round_q4_1

    rng = np.random.default_rng(0)
    w0 = _q4_1_round_trip(rng.normal(size=(64, 128)).astype(np.float32))
    x = rng.normal(size=(4000, 6)) @ rng.normal(size=(6, 128)) + 0.05 * rng.normal(size=(4000, 128))  # low-rank inputs
    blocks = w0.reshape(-1, 32)
    inner = ((blocks > blocks.min(1, keepdims=True)) & (blocks < blocks.max(1, keepdims=True))).reshape(w0.shape)
    w = w0 + 0.03 * rng.normal(size=(64, 1)) @ rng.normal(size=(1, 128)) * inner  # a small rank-1 edit
    h = torch.tensor(x.T @ x)
    g = gptq_round_q4_1(torch.tensor(w, dtype=torch.float32), h).numpy()
    err = lambda q: np.linalg.norm((q - w) @ x.T)  # noqa: E731
    assert err(g) < 0.5 * err(snap_q4_1_stochastic(w.astype(np.float32), np.random.default_rng(1)))
    assert err(g) < err(_q4_1_round_trip(w))
    assert np.abs(_q4_1_round_trip(g) - g).max() < 0.02 * np.abs(g).max()  # fp16 scale / min: the only loss


def test_gptq_export_needs_calibration(tiny_dir, tmp_path):
    from revrel.cli import main

    model, tok = _load(tiny_dir)
    with pytest.raises(RevrelError, match="calibration"):
        export_gguf(model, tok, tmp_path / "m.gguf", "q4_1", rounding="gptq")
    assert main(["export", "--model", str(tiny_dir), "--gguf", "q4_1", "--rounding", "gptq", "--out", str(tmp_path / "x.gguf"), "-q"]) != 0
    assert not (tmp_path / "x.gguf").exists()


def test_an_untied_head_is_written_and_kept_at_8_bits_in_a_4_bit_export(tiny_dir, tmp_path):
    """A head that release.suppress untied and edited is its own GGUF tensor (output.weight), read back as the
    model's head (not the embedding), and a q4_1 export keeps it at Q8_0 as it keeps the embedding."""
    from revrel.release.suppress import untie_output

    model, tok = _load(tiny_dir)
    untie_output(model)
    with torch.no_grad():
        model.lm_head.weight[5:9] -= 3.0
    info = export_gguf(model, tok, tmp_path / "m.gguf", "q4_1")
    assert info["tensor_types"]["Q8_0"] == 2  # token_embd and output
    back, _ = _read(tmp_path / "m.gguf")
    head, emb = back.get_output_embeddings().weight, back.get_input_embeddings().weight
    assert not torch.allclose(head, emb, atol=0.5)
    assert ((head - model.lm_head.weight).norm() / model.lm_head.weight.norm()).item() < 0.02  # 8-bit close, not 4-bit
