"""Decoding on a CPU (cpu_decode.py): the weights' layout, products split over the cores, oneDNN off.
Each changes how a decode step runs, never what it computes."""

import copy

import pytest
import torch
import torch.nn.functional as F

import gptkit.cpu_decode
from gptkit.cpu_decode import SplitMatmuls, lay_out_for_decoding, laid_out, split_linear, without_onednn
from gptkit.engine import Engine, SamplingParams
from gptkit.kv_cache import KVCache
from gptkit.model import GPT, ModelConfig
from gptkit.tokenizers import CharTokenizer

TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,\n")


def model_of(n_embd, tie=True, dtype=torch.float64, scale=4.0):
    """float64 and weights sharper than an untrained init (as tests/test_engine.py): no near tie flips a
    token between two ways of computing the same logits."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=TOK.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=n_embd, tie_embeddings=tie)
    model = GPT(config).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale if p.dim() > 1 else 1.0)
    return model


@pytest.fixture
def two_threads():
    """Splitting needs more than one torch thread; CI's machine has two cores, a laptop more."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def split_calls(monkeypatch):
    """How many times SplitMatmuls took the split path."""
    calls = []
    original = gptkit.cpu_decode.split_linear

    def counting(*args, **kwargs):
        calls.append(args[1].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(gptkit.cpu_decode, "split_linear", counting)
    return calls


@pytest.mark.parametrize("tie", [True, False])
def test_the_cpu_layout_changes_strides_and_nothing_else(tie):
    """lay_out_for_decoding: each Linear weight (and a tied embedding) becomes the transpose of a
    contiguous (in, out) buffer; values, state_dict, tying, the loss and its gradients and the engine's
    tokens stay the same; a second call changes nothing."""
    plain = model_of(32, tie=tie)
    model = lay_out_for_decoding(copy.deepcopy(plain))
    for name, weight in model.named_parameters():
        assert torch.equal(weight, dict(plain.named_parameters())[name])
        expected = ".weight" in name and weight.dim() == 2 and ("embedding" not in name or (tie and name == "token_embedding.weight"))
        assert laid_out(weight) == expected, name
        assert weight.is_contiguous() != expected, name
        if expected:
            assert weight.stride() == (1, weight.size(0)) and weight.t().is_contiguous(), name
    assert (model.lm_head is None) == tie
    strides = [p.stride() for p in model.parameters()]
    lay_out_for_decoding(model)
    assert [p.stride() for p in model.parameters()] == strides
    state, want = model.state_dict(), plain.state_dict()
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)

    x = torch.tensor([TOK.encode("the king is dead"[:-1])])
    y = torch.tensor([TOK.encode("the king is dead"[1:])])
    for m in (plain, model):
        m.train()
        m.zero_grad()
        m(x, y)[1].backward()
        m.eval()
    for (name, p), q in zip(plain.named_parameters(), model.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-12), name

    prompts = [TOK.encode("the king"), TOK.encode("a")]
    params = SamplingParams(max_new_tokens=20, temperature=0.0, stop_at_eot=False)
    want = [c.token_ids for c in Engine(copy.deepcopy(plain), TOK, max_batch_size=2, cpu_layout=False).generate(prompts, params)]
    assert [c.token_ids for c in Engine(plain, TOK, max_batch_size=2).generate(prompts, params)] == want
    assert not plain.blocks[0].attn.qkv.weight.is_contiguous()  # the engine laid out the model it was given


@pytest.mark.parametrize("parts", [1, 2, 3, 4])
@pytest.mark.parametrize("rows", [(1,), (5,), (3, 1), (2, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_split_linear_is_linear(parts, rows, bias):
    """P partial products over the inner dimension, summed: F.linear's result to float32 rounding, for
    any leading shape of x, with and without a bias."""
    torch.manual_seed(1)
    linear = lay_out_for_decoding(torch.nn.Linear(48, 20, bias=bias))
    x = torch.randn(*rows, 48)
    got = split_linear(x, linear.weight, linear.bias, parts)
    assert got.shape == (*rows, 20)
    torch.testing.assert_close(got, F.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-5)


def test_split_matmuls_takes_only_few_rows_of_large_laid_out_float32_weights(two_threads, split_calls):
    torch.manual_seed(2)
    n = 512  # 512 x 512 = 262,144 values: over MIN_WEIGHT
    assert n * n >= SplitMatmuls.MIN_WEIGHT > 128 * 128
    big = lay_out_for_decoding(torch.nn.Linear(n, n))
    x = torch.randn(1, 1, n)
    with SplitMatmuls():
        got = big(x)
    assert split_calls == [(n, n)]
    torch.testing.assert_close(got, F.linear(x, big.weight, big.bias), rtol=1e-5, atol=1e-5)

    plain_layout = torch.nn.Linear(n, n)  # nn.Linear's own (out, in) layout: its buffer is no set of blocks
    small = lay_out_for_decoding(torch.nn.Linear(128, 128))  # sits in the cache: splitting costs more
    half = lay_out_for_decoding(torch.nn.Linear(n, n)).to(torch.bfloat16)
    with SplitMatmuls():
        big(torch.randn(SplitMatmuls.MAX_ROWS + 1, n))  # a prefill's many rows: compute-bound, MKL's own threads
        plain_layout(x)
        small(torch.randn(1, 128))
        half(x.to(torch.bfloat16))
        torch.relu(x)  # anything but F.linear passes through
    assert split_calls == [(n, n)]
    big(x)  # outside the block: F.linear as ever
    assert split_calls == [(n, n)]


def test_split_parts_divide_the_inner_dimension():
    assert gptkit.cpu_decode._parts(768, 2) == 2
    assert gptkit.cpu_decode._parts(768, 16) == 16
    assert gptkit.cpu_decode._parts(768, 7) == 6  # the most parts, at most the threads, that divide it
    assert gptkit.cpu_decode._parts(5, 2) == 1  # none: the plain product


def test_the_engine_splits_the_decode_of_a_large_model_only(two_threads, split_calls):
    """A model with 256-wide blocks (its MLP matrices hold 262,144 values) gets SplitMatmuls and uses it in
    decode steps, not in the prefill; a 32-wide one, one thread, float64 weights, bfloat16 autocast,
    cpu_layout=False or split_matmuls=False do not."""
    prompts = [TOK.encode("the king"), TOK.encode("a")]
    params = SamplingParams(max_new_tokens=5, temperature=0.0, stop_at_eot=False)
    engine = Engine(model_of(256, dtype=torch.float32, scale=1.0), TOK, max_batch_size=2)
    assert isinstance(engine.split_matmuls, SplitMatmuls)
    engine.generate(prompts, params)
    per_pass = 6  # each block's qkv (768 x 256), MLP fc and proj (1024 x 256); attention's proj and the output layer are smaller
    assert len(split_calls) == per_pass * (params.max_new_tokens - 1)  # the first token comes from the prefill

    assert Engine(model_of(256, dtype=torch.float32), TOK, split_matmuls=False).split_matmuls is None
    assert Engine(model_of(256, dtype=torch.float32), TOK, cpu_layout=False).split_matmuls is None
    assert Engine(model_of(256), TOK).split_matmuls is None  # float64
    assert Engine(model_of(256, dtype=torch.float32), TOK, precision=torch.bfloat16).split_matmuls is None  # autocast
    assert Engine(model_of(32, dtype=torch.float32), TOK).split_matmuls is None
    torch.set_num_threads(1)
    assert Engine(model_of(256, dtype=torch.float32), TOK).split_matmuls is None


def test_a_split_decode_gives_the_logits_of_a_plain_one(two_threads, split_calls):
    """Teacher-forced through the KV cache, token by token: the logits of every decode step with
    SplitMatmuls equal the plain ones to float32 rounding, tied and untied."""
    for tie in (True, False):
        model = lay_out_for_decoding(model_of(256, tie=tie, dtype=torch.float32, scale=1.0))
        tokens = TOK.encode("the king is dead, long live")[:16]
        plain_cache, split_cache = KVCache(2), KVCache(2)
        with torch.inference_mode():
            model(torch.tensor([tokens[:4]]), cache=plain_cache)
            model(torch.tensor([tokens[:4]]), cache=split_cache)
            for token in tokens[4:]:
                want, _ = model(torch.tensor([[token]]), cache=plain_cache)
                with SplitMatmuls():
                    got, _ = model(torch.tensor([[token]]), cache=split_cache)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert split_calls  # the split path did run


def test_without_onednn_restores_the_setting():
    assert torch.backends.mkldnn.enabled
    with without_onednn():
        assert not torch.backends.mkldnn.enabled
        with without_onednn(active=False):  # nested, inactive: leaves it as it finds it
            assert not torch.backends.mkldnn.enabled
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError), without_onednn():
        raise RuntimeError("boom")
    assert torch.backends.mkldnn.enabled
    with without_onednn(active=False):
        assert torch.backends.mkldnn.enabled


def test_the_engine_turns_onednn_off_for_its_float32_steps_only(monkeypatch):
    """GELU's oneDNN kernel costs more to set up than a small model's decode step computes: the engine's
    float32 CPU steps run without it, and leave the setting as they found it."""
    seen = []
    original = F.gelu
    monkeypatch.setattr(F, "gelu", lambda *a, **k: seen.append(torch.backends.mkldnn.enabled) or original(*a, **k))
    params = SamplingParams(max_new_tokens=3, temperature=0.0, stop_at_eot=False)
    Engine(model_of(32, dtype=torch.float32), TOK).generate([TOK.encode("ab")], params)
    assert seen and not any(seen)
    assert torch.backends.mkldnn.enabled
    seen.clear()
    Engine(model_of(32, dtype=torch.float32), TOK, precision=torch.bfloat16).generate([TOK.encode("ab")], params)
    assert seen and all(seen)
