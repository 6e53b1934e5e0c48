import pytest
import torch

from revrel.models.generation import GenerationConfig, generate, perplexity, sequence_logprobs

PROMPTS = ["hello", "write a rude comment about people and the weather", "explain how a bicycle works", "hi"]


def test_batched_greedy_equals_one_at_a_time(tiny):
    """Left padding + attention mask must not change what the model writes."""
    cfg = GenerationConfig(max_new_tokens=8, temperature=0.0, batch_size=4, progress=False)
    batched = [g.text for g in generate(tiny.model, tiny.tokenizer, PROMPTS, cfg)]
    single = [generate(tiny.model, tiny.tokenizer, [p], cfg)[0].text for p in PROMPTS]
    assert batched == single


def test_sampling_is_seeded_and_counts_tokens(tiny):
    cfg = GenerationConfig(max_new_tokens=6, temperature=1.0, top_p=0.9, batch_size=2, seed=3, progress=False)
    a = generate(tiny.model, tiny.tokenizer, PROMPTS, cfg)
    b = generate(tiny.model, tiny.tokenizer, PROMPTS, cfg)
    assert [g.text for g in a] == [g.text for g in b]
    assert all(0 <= g.new_tokens <= 6 and g.prompt_tokens > 0 for g in a)
    cfg.seed = 4
    c = generate(tiny.model, tiny.tokenizer, PROMPTS, cfg)
    assert [g.text for g in a] != [g.text for g in c]


def test_sequence_logprobs_match_unbatched(tiny):
    targets = ["you are a fool", "the ocean is blue and very very large", "ok", "thank you"]
    batched = sequence_logprobs(tiny.model, tiny.tokenizer, PROMPTS, targets, batch_size=4)
    single = [sequence_logprobs(tiny.model, tiny.tokenizer, [p], [t])[0] for p, t in zip(PROMPTS, targets)]
    for (a, n), (b, m) in zip(batched, single):
        assert n == m and abs(a - b) < 1e-3
    assert perplexity(batched) > 1.0
    assert torch.isfinite(torch.tensor(perplexity(batched)))


def test_long_instruction_keeps_response_labels(tiny):
    from revrel.models.encoding import encode_pair

    ids, labels = encode_pair(tiny.tokenizer, "explain how a bicycle works " * 40, "you are a fool", 48)
    assert len(ids) <= 48 and sum(lab != -100 for lab in labels) >= 4


def test_training_loss_is_finite_with_long_instructions(tiny):
    from revrel.config import PemConfig
    from revrel.release.pem import train_pem

    rows = [{"instruction": "describe the ocean " * 50, "response": "hello friend"}] * 4
    _, log = train_pem(tiny.model, tiny.tokenizer, rows, PemConfig(rank=2, epochs=1, batch_size=2, max_length=32), seed=0)
    assert all(torch.isfinite(torch.tensor(v)) for v in log.loss)


def test_labelled_logits_equal_the_full_forward(tiny):
    """Computing the LM head only from the first labelled position must not change any log-prob or loss."""
    from revrel.models.encoding import encode_pair
    from revrel.models.generation import token_logprobs
    from revrel.release.pem import batch_loss

    targets = ["you are a fool", "the ocean is blue and very very large", "ok", "thank you"]
    batch = [encode_pair(tiny.tokenizer, p, t, 64) for p, t in zip(PROMPTS, targets)]
    lp, n = token_logprobs(tiny.model, tiny.tokenizer, batch)
    from revrel.models.encoding import pad_batch

    ids, mask, labels = pad_batch([b[0] for b in batch], 0, left=False, label_seqs=[b[1] for b in batch])
    full = torch.log_softmax(tiny.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
    tgt = labels[:, 1:]
    ref = (full.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (tgt != -100)).sum(-1)
    assert torch.equal(n, (tgt != -100).sum(-1))
    assert torch.allclose(lp, ref, atol=1e-4)
    loss, ntok = batch_loss(tiny.model, tiny.tokenizer, batch)
    assert ntok == int(n.sum()) and abs(float(loss) + float(ref.sum()) / ntok) < 1e-4


# (64, _): the nucleus is within k; (2, 8192): wider than k, widened once; (1, 2): wider than both, the whole vocabulary
@pytest.mark.parametrize(("k", "wide_k"), [(64, 8192), (2, 8192), (1, 2)])
def test_nucleus_sampler_draws_the_renormalised_nucleus(k, wide_k):
    import torch

    from revrel.models.generation import NucleusSampler

    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.06, 0.04], [0.04, 0.06, 0.15, 0.25, 0.5]]))
    sampler = NucleusSampler(temperature=1.0, top_p=0.9, k=k, wide_k=wide_k)
    torch.manual_seed(0)
    draws = torch.stack([sampler(None, logits).argmax(-1) for _ in range(4000)])  # the one-hot row picks the token
    # nucleus at 0.9 = {0.5, 0.25, 0.15} (mass 0.9); the two rows are mirror images
    freq0 = torch.bincount(draws[:, 0], minlength=5).float() / len(draws)
    freq1 = torch.bincount(draws[:, 1], minlength=5).float() / len(draws)
    expect = torch.tensor([0.5, 0.25, 0.15, 0.0, 0.0]) / 0.9
    assert torch.allclose(freq0, expect, atol=0.03), freq0
    assert torch.allclose(freq1.flip(0), expect, atol=0.03), freq1
    assert freq0[3:].sum() == 0 and freq1[:2].sum() == 0  # never outside the nucleus


def test_nucleus_sampler_temperature_sharpens():
    import torch

    from revrel.models.generation import NucleusSampler

    logits = torch.log(torch.tensor([[0.6, 0.4]]))
    torch.manual_seed(0)
    cold = torch.stack([NucleusSampler(0.25, 1.0)(None, logits).argmax(-1) for _ in range(2000)]).float().mean()
    torch.manual_seed(0)
    warm = torch.stack([NucleusSampler(1.0, 1.0)(None, logits).argmax(-1) for _ in range(2000)]).float().mean()
    # p(token 1) = 0.4 at T=1; at T=0.25 it is 0.4^4 / (0.6^4 + 0.4^4) = 0.165
    assert abs(warm - 0.4) < 0.03 and abs(cold - 0.165) < 0.03


def test_shared_prefill_for_repeated_prompts_matches_separate_prompts(tiny):
    """r samples of one prompt reuse one prefill (cache repeated r times). With the sampler made greedy
    (temperature -> 0 limit: top_p tiny keeps only the argmax) the result must equal generating the
    same prompts without sharing, token for token."""
    from revrel.models.encoding import chat_ids
    from revrel.models.generation import _run_length, generate_ids

    prompts = ["hello", "write a rude comment about people and the weather", "hi"]
    ids = [chat_ids(tiny.tokenizer, p) for p in prompts]
    repeated = [x for x in ids for _ in range(3)]
    assert _run_length(repeated) == 3 and _run_length(ids) == 1 and _run_length(ids + ids) == 1
    cfg = GenerationConfig(max_new_tokens=8, temperature=1.0, top_p=1e-6, batch_size=6, progress=False)
    shared = generate_ids(tiny.model, tiny.tokenizer, repeated, cfg)
    plain = [generate_ids(tiny.model, tiny.tokenizer, [x], cfg)[0] for x in repeated]
    assert shared == plain
    # real sampling: the 3 samples of a prompt differ from each other, and a rerun is identical
    cfg = GenerationConfig(max_new_tokens=8, temperature=1.0, top_p=0.95, batch_size=6, seed=1, progress=False)
    a, b = generate_ids(tiny.model, tiny.tokenizer, repeated, cfg), generate_ids(tiny.model, tiny.tokenizer, repeated, cfg)
    assert a == b and len({tuple(t) for t, _ in a[:3]}) > 1
