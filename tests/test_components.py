"""Every swappable part of the model (docs/components.md), each alone and where they interact.

For each variant, one tiny run (robust_fixtures' char-level Shakespeare, 2 layers, 32 wide, context 16):
  * trains a few steps through `train()`, saves, and loads back to the same logits;
  * samples with the KV cache, and the tokens equal those of recomputing every prefix from scratch;
  * resumes after a crash between checkpoints, bitwise (every loss and every weight), as test_resume.py
    requires of the default model.
Then the parts' own properties: the default is exactly GPT-2 (names, shapes, logits); each attention
variant against attention written out by hand; parameter and FLOP counts; rows of different lengths in
one cached batch (the engine's), for every variant. Export and checkpoints: test_components_export.py.
"""

from __future__ import annotations

import pytest
import torch
from robust_fixtures import loss_curve, same_weights, tiny_data, tiny_toml, val_curve  # noqa: F401  (fixtures by name)

from gptkit.checkpoint import load_checkpoint
from gptkit.config import ModelConfig, resolve_config
from gptkit.generate import generate
from gptkit.inference import load_model
from gptkit.model import GPT
from gptkit.monitor import Monitor
from gptkit.run_folder import CKPT_NAME
from gptkit.train import train

# GPT-2's block on the tiny run's sizes; each variant changes what its name says.
BASE = dict(bias=True, dropout=0.0)
VARIANTS = {
    "gpt2": {},
    "no-bias": dict(bias=False),
    "dropout": dict(dropout=0.2),
    "untied": dict(tie_embeddings=False),
    "rope": dict(position="rope"),
    "no-positions": dict(position="none"),
    "rmsnorm": dict(norm="rmsnorm"),
    "relu2": dict(mlp="relu2"),
    "swiglu": dict(mlp="swiglu"),
    "alibi": dict(position="alibi"),
    "grouped-query": dict(n_head=4, n_kv_head=2),
    "multi-query": dict(n_head=4, n_kv_head=1),
    "qk-norm": dict(qk_norm=True),
    "window": dict(attention_window=5),
    "parallel": dict(block="parallel"),
    # where parts interact: the cache holds H_kv heads of turned keys, windows and biases from positions
    "gqa-rope-window": dict(n_head=4, n_kv_head=2, position="rope", attention_window=6),
    "alibi-window-dropout": dict(position="alibi", attention_window=6, dropout=0.2),
    "mqa-alibi-qk-norm": dict(n_head=4, n_kv_head=1, position="alibi", qk_norm=True),
    "parallel-rope-dropout": dict(block="parallel", position="rope", dropout=0.2),
    "llama-like": dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False, n_head=4, n_kv_head=2),
}
STEPS, SAVE_EVERY, CRASH_AT = 8, 4, 6


class CrashAt(Monitor):
    """Fails at step `at` as a crash does: nothing is saved after the last checkpoint."""

    def __init__(self, at: int):
        self.at = at

    def step(self, record: dict) -> None:
        if record["step"] == self.at:
            raise RuntimeError("simulated crash")


def variant_configs(variant: str, data, toml, out, **train):
    settings = dict(max_iters=STEPS, lr_decay_iters=STEPS, eval_interval=SAVE_EVERY, data=str(data), out=str(out), **train)
    return resolve_config(None, toml, {**BASE, **VARIANTS[variant]}, settings)


def recomputed_greedy(model: GPT, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens without a cache: the whole (last block_size tokens of the) text, every step."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            window = torch.tensor([tokens[-model.config.block_size :]])
            tokens.append(int(model.unpadded(model(window)[0][0, -1]).argmax()))
    return tokens[len(prompt) :]


@pytest.fixture(scope="module")
def reference_runs(tiny_data, tiny_toml, tmp_path_factory):
    """variant -> the run folder of an uninterrupted run (made once per variant, on first use)."""
    runs = {}

    def run(variant: str):
        if variant not in runs:
            out = tmp_path_factory.mktemp(f"components-{variant}") / "run"
            train(*variant_configs(variant, tiny_data, tiny_toml, out))
            runs[variant] = out
        return runs[variant]

    return run


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_trains_saves_loads_and_samples_with_the_cache(variant, reference_runs):
    run = reference_runs(variant)
    curve = loss_curve(run)
    assert sorted(curve) == list(range(1, STEPS + 1)) and all(map(torch.isfinite, map(torch.tensor, curve.values())))
    assert curve[STEPS] < curve[1]  # it learns

    checkpoint = load_checkpoint(run / CKPT_NAME)
    assert checkpoint.model_config == ModelConfig(**{**checkpoint.model_config.to_dict(), **BASE, **VARIANTS[variant]})
    model = load_model(run / CKPT_NAME, device="cpu", dtype="float32").model
    rebuilt = GPT.from_state_dict(checkpoint.model_config, checkpoint.state_dict).eval()
    ids = torch.randint(checkpoint.model_config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], rebuilt(ids)[0], rtol=0, atol=0)

    # Past the context (16): the cache is rebuilt for the last block_size tokens, as recomputing sees them.
    prompt = ids[0, :5].tolist()
    cached = list(generate(model, prompt, 24, temperature=0.0, top_k=None))
    assert cached == recomputed_greedy(model, prompt, 24)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_resumes_bitwise_after_a_crash(variant, reference_runs, tiny_data, tiny_toml, tmp_path):
    reference = reference_runs(variant)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(*variant_configs(variant, tiny_data, tiny_toml, out), monitor=CrashAt(CRASH_AT))
    train(*variant_configs(variant, tiny_data, tiny_toml, out), resume=True)
    assert loss_curve(out) == loss_curve(reference)  # every step's loss, bitwise
    assert val_curve(out) == val_curve(reference)
    assert same_weights(out / CKPT_NAME, reference / CKPT_NAME)


# --- the parts' own properties ---------------------------------------------------------------------------

VOCAB = 67


def tiny(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(**{**dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=4, n_embd=32), **overrides})).eval()


def test_the_default_is_exactly_gpt2():
    """GPT-2's tensor names and shapes (what old checkpoints hold), whatever new fields the config gained."""
    outside, block = GPT.expected_shapes(ModelConfig())
    assert outside == {"token_embedding.weight": (50257, 768), "position_embedding.weight": (1024, 768),
                       "final_norm.weight": (768,), "final_norm.bias": (768,)}
    assert block == {
        "attn_norm.weight": (768,), "attn_norm.bias": (768,), "attn.qkv.weight": (2304, 768), "attn.qkv.bias": (2304,),
        "attn.proj.weight": (768, 768), "attn.proj.bias": (768,), "mlp_norm.weight": (768,), "mlp_norm.bias": (768,),
        "mlp.fc.weight": (3072, 768), "mlp.fc.bias": (3072,), "mlp.proj.weight": (768, 3072), "mlp.proj.bias": (768,),
    }
    assert GPT.expected_shapes(ModelConfig(n_layer=1))[0]["position_embedding.weight"] == (1024, 768)
    assert ModelConfig().kv_heads == 12


def test_dropout_zero_is_no_module_call_and_dropout_still_drops_in_training():
    """dropout = 0 builds nn.Identity (a decode step makes nine dropout calls otherwise); dropout > 0 the
    real nn.Dropout, active in training only."""
    config = dict(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=32)
    plain = GPT(ModelConfig(**config, dropout=0.0))
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    dropping = GPT(ModelConfig(**config, dropout=0.5))
    for layer in (dropping.embedding_dropout, dropping.blocks[0].attn.resid_dropout, dropping.blocks[0].mlp.dropout):
        assert isinstance(layer, torch.nn.Dropout) and layer.p == 0.5
    idx = torch.randint(0, 65, (2, 16))
    dropping.train()
    assert not torch.equal(dropping(idx)[0], dropping(idx)[0])  # fresh masks each pass
    dropping.eval()
    assert torch.equal(dropping(idx)[0], dropping(idx)[0])


def test_no_positions_has_no_position_tensor_and_still_sees_order_through_the_mask():
    model = tiny(position="none")
    assert model.position_embedding is None and not any("position" in k for k in model.state_dict())
    assert model.num_params() == tiny().num_params() - 16 * 32  # GPT-2's table of block_size x n_embd is gone
    idx = torch.randint(VOCAB, (1, 8), generator=torch.Generator().manual_seed(1))
    swapped = idx.clone()
    swapped[0, [0, 5]] = swapped[0, [5, 0]]
    with torch.no_grad():  # the last position's logits depend on which token is where, via the causal prefix sums
        assert not torch.allclose(model(idx)[0][0, 4], model(swapped)[0][0, 4])
    one_layer = tiny(position="none", n_layer=1)
    with torch.no_grad():  # ... but in one layer, the last position sees the same set of tokens: order is invisible
        torch.testing.assert_close(one_layer(idx)[0][0, -1], one_layer(swapped)[0][0, -1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(tiny(n_layer=1)(idx)[0][0, -1], tiny(n_layer=1)(swapped)[0][0, -1])  # learned: visible


def test_parallel_block_has_one_norm_and_adds_both_sublayers_to_one_input():
    model = tiny(block="parallel")
    block = model.blocks[0]
    assert not hasattr(block, "mlp_norm") and not any("mlp_norm" in k for k in model.state_dict())
    assert model.num_params() == tiny().num_params() - 2 * 2 * 32  # per layer, one LayerNorm (gain and bias) fewer
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        h = block.attn_norm(x)
        torch.testing.assert_close(block(x), x + block.attn(h) + block.mlp(h))


def reference_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """Attention written out by hand, in float64, from the module's own weights: every head's scores
    q.k / sqrt(D), ALiBi's -m_h (i - j), the causal and window masks, the softmax, the key/value head of
    each query head's group, the output projection."""
    B, T, C = x.shape
    H, H_kv = attn.n_head, attn.n_kv_head
    D = C // H
    x = x.double()
    q, k, v = (x @ attn.qkv.weight.double().t()).split(attn.qkv_split, dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, H_kv, D), v.view(B, T, H_kv, D)
    if attn.q_norm is not None:
        q = q / q.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * attn.q_norm.weight.double()
        k = k / k.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * attn.k_norm.weight.double()
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j <= i) & ((i - j < attn.window) if attn.window else True)
    out = torch.empty(B, T, H, D, dtype=torch.float64)
    for h in range(H):
        g = h // (H // H_kv)  # the key/value head of this query head's group
        scores = q[:, :, h] @ k[:, :, g].transpose(1, 2) / D**0.5  # (B, T, T)
        if attn.alibi is not None:
            scores = scores - float(attn.alibi.slopes[h]) * (i - j)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        out[:, :, h] = weights @ v[:, :, g]
    return out.reshape(B, T, C) @ attn.proj.weight.double().t()


ATTENTION = {
    "multi-head": dict(),
    "grouped-query": dict(n_kv_head=2),
    "multi-query": dict(n_kv_head=1),
    "qk-norm": dict(qk_norm=True),
    "window": dict(attention_window=3),
    "alibi": dict(position="alibi"),
    "alibi-6-heads": dict(position="alibi", n_head=6, n_embd=48),
    "everything": dict(position="alibi", n_kv_head=2, qk_norm=True, attention_window=4),
}


@pytest.mark.parametrize("case", list(ATTENTION))
def test_attention_variants_compute_what_their_papers_write(case):
    model = tiny(bias=False, **ATTENTION[case])
    attn = model.blocks[0].attn
    if attn.q_norm is not None:  # gains away from 1, so that they count
        with torch.no_grad():
            attn.q_norm.weight.uniform_(0.5, 1.5), attn.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 9, model.config.n_embd, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(attn(x).double(), reference_attention(attn, x), rtol=1e-4, atol=1e-5)


def test_alibi_slopes_are_the_papers():
    from gptkit.components import ALiBi

    assert ALiBi.slopes_for(8) == [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8]
    assert ALiBi.slopes_for(4) == [2**-2, 2**-4, 2**-6, 2**-8]
    assert ALiBi.slopes_for(6) == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]  # 4 of their own, 2 of 8's in between
    model = tiny(position="alibi")
    assert model.position_embedding is None and not any("position" in k or "slopes" in k for k in model.state_dict())


def test_grouped_query_attention_is_multi_head_with_shared_key_value_heads():
    """A GQA model equals the multi-head model whose key/value heads are copies within each group; its
    qkv layer is smaller by the missing key/value rows, and it caches only its H_kv heads."""
    from gptkit.kv_cache import KVCache

    gqa = tiny(n_kv_head=2)  # 4 query heads, 2 key/value heads, D = 8
    mha = tiny()
    D = 8
    assert gqa.blocks[0].attn.qkv.weight.shape == (32 + 2 * 2 * D, 32)
    assert mha.num_params() - gqa.num_params() == 2 * (2 * 2 * D) * (32 + 1)  # layers x missing k, v rows x (weights + bias)
    state = mha.state_dict()
    for name, tensor in gqa.state_dict().items():
        if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
            q, k, v = tensor.split((32, 16, 16))
            per_head = lambda t: t.unflatten(0, (2, D)).repeat_interleave(2, dim=0).flatten(0, 1)  # noqa: E731
            state[name] = torch.cat([q, per_head(k), per_head(v)])
        else:
            state[name] = tensor
    mha.load_state_dict(state)
    ids = torch.randint(VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(gqa(ids)[0], mha(ids)[0], rtol=1e-5, atol=1e-5)
        for model, heads in ((gqa, 2), (tiny(n_kv_head=1), 1), (mha, 4)):
            cache = KVCache(model.config.n_layer)
            model(ids, cache=cache)
            assert cache.keys[0].shape == (2, heads, 16, D)  # (B, H_kv, block_size, D)


def test_n_kv_head_equal_to_n_head_is_the_default_model():
    default, explicit = tiny(), tiny(n_kv_head=4)
    assert {k: v.shape for k, v in default.state_dict().items()} == {k: v.shape for k, v in explicit.state_dict().items()}
    ids = torch.randint(VOCAB, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(default(ids)[0], explicit(ids)[0])


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    model = tiny(qk_norm=True, bias=False)
    attn = model.blocks[0].attn
    assert attn.q_norm.weight.shape == attn.k_norm.weight.shape == (8,)  # one gain per head channel
    x = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        before = attn(x)
        attn.qkv.weight[:48] *= 30.0  # queries and keys 30x larger: the logits of plain attention would explode
        torch.testing.assert_close(attn(x), before, rtol=1e-4, atol=1e-5)


def test_a_window_limits_how_far_back_each_layer_reaches():
    """Window 3, two layers: position t sees t-2..t in each layer, so t - 4 at most through both."""
    model = tiny(attention_window=3)
    ids = torch.randint(VOCAB, (1, 12), generator=torch.Generator().manual_seed(7))
    changed = ids.clone()
    changed[0, 0] = (changed[0, 0] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids)[0][0], model(changed)[0][0]
    assert not torch.allclose(a[4], b[4])  # reached through two layers
    torch.testing.assert_close(a[5:], b[5:], rtol=0, atol=0)  # out of reach: exactly unchanged


def test_flops_count_the_window_and_the_smaller_qkv():
    for overrides, keys in ((dict(), 16), (dict(attention_window=4), 4), (dict(attention_window=64), 16), (dict(n_kv_head=1), 16)):
        model = tiny(**overrides)
        assert model.flops_per_token() == 6 * model.num_params(False) + 12 * 2 * 32 * keys
    assert tiny(n_kv_head=1).flops_per_token() < tiny().flops_per_token()


POSITION_VARIANTS = {
    "learned": dict(), "rope": dict(position="rope"), "alibi": dict(position="alibi"), "none": dict(position="none"),
    "window": dict(attention_window=4), "gqa-rope-window": dict(position="rope", n_kv_head=2, attention_window=4),
    "alibi-window-mqa": dict(position="alibi", attention_window=5, n_kv_head=1), "qk-norm": dict(qk_norm=True),
    "parallel": dict(block="parallel"),
}


@pytest.mark.parametrize("variant", list(POSITION_VARIANTS))
def test_rows_of_different_lengths_decode_as_if_alone(variant):
    """The engine's batch: prompts of 3 and 7 tokens prefilled in one padded pass, then decoded together,
    each row at its own position (the mask from positions): every logit is that of the row alone."""
    from gptkit.kv_cache import KVCache

    model = tiny(**POSITION_VARIANTS[variant]).double()
    g = torch.Generator().manual_seed(8)
    prompts = [torch.randint(VOCAB, (3,), generator=g).tolist(), torch.randint(VOCAB, (7,), generator=g).tolist()]
    cache = KVCache(model.config.n_layer, batch_size=2)
    with torch.no_grad():
        logits, _ = model(torch.tensor([p + [0] * (7 - len(p)) for p in prompts]), cache=cache.rows([0, 1], [3, 7]))
        last = [logits[0, 2], logits[1, 6]]
        sequences = [list(p) for p in prompts]
        for _ in range(6):  # row 1 runs past position 12: beyond the windows, both rows far apart
            for row, seq in enumerate(sequences):
                want = model(torch.tensor([seq]))[0][0, -1]
                torch.testing.assert_close(last[row], want, rtol=0, atol=1e-10)
                seq.append(int(want.argmax()))
            logits, _ = model(torch.tensor([[s[-1]] for s in sequences]), cache=cache)
            last = [logits[0, 0], logits[1, 0]]


ENGINE_VARIANTS = {  # test_engine.py covers the named choices (COMPONENT_CHOICES); these add the numbers and mixes
    "grouped-query": dict(n_kv_head=2), "multi-query": dict(n_kv_head=1), "qk-norm": dict(qk_norm=True),
    "window": dict(attention_window=5), "gqa-rope-window": dict(n_kv_head=2, position="rope", attention_window=6),
    "alibi-window": dict(position="alibi", attention_window=6), "mqa-alibi-qk-norm": dict(n_kv_head=1, position="alibi", qk_norm=True),
    "alibi": dict(position="alibi"), "no-positions": dict(position="none"), "parallel": dict(block="parallel"),
}


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("variant", list(ENGINE_VARIANTS))
def test_the_engine_batches_every_variant_as_if_each_row_were_alone(variant, static):
    """Three prompts of different lengths in one continuous batch, 40 tokens each, past the context of 16
    (windows restart): every row's tokens are those of recomputing its window from scratch; also through
    the static decode step (every slot, positions from a device buffer: what CUDA graphs capture)."""
    from gptkit.engine import Engine, SamplingParams
    from gptkit.tokenizers import CharTokenizer

    tokenizer = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,\n")
    model = tiny(vocab_size=tokenizer.vocab_size, **ENGINE_VARIANTS[variant]).double()
    with torch.no_grad():  # sharper than the init: texts that differ between prompts and positions
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    prompts = [tokenizer.encode("the king"), tokenizer.encode("a"), tokenizer.encode("my lord, the")]
    params = SamplingParams(max_new_tokens=40, temperature=0.0, stop_at_eot=False)
    completions = Engine(model, tokenizer, max_batch_size=3, static=static, compile=False).generate(prompts, params)
    for prompt, completion in zip(prompts, completions):
        assert completion.token_ids == recomputed_greedy(model, prompt, 40)


def test_the_static_decode_step_of_every_attention_option_traces_as_one_graph():
    """torch.compile(fullgraph=True) of the static step (the 'eager' backend: the capture, no kernels) with
    grouped-query heads, QK-norm, a window and ALiBi's bias together: no graph break, the same tokens."""
    from gptkit.engine import Engine, SamplingParams
    from gptkit.tokenizers import CharTokenizer

    tokenizer = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,\n")
    model = tiny(vocab_size=tokenizer.vocab_size, position="alibi", n_kv_head=2, qk_norm=True, attention_window=6)
    prompts, params = [tokenizer.encode("the king"), tokenizer.encode("ab")], SamplingParams(max_new_tokens=6, temperature=0.0)
    want = [c.token_ids for c in Engine(model, tokenizer, max_batch_size=2).generate(prompts, params)]
    engine = Engine(model, tokenizer, max_batch_size=2, static=True, compile="eager")
    assert [c.token_ids for c in engine.generate(prompts, params)] == want


def test_lora_targets_the_right_rows_of_a_grouped_qkv():
    from gptkit.lora import apply_lora

    model = apply_lora(tiny(n_kv_head=2), "k,v", rank=2, alpha=2)
    assert model.blocks[0].attn.qkv.parts == [(32, 48), (48, 64)]  # q is 32 rows, k and v 16 each


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(block="serial"), "model.block must be one of sequential, parallel (got 'serial')"),
        (dict(n_kv_head=3), "model.n_head (4) must be a multiple of model.n_kv_head (3)"),
        (dict(n_kv_head=-1), "model.n_kv_head must not be negative"),
        (dict(attention_window=-2), "model.attention_window must not be negative"),
    ],
)
def test_invalid_component_settings_are_named(overrides, message):
    config = ModelConfig(**{**dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=4, n_embd=32), **overrides})
    assert any(message in p for p in config.validate()), config.validate()
