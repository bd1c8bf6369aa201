"""Hugging Face Llama <-> gptkit's modern block: the one place that knows the two layouts.

gptkit's rotary + RMSNorm + SwiGLU model without biases (config position = rope, norm = rmsnorm,
mlp = swiglu, bias = false) is what transformers calls LlamaForCausalLM. The tensors map one to one,
with three layout changes:

    HF (model.)                                  gptkit
    embed_tokens                                 token_embedding
    layers.{i}.input_layernorm                   blocks.{i}.attn_norm
    layers.{i}.self_attn.q_proj, k_proj, v_proj  blocks.{i}.attn.qkv      (stacked: q rows, k rows, v rows)
    layers.{i}.self_attn.o_proj                  blocks.{i}.attn.proj
    layers.{i}.post_attention_layernorm          blocks.{i}.mlp_norm
    layers.{i}.mlp.gate_proj, up_proj            blocks.{i}.mlp.fc        (stacked: gate rows, then up rows)
    layers.{i}.mlp.down_proj                     blocks.{i}.mlp.proj
    norm                                         final_norm
    lm_head (absent when tied)                   lm_head

  * Rotary pairing. gptkit turns channel pairs (2i, 2i+1) of each head (model.Rotary); transformers'
    Llama turns (i, i + D/2) ("rotate_half"). Same angles, other pairing: the rows of W_q and W_k are
    permuted within each head (pairs_to_halves on the way out, halves_to_pairs on the way in). q.k
    does not change because q and k move together; v and the output projection keep their order.

Llama checkpoints can use features gptkit's model does not compute; `llama_model_config` refuses
each by name (grouped-query attention, another head_dim, rope scaling, another rope_theta or norm eps,
attention or MLP biases, an MLP width other than gptkit's SwiGLU width) rather than load a model that
would compute something else.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from gptkit.config import ModelConfig
from gptkit.errors import GptkitError

ROPE_THETA = 10000.0  # model.Rotary's base
NORM_EPS = 1e-5  # model.RMSNorm's eps


def pairs_to_halves(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of W_q or W_k (C, C_in), per head [c0, c1, c2, c3, ...] -> [c0, c2, ..., c1, c3, ...]."""
    C, C_in = weight.shape
    D = C // n_head
    # (H, D/2, 2, C_in): pair index, then even/odd member; swap to (H, 2, D/2, C_in).
    return weight.view(n_head, D // 2, 2, C_in).transpose(1, 2).reshape(C, C_in)


def halves_to_pairs(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """The inverse of pairs_to_halves: per head [first half..., second half...] -> interleaved pairs."""
    C, C_in = weight.shape
    D = C // n_head
    return weight.view(n_head, 2, D // 2, C_in).transpose(1, 2).reshape(C, C_in)


def swiglu_hidden(n_embd: int) -> int:
    """The hidden width of gptkit's SwiGLU (model.SwiGLU): 8/3 C rounded up to a multiple of 32."""
    return 32 * math.ceil(8 * n_embd / 3 / 32)


def _rope(hf: dict) -> tuple[float, str | None]:
    """(rope theta, scaling type or None) from transformers 4 (rope_theta, rope_scaling) or 5 (rope_parameters)."""
    params = hf.get("rope_parameters") or {}
    theta = float(params.get("rope_theta", hf.get("rope_theta", ROPE_THETA)))
    scaling = hf.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type")
    return theta, None if kind in (None, "default") else str(kind)


def llama_model_config(hf: dict, source: Path, tied: bool) -> ModelConfig:
    """A Llama config.json (as a dict) -> ModelConfig; every feature gptkit lacks refused by name."""
    C, H = int(hf.get("hidden_size", 4096)), int(hf.get("num_attention_heads", 32))
    unsupported = []
    if hf.get("hidden_act", "silu") != "silu":
        unsupported.append(f"hidden_act {hf['hidden_act']!r} (gptkit's SwiGLU gates with silu)")
    kv_heads = int(hf.get("num_key_value_heads") or H)  # fewer than H: grouped-/multi-query attention
    if H % kv_heads:
        unsupported.append(f"num_key_value_heads {kv_heads} (it must divide num_attention_heads {H})")
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) * H != C:
        unsupported.append(f"head_dim {head_dim} (gptkit's is hidden_size / num_attention_heads = {C // H})")
    theta, scaling = _rope(hf)
    if scaling is not None:
        unsupported.append(f"rope scaling ({scaling})")
    if theta != ROPE_THETA:
        unsupported.append(f"rope_theta {theta:g} (gptkit's rotary base is {ROPE_THETA:g})")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        unsupported.append(f"partial_rotary_factor {hf['partial_rotary_factor']} (gptkit rotates every channel)")
    if abs(float(hf.get("rms_norm_eps", 1e-6)) - NORM_EPS) > 1e-12:
        unsupported.append(f"rms_norm_eps {hf.get('rms_norm_eps', 1e-6)} (gptkit's RMSNorm eps is {NORM_EPS})")
    for field, what in (("attention_bias", "attention biases"), ("mlp_bias", "MLP biases")):
        if hf.get(field, False):
            unsupported.append(f"{what} ({field} = true)")
    hidden = hf.get("intermediate_size", 11008)
    if hidden != swiglu_hidden(C):
        unsupported.append(f"intermediate_size {hidden} (gptkit's SwiGLU for hidden_size {C} is {swiglu_hidden(C)} wide)")
    if unsupported:
        raise GptkitError(
            f"{source}: this Llama model has {', '.join(unsupported)}, which gptkit's model does not compute",
            hint="gptkit imports Llama models with plain rotary (theta 10000), "
            "RMSNorm eps 1e-5, no biases and its own SwiGLU width (what `gptkit export --format hf` writes)",
        )
    return ModelConfig(
        vocab_size=int(hf.get("vocab_size", 32000)), vocab_multiple=1, block_size=int(hf.get("max_position_embeddings", 2048)),
        n_layer=int(hf.get("num_hidden_layers", 32)), n_head=H, n_embd=C, dropout=0.0, bias=False,
        n_kv_head=0 if kv_heads == H else kv_heads, position="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=tied,
    )


def llama_state_dict(weights: dict[str, torch.Tensor], config: ModelConfig, source: Path) -> dict[str, torch.Tensor]:
    """transformers' Llama tensors -> gptkit's state dict (module docstring). Every tensor must be used."""
    H = config.n_head
    left = {k.removeprefix("model."): v for k, v in weights.items() if not k.endswith("rotary_emb.inv_freq")}

    def take(name: str) -> torch.Tensor:
        if name not in left:
            raise GptkitError(f"{source}: the Llama weights lack {name!r}")
        return left.pop(name)

    state = {"token_embedding.weight": take("embed_tokens.weight")}
    for i in range(config.n_layer):
        theirs, ours = f"layers.{i}.", f"blocks.{i}."
        q = halves_to_pairs(take(theirs + "self_attn.q_proj.weight"), H)
        k = halves_to_pairs(take(theirs + "self_attn.k_proj.weight"), config.kv_heads)
        state[ours + "attn.qkv.weight"] = torch.cat([q, k, take(theirs + "self_attn.v_proj.weight")])
        state[ours + "attn.proj.weight"] = take(theirs + "self_attn.o_proj.weight")
        # model.SwiGLU: silu(first half of fc) * second half
        state[ours + "mlp.fc.weight"] = torch.cat([take(theirs + "mlp.gate_proj.weight"), take(theirs + "mlp.up_proj.weight")])
        state[ours + "mlp.proj.weight"] = take(theirs + "mlp.down_proj.weight")
        state[ours + "attn_norm.weight"] = take(theirs + "input_layernorm.weight")
        state[ours + "mlp_norm.weight"] = take(theirs + "post_attention_layernorm.weight")
    state["final_norm.weight"] = take("norm.weight")
    lm_head = left.pop("lm_head.weight", None)
    if not config.tie_embeddings:
        if lm_head is None:
            raise GptkitError(f"{source}: config.json says the output layer is untied, but there is no lm_head.weight")
        state["lm_head.weight"] = lm_head
    if left:
        names = ", ".join(sorted(left)[:3])
        raise GptkitError(f"{source}: unexpected tensors for a Llama model gptkit computes: {names}"
                          + (f" (and {len(left) - 3} more)" if len(left) > 3 else ""))
    return {name: tensor.float().contiguous() for name, tensor in state.items()}
