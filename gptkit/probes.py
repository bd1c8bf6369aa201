"""Looking inside a trained model on one text: where each head attends, what it expects next.

    probe = attention_for_text(loaded, "ROMEO: But soft")   # probe.weights: (n_layer, n_head, T, T)
    rows = next_token_table(loaded, "ROMEO: But soft", k=5)  # per position: the k likeliest next tokens

Attention weights without touching the model: `F.scaled_dot_product_attention` computes
softmax(q k^T / sqrt(D) + mask) v in one fused kernel and never returns the softmax. AttentionRecorder,
a TorchFunctionMode, sees every call of it with the very q, k, mask and scale the model passes (after
rotary positions, QK-norm or whatever the attention does first) and computes the softmax once more
beside it, in float32. Each call is one layer, in order; the model's output is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from gptkit.errors import GptkitError


def attention_probabilities(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> torch.Tensor:
    """The softmax that scaled_dot_product_attention(query, key, value, ...) weighs the values with:
    query (B, H, Tq, D), key (B, H_kv, Tk, D) -> (B, H, Tq, Tk), each row summing to 1. Takes the same
    arguments (dropout is left out: the weights before it)."""
    q, k = query.float(), key.float()
    if k.size(-3) != q.size(-3):  # grouped-query attention: each key/value head serves H / H_kv query heads
        k = k.repeat_interleave(q.size(-3) // k.size(-3), dim=-3)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if is_causal:  # query i sees keys 0..i (torch's convention: aligned at the top left)
        allowed = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.softmax(scores, dim=-1)


class AttentionRecorder(TorchFunctionMode):
    """While active, keeps attention_probabilities of every scaled_dot_product_attention call, in order."""

    def __init__(self):
        super().__init__()
        self.maps: list[torch.Tensor] = []  # one (B, H, Tq, Tk) per call: per layer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.maps.append(attention_probabilities(*args, **kwargs).detach())
        return func(*args, **kwargs)


@torch.no_grad()
def attention_weights(model, idx: torch.Tensor) -> torch.Tensor:
    """idx (1, T) token ids -> (n_layer, n_head, T, T): the attention weights of every layer and head."""
    model.eval()
    recorder = AttentionRecorder()
    with recorder:
        model(idx)
    if len(recorder.maps) != model.config.n_layer:
        raise RuntimeError(f"expected one attention call per layer ({model.config.n_layer}), saw {len(recorder.maps)}")
    return torch.stack([m[0] for m in recorder.maps]).cpu()


def token_ids(tokenizer, text: str, block_size: int) -> list[int]:
    """The text's ids, refused when empty or longer than the model's context."""
    if not text:
        raise GptkitError("the text is empty", hint="pass the text to look at, e.g. --attention 'ROMEO: But soft'")
    ids = tokenizer.encode(text)
    if not ids:
        raise GptkitError("the text encodes to no tokens")
    if len(ids) > block_size:
        raise GptkitError(
            f"the text is {len(ids):,} tokens long, longer than the model's context of {block_size:,}",
            hint="shorten it: the model sees at most block_size tokens",
        )
    return ids


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Each id decoded on its own, as printable text (a byte-level token may be part of a character)."""
    return [tokenizer.decode([i]) for i in ids]


@dataclass
class AttentionProbe:
    tokens: list[str]  # (T,) each token as text
    ids: list[int]
    weights: torch.Tensor  # (n_layer, n_head, T, T): row t = how query position t spreads over keys 0..t


def attention_for_text(loaded, text: str) -> AttentionProbe:
    """The attention weights of a loaded checkpoint (inference.load_model) on `text`."""
    tokenizer = loaded.tokenizer()
    ids = token_ids(tokenizer, text, loaded.model.config.block_size)
    idx = torch.tensor([ids], device=loaded.runtime.device)
    with loaded.runtime.autocast:
        weights = attention_weights(loaded.model, idx)
    return AttentionProbe(token_strings(tokenizer, ids), ids, weights)


@torch.no_grad()
def next_token_table(loaded, text: str, k: int = 5) -> list[dict]:
    """For each position of `text`: its token, the k likeliest next tokens with their probabilities, and
    the probability the model gave to the token that actually comes next (None at the last position)."""
    model, tokenizer = loaded.model.eval(), loaded.tokenizer()
    ids = token_ids(tokenizer, text, model.config.block_size)
    with loaded.runtime.autocast:
        logits, _ = model(torch.tensor([ids], device=loaded.runtime.device))
    probs = torch.softmax(model.unpadded(logits[0]).float(), dim=-1).cpu()  # (T, vocab_size)
    top = torch.topk(probs, min(k, probs.size(-1)), dim=-1)
    rows = []
    for t, token_id in enumerate(ids):
        actual = ids[t + 1] if t + 1 < len(ids) else None
        rows.append({
            "position": t, "token": tokenizer.decode([token_id]), "id": token_id,
            "top": [{"token": tokenizer.decode([int(i)]), "id": int(i), "p": float(p)}
                    for p, i in zip(top.values[t], top.indices[t])],
            "next": None if actual is None else {"token": tokenizer.decode([actual]), "id": actual, "p": float(probs[t, actual])},
        })
    return rows
