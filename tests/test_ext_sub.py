"""Extract before subtract: the forget update loses exactly its part in the retain PEM's subspaces."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from revrel.release.ext_sub import _basis, extract, retain_subspaces


def _pair(tmp_path):
    """A retain LoRA saved to disk and a forget LoRA on the same Linear(8, 6), r=2; the forget B shares one
    direction with the retain B."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 6, bias=False))
    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["0"], lora_dropout=0.0)
    retain = get_peft_model(net, cfg)
    with torch.no_grad():
        for n, p in retain.named_parameters():
            if "lora_" in n:
                p.normal_()
    retain.save_pretrained(tmp_path / "retain")
    b_r = retain.base_model.model[0].lora_B["default"].weight.detach().clone()
    a_r = retain.base_model.model[0].lora_A["default"].weight.detach().clone()
    forget = get_peft_model(retain.unload(), cfg)
    with torch.no_grad():
        lay = forget.base_model.model[0]
        lay.lora_B["default"].weight.copy_(torch.stack([b_r[:, 0] + torch.randn(6) * 0.1, torch.randn(6)], 1))
        lay.lora_A["default"].weight.normal_()
    return forget, lay, b_r, a_r


@pytest.mark.parametrize("mode", ["col", "row", "both"])
def test_projection_removes_the_retain_subspace_and_only_it(tmp_path, mode):
    forget, lay, b_r, a_r = _pair(tmp_path)
    delta0 = lay.get_delta_weight("default").clone()
    info = extract(forget, retain_subspaces(tmp_path / "retain"), mode)
    delta = lay.get_delta_weight("default")
    qc, qr = _basis(b_r), _basis(a_r.T)
    expect = delta0
    if mode in ("col", "both"):
        expect = expect - qc @ (qc.T @ expect)
        assert torch.allclose(qc.T @ delta, torch.zeros_like(qc.T @ delta), atol=1e-5)  # no output in the retain directions
    if mode in ("row", "both"):
        expect = expect - (expect @ qr) @ qr.T
        assert torch.allclose(delta @ qr, torch.zeros_like(delta @ qr), atol=1e-5)  # blind to retain inputs
    assert torch.allclose(delta, expect, atol=1e-5)
    assert 0 < info["norm_share_removed"] < 1


def test_none_leaves_the_pem_untouched(tmp_path):
    forget, lay, _, _ = _pair(tmp_path)
    delta0 = lay.get_delta_weight("default").clone()
    assert extract(forget, retain_subspaces(tmp_path / "retain"), "none") == {"mode": "none"}
    assert torch.equal(lay.get_delta_weight("default"), delta0)


def test_unlearn_with_ext_sub_saves_the_extracted_pem(tiny_dir, tmp_path):
    """Through the loop: the round's saved (and negated) adapter is orthogonal to the retain PEM's column space."""
    from safetensors.torch import load_file

    from revrel.config import load_config
    from revrel.pipeline import unlearn

    from tiny import tiny_overrides

    out = tmp_path / "ext"
    report = unlearn(load_config(None, tiny_overrides(out, tiny_dir, release={"rounds": 1, "ext_sub": "col", "lambda_orth": 0.0})))
    assert report["rounds"][0]["ext_sub"]["mode"] == "col"
    retain = load_file(str(out / "adapters" / "retain" / "adapter_model.safetensors"))
    neg = load_file(str(out / "adapters" / "negated_round_1" / "adapter_model.safetensors"))
    checked = 0
    for key, b in neg.items():
        if ".lora_B." in key:
            qc = _basis(retain[key])
            assert torch.allclose(qc.T @ b, torch.zeros_like(qc.T @ b), atol=1e-4)
            checked += 1
    assert checked > 0
