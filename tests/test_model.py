import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from gptkit.model import GPT, KVCache, ModelConfig

VOCAB = 67


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = ModelConfig(**{**dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32), **overrides})
    return GPT(config).eval()


def random_ids(batch: int, length: int, seed: int = 1, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_output_shapes_and_loss():
    model = tiny_model()
    idx = random_ids(3, 10)
    logits, loss = model(idx)
    assert logits.shape == (3, 10, VOCAB)
    assert loss is None
    logits, loss = model(idx, targets=random_ids(3, 10, seed=2))
    assert logits.shape == (3, 10, VOCAB)
    assert loss.shape == () and torch.isfinite(loss)


def test_initial_loss_is_close_to_uniform():
    # Small init weights -> nearly uniform predictions -> cross-entropy ~ ln(vocab).
    model = tiny_model()
    _, loss = model(random_ids(8, 16), targets=random_ids(8, 16, seed=3))
    assert loss.item() == pytest.approx(math.log(VOCAB), abs=0.1)


def test_loss_is_cross_entropy_of_logits():
    model = tiny_model()
    idx, targets = random_ids(2, 12), random_ids(2, 12, seed=5)
    logits, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_causality_future_tokens_do_not_change_past_logits():
    model = tiny_model()
    idx = random_ids(2, 16)
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 7) % VOCAB  # alter positions 9..15
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 9:], b[:, 9:])  # ...while the changed positions do differ


def test_kv_cache_prefill_then_one_token_at_a_time_equals_full_forward():
    model = tiny_model()
    idx = random_ids(2, 16)
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(model.config.n_layer)
        pieces = [model(idx[:, :5], cache=cache)[0]]  # prefill the prompt
        assert cache.length == 5
        for t in range(5, 16):
            pieces.append(model(idx[:, t : t + 1], cache=cache)[0])
        assert cache.length == 16
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_kv_cache_refuses_a_chunk_after_the_prompt():
    model = tiny_model()
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        model(random_ids(1, 4), cache=cache)
        with pytest.raises(ValueError, match="one token at a time"):
            model(random_ids(1, 2), cache=cache)


def test_weight_tying():
    model = tiny_model()
    names = [name for name, _ in model.named_parameters()]
    assert not any("lm_head" in n for n in names)
    # The output layer is the token embedding: no parameter has the (vocab, C) shape besides it.
    vocab_shaped = [n for n, p in model.named_parameters() if p.shape == (VOCAB, 32)]
    assert vocab_shaped == ["token_embedding.weight"]
    # Logits are exactly final_norm(x) @ token_embedding.weight.T: changing the embedding's row v
    # changes logit v even for positions whose input never used token v.
    idx = torch.zeros(1, 4, dtype=torch.long)  # only token 0 is ever looked up
    with torch.no_grad():
        before, _ = model(idx)
        # (a random direction: a constant one is invisible after LayerNorm, whose output sums to 0)
        model.token_embedding.weight[5] += torch.randn(32, generator=torch.Generator().manual_seed(0))
        after, _ = model(idx)
    changed = (after - before).abs().amax(dim=(0, 1)) > 1e-6
    assert changed[5] and changed.sum() == 1


def test_num_params_counts_the_tied_matrix_once():
    model = tiny_model()
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_params() == sum(unique.values())
    assert model.num_params(include_position_embedding=False) == model.num_params() - 16 * 32


def test_residual_projection_init_std():
    n_layer = 12  # more layers: the scaling is visible and the estimate from 4k+ weights is tight
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=VOCAB, block_size=16, n_layer=n_layer, n_head=4, n_embd=64))
    expected = 0.02 / math.sqrt(2 * n_layer)
    for block in model.blocks:
        for proj in (block.attn.proj, block.mlp.proj):
            assert proj.weight.std().item() == pytest.approx(expected, rel=0.1)
            assert torch.count_nonzero(proj.bias) == 0
        assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert block.mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.position_embedding.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_no_bias_option_removes_biases():
    model = tiny_model(bias=False)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    logits, _ = model(random_ids(1, 8))
    assert logits.shape == (1, 8, VOCAB)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=30, n_head=4), "model.n_embd (30) must be divisible by model.n_head (4)"),
        (dict(n_layer=0), "model.n_layer must be at least 1 (got 0)"),
        (dict(vocab_size=0), "model.vocab_size must be at least 1 (got 0)"),
        (dict(block_size=-1), "model.block_size must be at least 1 (got -1)"),
        (dict(dropout=1.0), "model.dropout must be in [0, 1) (got 1.0)"),
        (dict(vocab_multiple=0), "model.vocab_multiple must be at least 1 (got 0)"),
    ],
)
def test_config_validation_messages(overrides, message):
    config = ModelConfig(**{**dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32), **overrides})
    assert message in config.validate()
    with pytest.raises(ValueError) as info:
        GPT(config)
    assert message in str(info.value)


def test_default_config_is_gpt2_small_and_valid():
    config = ModelConfig()
    assert config.validate() == []
    assert (config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd) == (50257, 1024, 12, 12, 768)
    assert ModelConfig(**config.to_dict()) == config


def test_block_size_overflow_raises():
    model = tiny_model()
    with pytest.raises(ValueError, match="17 tokens is longer than block_size 16"):
        model(random_ids(1, 17))
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        model(random_ids(1, 16), cache=cache)
        with pytest.raises(ValueError, match="longer than block_size"):
            model(random_ids(1, 1), cache=cache)


def test_dropout_is_active_only_in_training_mode():
    model = tiny_model(dropout=0.5)
    idx = random_ids(2, 8)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(idx)[0], model(idx)[0])
        model.train()
        torch.manual_seed(0)
        a = model(idx)[0]
        torch.manual_seed(1)
        b = model(idx)[0]
    assert not torch.allclose(a, b)


def test_flops_per_token_formula():
    model = tiny_model()
    c = model.config
    assert model.flops_per_token() == 6 * model.num_params(False) + 12 * c.n_layer * c.n_embd * c.block_size


# --- swappable components (position / norm / mlp / tie_embeddings) -------------------------------------

VARIANTS = {
    "rope": dict(position="rope"),
    "rmsnorm": dict(norm="rmsnorm"),
    "relu2": dict(mlp="relu2"),
    "swiglu": dict(mlp="swiglu"),
    "untied": dict(tie_embeddings=False),
    "all-modern": dict(position="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False, bias=False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_are_causal_cache_exact_and_start_uniform(variant):
    model = tiny_model(**VARIANTS[variant])
    idx = random_ids(2, 16)
    with torch.no_grad():
        full, loss = model(idx, targets=random_ids(2, 16, seed=9))
        changed = idx.clone()
        changed[:, 10:] = (changed[:, 10:] + 1) % VOCAB
        torch.testing.assert_close(model(changed)[0][:, :10], full[:, :10], rtol=0, atol=1e-6)
        cache = KVCache(model.config.n_layer)
        pieces = [model(idx[:, :3], cache=cache)[0]] + [model(idx[:, t : t + 1], cache=cache)[0] for t in range(3, 16)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    assert loss.item() == pytest.approx(math.log(VOCAB), abs=0.15)


def test_rope_has_no_position_embedding_and_sees_order():
    model = tiny_model(position="rope")
    assert model.position_embedding is None
    assert not any("position" in name for name, _ in model.named_parameters())
    assert not any("cos" in k or "sin" in k for k in model.state_dict())  # rebuilt, not saved
    idx = random_ids(1, 8)
    with torch.no_grad():
        a = model(idx)[0][0, -1]
        swapped = idx.clone()  # the same tokens, two of them in swapped places
        swapped[0, [0, 5]] = swapped[0, [5, 0]]
        c = model(swapped)[0][0, -1]
    assert not torch.allclose(a, c)  # order matters even without a position table


def test_untied_model_has_its_own_output_matrix():
    model = tiny_model(tie_embeddings=False)
    assert model.lm_head is not None and model.lm_head.weight.shape == (VOCAB, 32)
    assert model.lm_head.weight.data_ptr() != model.token_embedding.weight.data_ptr()
    tied = tiny_model()
    assert model.num_params() == tied.num_params() + VOCAB * 32


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(position="sinusoidal"), "model.position must be one of learned, rope, alibi, none (got 'sinusoidal')"),
        (dict(norm="batchnorm"), "model.norm must be one of layernorm, rmsnorm (got 'batchnorm')"),
        (dict(mlp="gelu2"), "model.mlp must be one of gelu, relu2, swiglu (got 'gelu2')"),
        (dict(position="rope", n_embd=30, n_head=2), "model.position = rope needs an even head size"),
    ],
)
def test_component_validation(overrides, message):
    config = ModelConfig(**{**dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32), **overrides})
    assert any(message in p for p in config.validate())


def test_rotary_scores_depend_only_on_the_distance_between_positions():
    """RoPE's defining property: <rot(q, m), rot(k, n)> is a function of m - n alone, and a rotation
    keeps a vector's length."""
    from gptkit.model import Rotary

    torch.manual_seed(0)
    rotary = Rotary(ModelConfig(n_embd=8, n_head=1, block_size=32))
    q, k = torch.randn(8), torch.randn(8)

    def at(vec, pos):  # place `vec` at position `pos` of a (1, T, 1, D) tensor and rotate it
        x = torch.zeros(1, 32, 1, 8)
        x[0, pos, 0] = vec
        return rotary(x, 0)[0, pos, 0]

    scores = [torch.dot(at(q, m), at(k, m - 3)) for m in (3, 10, 20, 31)]
    assert torch.allclose(torch.stack(scores), scores[0].expand(4), atol=1e-5)
    assert not torch.allclose(torch.dot(at(q, 10), at(k, 7)), torch.dot(at(q, 10), at(k, 2)), atol=1e-3)
    assert torch.allclose(at(q, 17).norm(), q.norm(), atol=1e-5)
    assert torch.equal(at(q, 0), q)  # position 0 is not rotated


# --- vocabulary padding (vocab_multiple) --------------------------------------------------------------


def padded_copy(model: GPT, multiple: int) -> GPT:
    """`model` with its vocabulary padded to `multiple`: the same weights, plus (random) padded rows."""
    padded = GPT(replace(model.config, vocab_multiple=multiple)).eval()
    state = padded.state_dict()
    for name, tensor in model.state_dict().items():
        state[name] = torch.cat([tensor, state[name][tensor.size(0) :]]) if name in ("token_embedding.weight", "lm_head.weight") else tensor
    padded.load_state_dict(state)
    return padded


@pytest.mark.parametrize(
    "vocab, multiple, padded", [(67, 1, 67), (67, 64, 128), (64, 64, 64), (65, 8, 72), (50257, 64, 50304)]
)
def test_padded_vocab_size_rounds_up_to_the_multiple(vocab, multiple, padded):
    config = ModelConfig(vocab_size=vocab, vocab_multiple=multiple)
    assert config.padded_vocab_size == padded and config.vocab_size == vocab


@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_padded_model_has_padded_rows_and_logits(tie_embeddings):
    model = tiny_model(vocab_multiple=64, tie_embeddings=tie_embeddings)
    assert model.token_embedding.weight.shape == (128, 32)
    if not tie_embeddings:
        assert model.lm_head.weight.shape == (128, 32)
    logits, loss = model(random_ids(2, 8), targets=random_ids(2, 8, seed=2))
    assert logits.shape == (2, 8, 128) and torch.isfinite(loss)
    assert model.unpadded(logits).shape == (2, 8, VOCAB)
    # Padded rows are real weights: counted as parameters, and so in the FLOPs per token.
    unpadded = tiny_model(tie_embeddings=tie_embeddings)
    extra = (128 - VOCAB) * 32 * (1 if tie_embeddings else 2)
    assert model.num_params() == unpadded.num_params() + extra
    assert model.flops_per_token() == unpadded.flops_per_token() + 6 * extra


def test_padding_changes_only_the_extra_logits():
    """With the same weights in the real rows, the real tokens' logits are the unpadded model's. The
    loss is the cross-entropy over every padded logit (as in nanoGPT), so at init the padded ids take
    some probability and the loss is above the unpadded one; without them it is the same."""
    model = tiny_model()
    padded = padded_copy(model, 64)
    idx, targets = random_ids(2, 12), random_ids(2, 12, seed=5)
    with torch.no_grad():
        logits, loss = model(idx, targets)
        padded_logits, padded_loss = padded(idx, targets)
    torch.testing.assert_close(padded.unpadded(padded_logits), logits)
    torch.testing.assert_close(padded_loss, F.cross_entropy(padded_logits.reshape(-1, 128), targets.reshape(-1)))
    assert padded_loss > loss
    masked = F.cross_entropy(padded.unpadded(padded_logits).reshape(-1, VOCAB), targets.reshape(-1))
    torch.testing.assert_close(masked, loss)


def test_training_pushes_the_padded_ids_down():
    """The padded ids are never targets, so the loss alone drives their probability towards zero."""
    model = tiny_model(vocab_multiple=64).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx, targets = random_ids(8, 16), random_ids(8, 16, seed=3)

    def padded_probability() -> float:
        with torch.no_grad():
            return torch.softmax(model(idx)[0], dim=-1)[..., VOCAB:].sum(-1).mean().item()

    before = padded_probability()
    for _ in range(30):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before > 0.4  # 61 of 128 nearly uniform logits at init
    assert padded_probability() < before / 10


# --- rotary as cos/sin tables, one table per component, masked and summed losses -----------------------


def complex_rotary_reference(x: torch.Tensor, start: int, block_size: int, base: float = 10000.0) -> torch.Tensor:
    """The rotary embedding of gptkit <= 0.x, kept here as the reference: adjacent channel pairs
    (2i, 2i+1) read as complex numbers and multiplied by e^(i * position * base^(-2i/D))."""
    D, T = x.size(-1), x.size(1)
    inv_freq = base ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)
    rotation = torch.polar(torch.ones_like(angles), angles)[start : start + T].view(T, *[1] * (x.dim() - 3), -1)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


def test_real_rotary_equals_the_complex_form_it_replaced():
    from gptkit.model import Rotary

    rotary = Rotary(ModelConfig(n_embd=64, n_head=4, block_size=32))
    x = torch.randn(3, 20, 2, 4, 16, generator=torch.Generator().manual_seed(0))
    for start in (0, 5, 12):
        torch.testing.assert_close(rotary(x, start), complex_rotary_reference(x, start, 32), rtol=0, atol=1e-6)
    assert not any("rotary" in k for k in GPT(ModelConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32, position="rope")).state_dict())


def test_a_checkpoint_of_the_complex_rotary_model_gives_the_same_logits():
    """Same weights, attention rotated the old (complex) way vs the new (real) way: logits within 1e-6,
    the model's state-dict keys unchanged (nothing rotary is saved, so old files load strictly)."""
    from gptkit.model import CausalSelfAttention

    new = tiny_model(position="rope", norm="rmsnorm", mlp="swiglu")
    old = tiny_model(position="rope", norm="rmsnorm", mlp="swiglu")
    old.load_state_dict(new.state_dict(), strict=True)
    block_size = old.config.block_size

    class ComplexRotary(torch.nn.Module):
        def forward(self, x, start):
            return complex_rotary_reference(x, start, block_size)

    for module in old.modules():
        if isinstance(module, CausalSelfAttention):
            module.rotary = ComplexRotary()
    idx = random_ids(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(new(idx)[0], old(idx)[0], rtol=0, atol=1e-6)
        cache_new, cache_old = KVCache(2), KVCache(2)
        new(idx[:, :7], cache=cache_new), old(idx[:, :7], cache=cache_old)
        torch.testing.assert_close(new(idx[:, 7:8], cache=cache_new)[0], old(idx[:, 7:8], cache=cache_old)[0], rtol=0, atol=1e-6)


def test_every_component_table_offers_exactly_the_configs_choices():
    from gptkit.config import COMPONENT_CHOICES
    from gptkit.model import COMPONENTS, build

    assert set(COMPONENTS) == set(COMPONENT_CHOICES)
    for kind, table in COMPONENTS.items():
        assert tuple(table) == COMPONENT_CHOICES[kind]
        for name, cls in table.items():
            config = ModelConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32, **{kind: name})
            assert type(build(kind, config)) is cls and cls.__doc__


def test_a_masked_target_does_not_change_the_loss():
    """A -100 target adds nothing: the loss is the mean over the other positions, and it is the same
    whatever the model predicts at the masked position."""
    from gptkit.model import IGNORE_INDEX

    assert IGNORE_INDEX == -100
    model = tiny_model()
    idx, targets = random_ids(2, 12), random_ids(2, 12, seed=5)
    masked = targets.clone()
    masked[0, 3] = IGNORE_INDEX
    with torch.no_grad():
        logits, loss = model(idx, masked)
        keep = masked.reshape(-1) != IGNORE_INDEX  # 23 of 24 positions
        expected = F.cross_entropy(logits.reshape(-1, VOCAB)[keep], targets.reshape(-1)[keep])
        torch.testing.assert_close(loss, expected)
        assert not torch.allclose(model(idx, targets)[1], loss)  # unmasked, that position counts
        # The same loss when the masked position's logits change (its own input token changes; causal
        # attention keeps earlier positions as they were, so mask every later target too).
        later_masked = masked.clone()
        later_masked[0, 4:] = IGNORE_INDEX
        changed = idx.clone()
        changed[0, 3] = (changed[0, 3] + 1) % VOCAB
        torch.testing.assert_close(model(changed, later_masked)[1], model(idx, later_masked)[1], rtol=0, atol=1e-6)


def test_summed_loss_divided_by_valid_targets_is_the_mean():
    from gptkit.model import IGNORE_INDEX

    model = tiny_model()
    idx, targets = random_ids(2, 12), random_ids(2, 12, seed=5)
    targets[1, :4] = IGNORE_INDEX
    with torch.no_grad():
        _, mean = model(idx, targets)
        _, total = model(idx, targets, reduction="sum")
        _, default = model(idx, targets)
    valid = (targets != IGNORE_INDEX).sum()
    assert valid == 20
    torch.testing.assert_close(total / valid, mean)
    assert torch.equal(default, mean)
