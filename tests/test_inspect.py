"""gptkit inspect: parameter counts, FLOPs, KV cache, the training-step memory estimate against a measured
step, attention weights against a from-scratch reference, next-token tables, and the command itself."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from gptkit.config import ModelConfig
from gptkit.inspect_model import compare, flops_per_token, kv_cache_bytes, parameter_counts, resolve_subject, shapes_model, summarize
from gptkit.memory_estimate import estimate_training_memory, measure_training_memory
from gptkit.model import GPT
from gptkit.optim import hidden_matrices
from gptkit.probes import attention_weights

GPT2_TINY = ModelConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True)


def test_parameters_per_component_follow_the_gpt2_formulas():
    c = GPT2_TINY
    L, C, V, T = c.n_layer, c.n_embd, c.vocab_size, c.block_size
    counts = parameter_counts(shapes_model(c))
    by = counts["by_component"]
    assert by["embeddings"] == V * C + T * C
    assert by["attention"] == L * (C * 3 * C + 3 * C + C * C + C)  # qkv and proj, with biases
    assert by["mlp"] == L * (C * 4 * C + 4 * C + 4 * C * C + C)
    assert by["norms"] == (2 * L + 1) * 2 * C  # two per block and the final one, gain and bias each
    assert by["output"] == 0 and counts["tied_embeddings"]  # the token embedding is the output layer
    assert counts["total"] == GPT(c).num_params()

    untied = parameter_counts(shapes_model(replace(c, tie_embeddings=False, bias=False, norm="rmsnorm")))
    assert untied["by_component"]["output"] == V * C
    assert untied["by_component"]["norms"] == (2 * L + 1) * C  # RMSNorm: a gain, no bias
    assert not untied["tied_embeddings"]


def test_flops_agree_with_the_model_and_the_kv_cache_with_its_shape():
    model = GPT(GPT2_TINY)
    f = flops_per_token(shapes_model(GPT2_TINY))
    assert f["training"] == model.flops_per_token()
    assert f["forward_matmul"] == 2 * model.num_params(include_position_embedding=False)
    c = GPT2_TINY
    assert f["forward_attention"] == 4 * c.n_layer * c.n_embd * c.block_size  # a third of the 12 L C T
    kv = kv_cache_bytes(c, "float32")
    assert kv["bytes_per_token"] == 2 * c.n_layer * c.n_embd * 4
    assert kv_cache_bytes(c, "bfloat16")["bytes_per_token"] * 2 == kv["bytes_per_token"]
    grouped = SimpleNamespace(n_layer=4, n_head=8, n_embd=256, block_size=128, n_kv_head=2)  # grouped-query attention
    assert kv_cache_bytes(grouped, "float16")["bytes_per_token"] == 2 * 4 * 2 * 32 * 2


@pytest.mark.parametrize(
    "model, batch, dtype, optimizer",
    [
        (dict(position="rope", mlp="swiglu", bias=False), 8, "float32", "adamw"),
        (dict(position="learned", mlp="gelu", norm="rmsnorm"), 4, "bfloat16", "muon"),
    ],
)
def test_memory_estimate_is_within_25_percent_of_a_measured_step(model, batch, dtype, optimizer):
    config = ModelConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64, **model)
    estimate = estimate_training_memory(config, batch, 64, dtype, optimizer)
    measured = measure_training_memory(config, batch, 64, dtype, optimizer)
    print(f"{model} {dtype} {optimizer}: estimated peak {estimate.peak_bytes:,} B, sum of parts {estimate.sum_bytes:,} B, measured {measured:,} B")
    assert measured > 0
    assert abs(estimate.peak_bytes - measured) <= 0.25 * measured
    assert abs(estimate.sum_bytes - measured) <= 0.25 * measured  # the parts explain the peak too

    real = GPT(config)
    n = real.num_params()
    assert estimate.weights_bytes == estimate.gradients_bytes == 4 * n  # float32 weights, one gradient each
    if optimizer == "adamw":  # two moments per weight, plus a step counter per tensor
        assert 8 * n <= estimate.optimizer_bytes <= 8 * n + 8 * len(list(real.parameters()))
    else:  # Muon: one momentum per hidden-matrix weight; AdamW's two moments for the rest
        hidden = sum(p.numel() for p in hidden_matrices(real))
        assert 4 * hidden + 8 * (n - hidden) <= estimate.optimizer_bytes <= 4 * hidden + 8 * (n - hidden) + 8 * len(list(real.parameters()))
    assert estimate.activation_bytes == sum(estimate.activation_bytes_by_component.values())
    assert estimate.activation_bytes_by_component["mlp"] > 0 and estimate.activation_bytes_by_component["attention"] > 0


def test_saved_activations_of_the_gpt2_block_follow_its_formula():
    """docs/inspect.md's count for the GPT-2 block in float32, per token: each block saves its two norms'
    inputs (C) with their mean and 1/std (2), the two norm outputs (C each: the inputs of qkv and fc), the
    qkv output (3C: q, k and v are views of it), attention's output (C) and log-sum-exp (H), the GELU's
    input and output (4C each); then the final norm (C + 2), its output (C) and the log-softmax (V), and
    the ids (int64)."""
    c = ModelConfig(vocab_size=65, block_size=32, n_layer=3, n_head=4, n_embd=32)
    B, T, L, C, H, V = 2, 32, c.n_layer, c.n_embd, c.n_head, c.vocab_size
    estimate = estimate_training_memory(c, B, T)
    floats = B * T * (L * (16 * C + H + 4) + 2 * C + 2 + V) + 1  # + the loss itself
    ids = 8 * B * T * 2  # the input ids and the targets (B, T), int64 (the learned positions are a slice of their table)
    assert estimate.activation_bytes == 4 * floats + ids


def test_activations_grow_with_the_batch_and_the_estimate_refuses_a_context_past_the_model():
    config = ModelConfig(vocab_size=65, block_size=32, n_layer=1, n_head=2, n_embd=32)
    small, large = (estimate_training_memory(config, b, 32) for b in (2, 8))
    assert large.activation_bytes == pytest.approx(4 * small.activation_bytes, rel=0.02)
    assert large.weights_bytes == small.weights_bytes
    from gptkit.errors import UsageError

    with pytest.raises(UsageError, match="longer than the model's block_size"):
        estimate_training_memory(config, 2, 64)


# --- attention weights ------------------------------------------------------------------------------


def _layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps) * weight
    return y if bias is None else y + bias


def _rotate(x, base=10000.0):
    """Rotary positions from scratch, as complex numbers: x (T, H, D), channel pairs (2i, 2i+1)."""
    T, _, D = x.shape
    freqs = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), freqs)  # (T, D/2)
    pairs = torch.view_as_complex(x.double().reshape(T, -1, D // 2, 2).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)[:, None, :]).reshape(T, -1, D)


def reference_attention(model: GPT, ids: list[int]) -> torch.Tensor:
    """Every layer's attention weights, computed from the state dict alone: (L, H, T, T)."""
    c, sd = model.config, {k: v.double() for k, v in model.state_dict().items()}
    T, H, D = len(ids), c.n_head, c.n_embd // c.n_head
    x = sd["token_embedding.weight"][ids]
    if c.position == "learned":
        x = x + sd["position_embedding.weight"][:T]
    maps = []
    for i in range(c.n_layer):
        p = f"blocks.{i}."
        h = _layer_norm(x, sd[p + "attn_norm.weight"], sd.get(p + "attn_norm.bias"))
        qkv = h @ sd[p + "attn.qkv.weight"].T + sd.get(p + "attn.qkv.bias", 0)
        q, k, v = (t.reshape(T, H, D) for t in qkv.split(c.n_embd, dim=-1))
        if c.position == "rope":
            q, k = _rotate(q), _rotate(k)
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        att = torch.softmax(scores, dim=-1)  # (H, T, T)
        maps.append(att)
        y = torch.einsum("hts,shd->thd", att, v).reshape(T, c.n_embd)
        x = x + y @ sd[p + "attn.proj.weight"].T + sd.get(p + "attn.proj.bias", 0)
        h = _layer_norm(x, sd[p + "mlp_norm.weight"], sd.get(p + "mlp_norm.bias"))
        h = F.gelu(h @ sd[p + "mlp.fc.weight"].T + sd.get(p + "mlp.fc.bias", 0))
        x = x + h @ sd[p + "mlp.proj.weight"].T + sd.get(p + "mlp.proj.bias", 0)
    return torch.stack(maps)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_attention_weights_are_causal_rows_of_one_equal_to_a_reference(position):
    torch.manual_seed(0)
    model = GPT(replace(GPT2_TINY, position=position))
    with torch.no_grad():  # larger weights than the init's, so the maps are far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    ids = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7]
    weights = attention_weights(model, torch.tensor([ids]))
    assert weights.shape == (2, 2, len(ids), len(ids))
    assert torch.all(weights.triu(1) == 0)  # no query sees a later key
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, len(ids)))
    reference = reference_attention(model, ids).float()
    torch.testing.assert_close(weights, reference, atol=1e-4, rtol=1e-4)
    assert weights[:, :, -1].max() > 2 / len(ids)  # twice the uniform weight: the comparison means something
    logits, _ = model(torch.tensor([ids]))  # recording changes nothing the model computes
    with torch.no_grad():
        again = model(torch.tensor([ids]))[0]
    torch.testing.assert_close(logits, again)


# --- the command ------------------------------------------------------------------------------------


def test_inspect_a_checkpoint_and_a_preset_as_json(run_cli, tiny_run):
    result = run_cli("inspect", "--ckpt", tiny_run.out, "--json", "--batch-size", "2")
    assert result.code == 0, result.output
    s = json.loads(result.stdout)
    assert s["kind"] == "checkpoint" and s["step"] == 30 and s["val_loss"] is not None
    assert s["parameters"]["total"] == sum(s["parameters"]["by_component"].values())
    assert s["memory"]["batch_size"] == 2 and s["memory"]["peak_bytes"] > s["memory"]["weights_bytes"] > 0

    result = run_cli("inspect", "--preset", "gpt2-124m", "--vocab-size", "50257", "--no-memory", "--json")
    assert result.code == 0, result.output
    s = json.loads(result.stdout)
    assert s["memory"] is None and s["config"]["vocab_size"] == 50257
    assert s["parameters"]["total"] == 124_373_760  # GPT-2 small with the vocabulary padded to 50304, no biases

    table = run_cli("inspect", "--preset", "shakespeare-char-cpu", "--vocab-size", "65", "--no-memory")
    assert table.code == 0 and "attention" in table.stdout and "KV cache" in table.stdout


def test_compare_two_models(run_cli, tiny_run, tmp_path):
    wide = tmp_path / "wide.toml"
    wide.write_text("[model]\nn_layer = 2\nn_head = 2\nn_embd = 64\nblock_size = 16\nvocab_size = 65\n", encoding="utf-8")
    result = run_cli("inspect", "--compare", str(tiny_run.out), str(wide), "--no-memory", "--json")
    assert result.code == 0, result.output
    r = json.loads(result.stdout)
    assert r["config_differences"]["n_embd"] == [32, 64]
    rows = {row["name"]: row for row in r["rows"]}
    assert rows["parameters"]["b"] > rows["parameters"]["a"] and rows["val loss"]["b"] is None
    assert run_cli("inspect", "--compare", str(tiny_run.out), str(wide), "--no-memory").code == 0
    alone = json.loads(run_cli("inspect", "--config", str(wide), "--no-memory", "--json").stdout)
    assert alone["config"]["n_embd"] == 64 and alone["vocab_source"] == str(wide) and alone["parameters"]["total"] == rows["parameters"]["b"]
    both = run_cli("inspect", "--ckpt", str(tiny_run.out), "--preset", "gpt2-124m")
    assert both.code == 2 and "not both" in both.stderr
    nothing = run_cli("inspect")
    assert nothing.code == 2 and "--preset NAME" in nothing.stderr
    bad = run_cli("inspect", "--compare", str(tiny_run.out), "no-such-thing")
    assert bad.code == 2 and "neither a checkpoint" in bad.stderr


def test_attention_pngs_and_the_terminal_view(run_cli, tiny_run, tmp_path):
    out = tmp_path / "maps"
    result = run_cli("inspect", "--ckpt", tiny_run.ckpt, "--attention", "the king", "--out", out, "--layer", "1", "--head", "1", "--json")
    assert result.code == 0, result.output
    r = json.loads(result.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["layer_00.png", "layer_01.png"]
    for png in out.iterdir():
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"  # a PNG's signature and first chunk
        from matplotlib.image import imread

        assert imread(png).ndim == 3  # decodes as an image
    weights = torch.tensor(r["weights"])
    assert weights.shape == (8, 8) and torch.allclose(weights.sum(-1), torch.ones(8), atol=1e-4)
    view = run_cli("inspect", "--ckpt", tiny_run.ckpt, "--attention", "the king", "--out", out)
    assert view.code == 0 and "layer 0, head 0" in view.stdout
    wrong = run_cli("inspect", "--ckpt", tiny_run.ckpt, "--attention", "the king", "--out", out, "--head", "5")
    assert wrong.code == 2 and "2 heads" in wrong.stderr
    untrained = run_cli("inspect", "--preset", "shakespeare-char-cpu", "--attention", "hi")
    assert untrained.code == 2 and "--ckpt" in untrained.stderr


def test_next_token_table(run_cli, tiny_run):
    from gptkit.inference import load_model
    from gptkit.probes import next_token_table

    loaded = load_model(tiny_run.ckpt, "cpu", "float32")
    rows = next_token_table(loaded, "the ki", k=3)
    assert [r["token"] for r in rows] == list("the ki") and rows[-1]["next"] is None
    ids = [r["id"] for r in rows]
    with torch.no_grad():
        probs = torch.softmax(loaded.model.unpadded(loaded.model(torch.tensor([ids]))[0][0]), -1)
    for t, row in enumerate(rows):
        ps = [g["p"] for g in row["top"]]
        assert ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-6
        assert ps[0] == pytest.approx(float(probs[t].max()), rel=1e-5)
        if row["next"] is not None:
            assert row["next"]["p"] == pytest.approx(float(probs[t, ids[t + 1]]), rel=1e-5)
    result = run_cli("inspect", "--ckpt", tiny_run.ckpt, "--next-token", "the ki", "--top", "2")
    assert result.code == 0 and "next-token probabilities" in result.stdout
    as_json = json.loads(run_cli("inspect", "--ckpt", tiny_run.ckpt, "--next-token", "the ki", "--json").stdout)
    assert len(as_json["positions"]) == 6 and len(as_json["positions"][0]["top"]) == 5


def test_a_preset_takes_its_vocabulary_from_the_data(tiny_data):
    subject = resolve_subject(preset="shakespeare-char-cpu", data=tiny_data)
    assert subject.config.vocab_size == json.loads((tiny_data / "meta.json").read_text())["vocab_size"]
    summary = summarize(subject, memory=False)
    assert compare(summary, summary)["config_differences"] == {}
