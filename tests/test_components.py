"""Every swappable part of the model (docs/components.md), each alone and where they interact.

For each variant, one tiny run (robust_fixtures' char-level Shakespeare, 2 layers, 32 wide, context 16):
  * trains a few steps through `train()`, saves, and loads back to the same logits;
  * samples with the KV cache, and the tokens equal those of recomputing every prefix from scratch;
  * resumes after a crash between checkpoints, bitwise (every loss and every weight), as test_resume.py
    requires of the default model.
Then the parts' own properties: the default is exactly GPT-2 (names, shapes, logits), parameter and FLOP
counts, and the clear refusal of every export format for what it cannot express.
"""

from __future__ import annotations

import pytest
import torch
from robust_fixtures import loss_curve, same_weights, tiny_data, tiny_toml, val_curve  # noqa: F401  (fixtures by name)

from gptkit.checkpoint import load_checkpoint
from gptkit.config import ModelConfig, resolve_config
from gptkit.errors import GptkitError
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
    "parallel": dict(block="parallel"),
    "parallel-rope-dropout": dict(block="parallel", position="rope", dropout=0.2),
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


# --- export: what a format cannot express is refused by name ----------------------------------------------

UNEXPORTABLE = {
    "no-positions": (dict(position="none"), "position = none"),
    "parallel": (dict(block="parallel"), "parallel block"),
    "parallel-llama": (dict(block="parallel", position="rope", norm="rmsnorm", mlp="swiglu", bias=False), "parallel block"),
}


@pytest.mark.parametrize("case", list(UNEXPORTABLE))
@pytest.mark.parametrize("format", ["hf", "onnx", "gguf"])
def test_every_export_format_refuses_what_it_cannot_express(case, format, tmp_path):
    from export_fixtures import make_checkpoint

    from gptkit.export import export
    from gptkit.tokenizers import CharTokenizer

    options, words = UNEXPORTABLE[case]
    tokenizer = CharTokenizer.train("abcdefghij \n")
    ckpt = make_checkpoint(tmp_path / "ckpt.safetensors", tokenizer, **options)
    out = tmp_path / ("hf" if format == "hf" else f"model.{format}")
    with pytest.raises(GptkitError) as refused:
        export(ckpt, format, out)
    assert "this model cannot be exported" in refused.value.message and words in refused.value.message
    assert "what exports" in refused.value.hint
    assert not out.exists()
