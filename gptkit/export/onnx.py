"""Export to ONNX, for onnxruntime: two graphs, with dynamic batch and sequence axes.

    MODEL.onnx      input_ids (B, T)  ->  logits (B, T, vocab_size)
                    the whole forward pass: scoring text, or decoding by re-reading the prefix
    MODEL.kv.onnx   input_ids (B, T), past_keys, past_values (L, B, H_kv, P, D)
                      ->  logits (B, T, vocab_size), present_keys, present_values (L, B, H_kv, P + T, D)
                    the same model with its key/value cache as tensors in and out: the prompt goes in
                    with P = 0, then each new token costs one position (T = 1) instead of P + 1;
                    H_kv = the key/value heads (n_head, or fewer under grouped-query attention)

Both are traced by torch.onnx.export (the dynamo exporter, torch >= 2.9) from the gptkit model itself,
so the graph is the model's own code. The cache graph needs one thing gptkit's KVCache cannot give: the
cache as tensors in and out of the graph (gptkit's is preallocated and written in place, with host-side
lengths). `CachedForward` therefore runs the model's own layers (norms, projections, rotary, MLP) and its
mask function (kv_cache.attention_mask) with the concatenation written for tensors (see its docstring).
Vocabulary padding is cut off inside the graph: the logits have exactly vocab_size columns.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptkit.errors import GptkitError
from gptkit.export.source import ExportSource
from gptkit.kv_cache import attention_mask


class Logits(nn.Module):
    """model(idx) -> the logits of real tokens only (the export of a plain forward pass)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(input_ids)
        return self.model.unpadded(logits)


class CachedForward(nn.Module):
    """One forward step over new tokens, given the keys and values of the P positions before them.

    The layers are the model's own; what differs from GPT.forward is only the bookkeeping:
      * the cache is two stacked tensors (L, B, H_kv, P, D), concatenated with the new positions along P;
      * the mask is built from the shapes: new token i (at position P + i) sees keys 0..P + i. That covers
        the prompt (P = 0: the usual causal mask) and decoding (T = 1: every key) in one graph, where
        GPT.forward switches between the two with a Python `if`.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, past_keys, past_values):
        model = self.model
        B, T = input_ids.shape
        P = past_keys.shape[3]
        H, H_kv = model.config.n_head, model.config.kv_heads
        C = model.config.n_embd
        D = C // H
        x = model.token_embedding(input_ids)  # (B, T, C)
        if model.position_embedding is not None:
            x = model.position_embedding.add_to(x, P)  # learned positions P..P+T-1
        # The model's own mask function, from positions: query i at P + i sees keys 0..P + i.
        seen = attention_mask(P + torch.arange(T, device=input_ids.device)[None, :], torch.arange(P + T, device=input_ids.device)[None, :])
        keys, values = [], []
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            q, k, v = attn.qkv(block.attn_norm(x)).split(attn.qkv_split, dim=-1)  # q: H heads, k and v: H_kv
            q, k, v = q.view(B, T, H, D), k.view(B, T, H_kv, D), v.view(B, T, H_kv, D)
            if attn.rotary is not None:  # turned by their positions P..P+T-1
                q, k = attn.rotary(q, P), attn.rotary(k, P)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or H_kv, T, D)
            k = torch.cat([past_keys[layer], k], dim=2)  # (B, H_kv, P + T, D)
            v = torch.cat([past_values[layer], v], dim=2)
            keys.append(k)
            values.append(v)
            if H_kv != H:  # grouped-query: each key/value head repeated for its group of query heads
                k, v = k.repeat_interleave(H // H_kv, dim=1), v.repeat_interleave(H // H_kv, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=seen)  # (1, 1, T, P + T) broadcast over B, H
            x = x + attn.proj(y.transpose(1, 2).reshape(B, T, C))
            x = x + block.mlp(block.mlp_norm(x))
        x = model.final_norm(x)
        head = model.token_embedding.weight if model.lm_head is None else model.lm_head.weight
        logits = F.linear(x, head)
        return model.unpadded(logits), torch.stack(keys), torch.stack(values)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter is built on it)
    except ImportError:
        raise GptkitError("ONNX export needs the onnx and onnxscript packages", hint="pip install 'gptkit[export]'") from None


def kv_path(out: Path) -> Path:
    """model.onnx -> model.kv.onnx: where the graph with cache inputs goes."""
    return out.with_name(out.stem + ".kv" + (out.suffix or ".onnx"))


def _export(module: nn.Module, args: tuple, names: dict, dynamic: dict, path: Path) -> None:
    """torch.onnx.export into one self-contained file (the weights inside: these models are small)."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            module, args, dynamo=True, external_data=False, dynamic_shapes=dynamic,
            input_names=names["inputs"], output_names=names["outputs"], verbose=False,
        )
    if program is None:  # pragma: no cover - only the legacy exporter returns None
        raise GptkitError("torch.onnx.export returned no program (a torch older than 2.9?)")
    partial = path.with_name(path.name + ".partial")
    program.save(str(partial), external_data=False)
    partial.replace(path)  # written beside it, then renamed: never half a file


def export_onnx(source: ExportSource, out: Path, kv_cache: bool = True) -> Path:
    """Write `out` (and, with kv_cache, kv_path(out)); returns `out`."""
    from torch.export import Dim

    _require_onnx()
    if out.is_dir():
        raise GptkitError(f"{out} is a folder", hint="--format onnx writes a file, e.g. model.onnx")
    model = source.build_model()
    c = model.config
    # Example sizes of at least 2 on every dynamic axis: torch.export would fix an axis of size 0 or 1.
    batch, seq = Dim("batch", max=1024), Dim("sequence", max=c.block_size)
    ids = torch.zeros(2, 3, dtype=torch.long)
    with torch.no_grad():
        _export(Logits(model), (ids,), {"inputs": ["input_ids"], "outputs": ["logits"]},
                {"input_ids": {0: batch, 1: seq}}, out)
        if kv_cache:
            past = Dim("past", max=c.block_size - 1)
            D = c.n_embd // c.n_head
            cache = torch.zeros(c.n_layer, 2, c.kv_heads, 4, D)  # the cache holds the key/value heads only
            cache_axes = {1: batch, 3: past}
            _export(
                CachedForward(model), (ids, cache, cache.clone()),
                {"inputs": ["input_ids", "past_keys", "past_values"], "outputs": ["logits", "present_keys", "present_values"]},
                {"input_ids": {0: batch, 1: seq}, "past_keys": cache_axes, "past_values": cache_axes},
                kv_path(out),
            )
    return out


def onnx_greedy(graph, prompt_ids: list[int], max_new_tokens: int, kv_cache: bool = True) -> list[int]:
    """Greedy decoding through onnxruntime: the loop a user of the exported graphs writes.

    With the cache graph (kv_path of the plain one), the prompt goes in once with an empty cache
    (P = 0), then each step feeds one token and the cache the previous step returned. Without it, every
    step re-reads the whole sequence. Stays within the model's context (no sliding window).
    `graph`: a path, or an onnxruntime.InferenceSession already open."""
    import numpy as np
    import onnxruntime as ort

    session = graph if isinstance(graph, ort.InferenceSession) else ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    tokens = list(prompt_ids)
    if not kv_cache:
        for _ in range(max_new_tokens):
            logits = session.run(["logits"], {"input_ids": np.array([tokens], dtype=np.int64)})[0]
            tokens.append(int(logits[0, -1].argmax()))
        return tokens[len(prompt_ids):]
    L, _, H, _, D = session.get_inputs()[1].shape  # (L, batch, H, past, D): batch and past are symbolic
    keys = values = np.zeros((L, 1, H, 0, D), dtype=np.float32)
    feed = np.array([tokens], dtype=np.int64)
    for _ in range(max_new_tokens):
        logits, keys, values = session.run(None, {"input_ids": feed, "past_keys": keys, "past_values": values})
        tokens.append(int(logits[0, -1].argmax()))
        feed = np.array([[tokens[-1]]], dtype=np.int64)
    return tokens[len(prompt_ids):]
