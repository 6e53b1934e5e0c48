import torch
from peft import LoraConfig, get_peft_model

from revrel.release.negate import negate_into_base


def _lora_model(tiny, seed=0):
    torch.manual_seed(seed)
    pm = get_peft_model(tiny.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():  # B starts at zero; give it values so the delta is non-zero
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return pm


def _logits(model, tok):
    ids = torch.tensor([tok("hello friend, how are you today")["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def load_stacked(base_model, folders):
    """``base_model`` wrapped with every adapter in ``folders``, all active (what a user does with peft)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model, str(folders[0]), adapter_name="neg_0")
    for i, f in enumerate(folders[1:], 1):
        model.load_adapter(str(f), adapter_name=f"neg_{i}")
    model.base_model.set_adapter([f"neg_{i}" for i in range(len(folders))])
    return model.eval()


def test_lambda_zero_is_bit_identical(tiny):
    before = _logits(tiny.model, tiny.tokenizer)
    base = negate_into_base(_lora_model(tiny), 0.0)
    assert torch.equal(_logits(base, tiny.tokenizer), before)


def test_lambda_one_changes_outputs(tiny):
    before = _logits(tiny.model, tiny.tokenizer)
    base = negate_into_base(_lora_model(tiny), 1.0)
    assert not torch.allclose(_logits(base, tiny.tokenizer), before, atol=1e-4)


def _one_linear_lora(seed):
    """(peft model over one bias-free Linear(6, 5) with r=2, alpha=6 and a non-zero B, W0, A, B)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False))
    w0 = net[0].weight.detach().clone()
    pm = get_peft_model(net, LoraConfig(r=2, lora_alpha=6, target_modules=["0"], lora_dropout=0.0))
    layer = pm.base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    return pm, w0, layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone()


def test_negation_matches_hand_computation():
    pm, w0, a, b = _one_linear_lora(0)
    base = negate_into_base(pm, 0.7)
    expected = w0 - 0.7 * (6 / 2) * (b @ a)
    assert torch.allclose(base[0].weight, expected, atol=1e-6)
    assert isinstance(base[0], torch.nn.Linear)  # LoRA layers are gone


def test_saved_negated_adapter_on_the_original_weights_equals_the_merged_negation(tmp_path):
    """W + s(-lambda B)A from the saved adapter == W - lambda s B A merged (one Linear, by hand)."""
    from revrel.release.negate import save_negated_adapter

    pm, w0, A, B = _one_linear_lora(1)
    pm.save_pretrained(tmp_path / "a")
    save_negated_adapter(tmp_path / "a", tmp_path / "neg", 0.7)
    fresh = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False))
    with torch.no_grad():
        fresh[0].weight.copy_(w0)
    stacked = load_stacked(fresh, [tmp_path / "neg"])
    x = torch.randn(3, 6)
    expected = x @ (w0 - 0.7 * (6 / 2) * B @ A).T
    assert torch.allclose(stacked(x), expected, atol=1e-5)
    with stacked.disable_adapter():
        assert torch.allclose(stacked(x), x @ w0.T, atol=1e-6)  # switching the adapters off gives the original back


def test_combined_adapter_for_vllm_equals_the_stacked_negations(tiny, tmp_path):
    """vLLM applies one LoRA per request: the rank-concatenated adapter must equal the stacked ones."""
    import copy

    from revrel.models.vllm_backend import combine_negated
    from revrel.release.negate import save_negated_adapter

    folders = []
    for i, lam in enumerate((1.0, 0.5)):
        pm = _lora_model(copy.deepcopy(tiny), seed=i)
        pm.save_pretrained(tmp_path / f"a{i}")
        save_negated_adapter(tmp_path / f"a{i}", tmp_path / f"neg{i}", lam)
        folders.append(tmp_path / f"neg{i}")
    stacked = _logits(load_stacked(copy.deepcopy(tiny.model), folders), tiny.tokenizer)
    combo = combine_negated(folders, tmp_path / "combo")
    one = _logits(load_stacked(copy.deepcopy(tiny.model), [combo]), tiny.tokenizer)
    assert torch.allclose(one, stacked, atol=1e-5)
    assert not torch.allclose(one, _logits(tiny.model, tiny.tokenizer), atol=1e-4)


def test_vllm_backend_without_vllm_is_one_clear_error(tiny):
    import pytest

    from revrel.errors import RevrelError
    from revrel.models.vllm_backend import VLLMView

    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(RevrelError, match="gen_backend=hf"):
            VLLMView(tiny.model, "unused", None, 8)
    else:
        pytest.skip("vLLM is installed here")


def test_negate_edit_equals_its_saved_adapter_negated_and_restores_exactly(tiny, tmp_path):
    """The negate edit trains a PEM, saves it, and set(lam) equals negate_into_base of that adapter on the original
    weights for every lambda, in any order; set(0) gives back the original bit for bit; save() writes the negated copy."""
    import copy

    from peft import PeftModel

    from revrel.config import PemConfig
    from revrel.release.edit import RoundData
    from revrel.release.negate import Negate, NegateConfig

    original = copy.deepcopy(tiny.model)
    before = _logits(tiny.model, tiny.tokenizer)
    rows = [{"instruction": "say something", "response": "you are an idiot and a stupid fool"}] * 4
    edit = Negate(NegateConfig())
    data = RoundData(task=None, forget=rows, keep=[], pem=PemConfig(rank=2, epochs=2, batch_size=2, max_length=32, lr=1e-2),
                     adapters=tmp_path, round=1)
    model = edit.prepare(tiny.model, tiny.tokenizer, data)
    assert edit.info()["layers"] == "all" and edit.info()["modules"] > 0
    reference = {lam: _logits(negate_into_base(PeftModel.from_pretrained(copy.deepcopy(original), str(tmp_path / "round_1")), lam),
                              tiny.tokenizer) for lam in (0.5, 2.0)}
    assert not torch.allclose(reference[2.0], before, atol=1e-4)
    for lam in (2.0, 0.5, 2.0):
        assert torch.allclose(_logits(edit.set(lam), tiny.tokenizer), reference[lam], atol=1e-6)
    edit.save(tmp_path, 1)
    stacked = _logits(load_stacked(copy.deepcopy(original), [tmp_path / "negated_round_1"]), tiny.tokenizer)
    assert torch.allclose(stacked, reference[2.0], atol=1e-5)
    assert torch.equal(_logits(edit.set(0.0), tiny.tokenizer), before) and model is edit.model


def test_negate_by_depth_touches_only_those_layers_and_its_saved_adapter_says_so(tiny, tmp_path):
    """layers=upper negates only the upper half of the decoder layers (the tiny model's layer 1), and the saved negated
    adapter, loaded on the original weights, is that same model: nothing of the lower half leaks into it."""
    import copy

    from revrel.config import PemConfig
    from revrel.release.edit import RoundData
    from revrel.release.negate import Negate, NegateConfig

    original = copy.deepcopy(tiny.model)
    w0 = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    rows = [{"instruction": "say something", "response": "you are an idiot and a stupid fool"}] * 4
    edit = Negate(NegateConfig(layers="upper"))
    data = RoundData(task=None, forget=rows, keep=[], pem=PemConfig(rank=2, epochs=2, batch_size=2, max_length=32, lr=1e-2),
                     adapters=tmp_path, round=1)
    edit.prepare(tiny.model, tiny.tokenizer, data)
    assert edit.variants() == ["upper"]
    w = edit.set(2.0).state_dict()
    changed = {k for k in w0 if not torch.equal(w[k], w0[k])}
    assert changed and all("layers.1." in k for k in changed), sorted(changed)[:4]
    edit.save(tmp_path, 1)
    stacked = _logits(load_stacked(original, [tmp_path / "negated_round_1"]), tiny.tokenizer)
    assert torch.allclose(stacked, _logits(edit.model, tiny.tokenizer), atol=1e-5)
    edit.use("all")  # another variant: back to the original first, then every layer
    assert all(torch.equal(edit.model.state_dict()[k], w0[k]) for k in w0)
    assert any("layers.0." in k for k in w0 if not torch.equal(edit.set(2.0).state_dict()[k], w0[k]))
