import torch
from peft import LoraConfig, get_peft_model

from revrel.release.negation import negate_into_base


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
    from revrel.release.negation import load_stacked, save_negated_adapter

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
    from revrel.release.negation import load_stacked, save_negated_adapter

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


def test_negation_sweep_equals_negate_into_base_and_restores_exactly(tiny):
    """set(lam) reproduces the one-shot negation for every lambda; set(0) gives back the original bit for bit."""
    import copy

    from revrel.release.sweep import NegationSweep

    before = _logits(tiny.model, tiny.tokenizer)
    pm = _lora_model(tiny)
    reference = {lam: _logits(negate_into_base(copy.deepcopy(pm), lam), tiny.tokenizer) for lam in (0.5, 2.0)}
    sweep = NegationSweep(pm)
    for lam in (2.0, 0.5, 2.0):  # any order, repeatable
        assert torch.allclose(_logits(sweep.set(lam), tiny.tokenizer), reference[lam], atol=1e-6)
    assert torch.equal(_logits(sweep.set(0.0), tiny.tokenizer), before)


def test_negate_only_keeps_the_update_in_matching_modules(tiny):
    """negate_only('v_proj'): q_proj weights come out of the negation untouched, v_proj ones move;
    a pattern that matches nothing, or an invalid one in the config, is one clear error."""
    import pytest

    from revrel.config import load_config
    from revrel.errors import RevrelError
    from revrel.release.negation import negate_only

    pm = _lora_model(tiny)
    w0 = {n.replace(".base_layer", ""): p.detach().clone() for n, p in pm.get_base_model().named_parameters() if "proj" in n and "lora_" not in n}
    info = negate_only(pm, r"v_proj")
    assert info["kept"] > 0 and info["zeroed"] == info["kept"]  # as many q_proj as v_proj layers
    base = negate_into_base(pm, 1.0)
    after = dict(base.named_parameters())
    changed = {n for n, w in w0.items() if not torch.equal(after[n], w)}
    assert changed and all("v_proj" in n for n in changed) and any("q_proj" in n for n in w0)
    with pytest.raises(RevrelError, match="matches no LoRA module"):
        negate_only(_lora_model(tiny), r"no_such_module")
    with pytest.raises(RevrelError, match="not a valid regular expression"):
        load_config(None, {"release": {"negate_only": "mlp(["}})


def test_negation_sweep_can_negate_the_difference_from_a_retain_update(tiny, tmp_path):
    """minus/mu: W0 - lam * (delta_f - mu * delta_r), with delta_r read back from a saved adapter."""
    import copy

    from revrel.release.checkpoint import save_adapter
    from revrel.release.ext_sub import adapter_deltas
    from revrel.release.sweep import NegationSweep

    retain = _lora_model(copy.deepcopy(tiny), seed=3)
    save_adapter(retain, tmp_path / "retain")
    minus = adapter_deltas(tmp_path / "retain")
    pm = _lora_model(tiny, seed=0)
    expected = {}
    for name, module in pm.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            key = name if name.startswith("base_model.model.") else f"base_model.model.{name}"
            expected[key] = module.get_base_layer().weight.detach().clone() - 2.0 * (module.get_delta_weight("default") - 0.5 * minus[key])
    model = NegationSweep(pm, minus=minus, mu=0.5).set(2.0)
    got = {f"base_model.model.{n.removesuffix('.weight')}": p for n, p in model.named_parameters()}
    assert expected and all(torch.allclose(got[k], w, atol=1e-6) for k, w in expected.items())


def test_negate_rank_splits_each_update_by_singular_directions():
    """negate_rank(1) keeps the top singular direction of B A (a rank-1 update whose norm is s1), negate_rank(-1)
    the rest; the two add up to the whole update, and the delta's scaling is untouched. Bad k is a config error."""
    import pytest

    from revrel.config import load_config
    from revrel.errors import RevrelError
    from revrel.release.negation import negate_rank

    deltas = {}
    for k in (0, 1, -1):
        pm = _one_linear_lora(3)[0]
        if k:
            info = negate_rank(pm, k)
            assert 0.0 < info["energy_kept"] < 1.0
        deltas[k] = pm.base_model.model[0].get_delta_weight("default")
    s = torch.linalg.svdvals(deltas[0])
    assert torch.linalg.matrix_rank(deltas[1]) == 1 and torch.allclose(torch.linalg.matrix_norm(deltas[1], 2), s[0], rtol=1e-4)
    assert torch.allclose(torch.linalg.matrix_norm(deltas[-1], 2), s[1], rtol=1e-4)
    assert torch.allclose(deltas[1] + deltas[-1], deltas[0], atol=1e-5)
    with pytest.raises(RevrelError, match="negate_rank"):
        load_config(None, {"release": {"rank": 8, "negate_rank": 8}})
