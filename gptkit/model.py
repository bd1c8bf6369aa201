"""The GPT model, top to bottom.

This is the GPT-2 architecture (Radford et al., 2019), written to be read in one sitting:

    token ids (B, T)
      -> token embedding + learned position embedding      (B, T, C)
      -> n_layer x Block:                                  (B, T, C)
             x = x + Attention(LayerNorm(x))   # "pre-norm": normalise the input of each sublayer
             x = x + MLP(LayerNorm(x))
      -> final LayerNorm
      -> logits = x @ token_embedding.T                     (B, T, V)   # tied weights; V = padded vocab

Shapes use B = batch, T = time (sequence length), C = n_embd (channels), H = n_head, D = C // H.

Four details that matter in practice:
  * Attention goes through `F.scaled_dot_product_attention`, which picks the fastest kernel the
    device has (FlashAttention on recent GPUs, a fused kernel on CPU).
  * The output layer reuses the token embedding matrix ("weight tying", Press & Wolf 2017): fewer
    parameters and a slightly better model at small scale.
  * GPT-2 initialisation: every weight ~ N(0, 0.02), and the projections that write into the
    residual stream are scaled by 1/sqrt(2 * n_layer) so the stream's variance does not grow with
    depth (each block adds two such writes).
  * Vocabulary padding: `vocab_multiple` rounds the embedding's rows up (GPT-2: 50257 -> 50304, a
    multiple of 64, as nanoGPT does) so the output matmul has a width GPU tensor cores like. The extra
    ids are never targets, so training pushes their logits down; sampling drops them (`GPT.unpadded`).

Each component can be swapped from the config, so a student can change one thing and measure it
(the GPT-2 choice is the default; presets pick others; docs/components.md has the table with papers).
Each kind has one table, COMPONENTS[kind] (name -> class, built as cls(config)); a new choice is one
class and one table row, plus its name in config.COMPONENT_CHOICES. The norms, positions and MLPs live
in components.py (importable from here too); attention and the blocks are below:

    position        learned | rope | alibi | none    a table at the input | rotated q, k (RoFormer) |
                                                     a distance bias on the scores (ALiBi) | nothing (NoPE)
    norm            layernorm | rmsnorm              (Zhang & Sennrich 2019: scale only)
    mlp             gelu | relu2 | swiglu            (So et al., Primer 2021; Shazeer, GLU variants 2020)
    block           sequential | parallel            x + attn(norm x) + mlp(norm x) (GPT-J, PaLM)
    n_kv_head       0 (= n_head) | 1 < k < n_head | 1    multi-head | grouped-query (GQA) | multi-query
    qk_norm         False | True                     queries and keys RMS-normalised per head
    attention_window  0 (off) | N                    each position sees its last N positions only
    bias, dropout, tie_embeddings                    biases on/off, dropout rate, a separate output matrix

The loss skips targets equal to IGNORE_INDEX (-100: prompt tokens, padding) and can be summed
(`reduction="sum"`) so a training loop weighs every valid token of an optimizer step alike.

`generate.py` and `engine.py` drive this model with a KV cache (kv_cache.py): `forward(idx, cache=...)`
writes the keys and values of the new positions into the cache, in place, instead of recomputing the
whole prefix; each row of the batch has its own positions (B, T), which every position scheme takes,
and the window and ALiBi build their masks from (kv_cache.attention_mask). The cache holds the n_kv_head
key/value heads only.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from gptkit.components import (  # noqa: F401  (the parts: importable from here, as before they moved)
    COMPONENT_PARTS, MLP, ALiBi, GeluMLP, LayerNorm, LearnedPosition, NoPosition, Relu2MLP, RMSNorm, Rotary, SwiGLU,
    as_positions, dropout_layer,
)
from gptkit.config import ModelConfig  # the config lives in a torch-free module (fast --help)
from gptkit.kv_cache import KVCache, attention_mask  # noqa: F401  (KVCache: part of this module's API)


# A target id that the loss skips (prompt tokens, padding): PyTorch's cross_entropy convention.
IGNORE_INDEX = -100


class _SkipInit(TorchFunctionMode):
    """Turns torch's in-place initialisers (normal_, uniform_, ...) into no-ops, for shapes_only()."""

    INITIALISERS = {"normal_", "uniform_", "kaiming_uniform_", "trunc_normal_", "zero_", "zeros_", "ones_", "fill_"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self.INITIALISERS:
            return args[0] if args else kwargs.get("tensor")
        return func(*args, **kwargs)


@contextmanager
def shapes_only():
    """Build modules as shapes without memory: on the meta device, with the random init skipped (numbers
    drawn for tensors that hold none are pointless, and on meta tensors torch would route them through
    its compiler stack, seconds to import). Loaders use it to check and receive a file's weights."""
    with torch.device("meta"), _SkipInit():
        yield


# --- attention and the blocks (the norms, positions and MLPs they are built from: components.py) ------


def build(kind: str, config: ModelConfig, *args) -> nn.Module:
    """The component of `kind` that `config` names, e.g. build("norm", config) -> LayerNorm(config);
    `args` go to its constructor after the config (a block's layer index and the position module its
    attention uses)."""
    return COMPONENTS[kind][getattr(config, kind)](config, *args)


class CausalSelfAttention(nn.Module):
    """Causal self-attention: position t looks only at positions <= t. (B, T, C) -> (B, T, C).

    H query heads share H_kv key/value heads (config.n_kv_head), each key/value head serving a group of
    H / H_kv query heads (query head h reads key/value head h // (H / H_kv)):

        H_kv = H        multi-head attention (Vaswani et al. 2017; GPT-2), the default
        1 < H_kv < H    grouped-query attention (Ainslie et al., GQA 2023; Llama 2 70B, Mistral)
        H_kv = 1        multi-query attention (Shazeer 2019)

    Fewer key/value heads: a smaller qkv layer, and a KV cache H / H_kv times smaller (what makes long
    generation memory-bound). One Linear computes q, k and v: its rows are every head's q (H*D), then
    k (H_kv*D), then v (H_kv*D) -- GPT-2's 3C rows when H_kv = H, so its weights keep their names.

    Each option changes one thing, from the config:
      qk_norm           queries and keys RMS-normalised per head (D channels, a learned gain each) before
                        the dot product (Henry et al. 2020; Dehghani et al. 2023): the scores cannot grow
                        without bound, which keeps training at high learning rates stable
      attention_window  a sliding window (Beltagy et al., Longformer 2020; Mistral 2023): query t sees
                        keys t - window + 1 .. t only; deeper layers still reach further back
      position          rotary turns q and k by their positions; ALiBi adds its distance bias to the scores
    """

    def __init__(self, config: ModelConfig, layer_index: int = 0, position: nn.Module | None = None):
        super().__init__()
        self.layer_index = layer_index
        self.n_head, self.n_kv_head = config.n_head, config.kv_heads
        head_size = config.n_embd // config.n_head
        self.dropout = config.dropout
        # One matrix computes queries, keys and values together: one big matmul beats three small ones.
        self.qkv_split = (config.n_head * head_size, self.n_kv_head * head_size, self.n_kv_head * head_size)
        self.qkv = nn.Linear(config.n_embd, sum(self.qkv_split), bias=config.bias)
        self.q_norm = nn.RMSNorm(head_size, eps=1e-5) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(head_size, eps=1e-5) if config.qk_norm else None
        self.window = config.attention_window or None
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.residual_projection = True  # scaled at init, see GPT._init_weights
        self.resid_dropout = dropout_layer(config.dropout)
        # The position scheme's part in attention: one module shared by all layers (nothing of it is saved).
        self.rotary = position if isinstance(position, Rotary) else None
        self.alibi = position if isinstance(position, ALiBi) else None

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        H, H_kv, D = self.n_head, self.n_kv_head, C // self.n_head
        qkv = self.qkv(x)  # (B, T, (H + 2 H_kv) * D)
        q, k, v = qkv.split(self.qkv_split, dim=-1)  # (B, T, H*D), 2 x (B, T, H_kv*D)
        q, k, v = q.view(B, T, H, D), k.view(B, T, H_kv, D), v.view(B, T, H_kv, D)  # split into heads
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # each head's D-vector to unit RMS, times a gain
        positions = cache.positions if cache is not None else 0  # int start, or each row's (B, T)
        if self.rotary is not None:  # positions enter here, not at the embedding
            if H_kv == H and self.q_norm is None:  # q and k lie side by side in qkv: one rotation for both
                q, k = self.rotary(qkv.view(B, T, 3, H, D)[:, :, :2], positions).unbind(2)  # (faster on CPU)
            else:
                q, k = self.rotary(q, positions), self.rotary(k, positions)
        # (B, T, H, D) -> (B, H, T, D): each head attends independently.
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        mask, causal = None, True
        if cache is not None:
            # Stored in place (H_kv heads only). A prefill gets its own k, v back (causal, as in training);
            # a decode step gets every cached slot (B, H_kv, S, D) and, for rows at different positions,
            # the mask built from positions by kv_cache.attention_mask.
            k, v = cache.write(self.layer_index, k, v)
            mask, causal = cache.mask, cache.prefill
        if self.window is not None or self.alibi is not None:
            mask = self.position_mask(positions, T, k.size(2), mask, q)
        # softmax(q k^T / sqrt(D) [+ bias]) v in one fused kernel; plain causal training takes the
        # is_causal fast path. enable_gqa: each key/value head serves its group of query heads, unexpanded.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=H_kv != H,
        )  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.proj(y))

    def position_mask(self, positions, T: int, S: int, cache_mask: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
        """The mask of a window and/or ALiBi, from positions: boolean (B|1, 1, T, S), or with ALiBi the
        score bias (B|1, H, T, S) with -inf where a query may not look. Key slot s holds position s
        (kv_cache.py), in training and in the cache alike."""
        q_pos = as_positions(positions, T, q.device)  # (B|1, T)
        k_pos = torch.arange(S, device=q.device)[None, :]  # (1, S)
        mask = attention_mask(q_pos, k_pos, window=self.window)  # causal, and the window
        if cache_mask is not None:
            mask = mask & cache_mask
        if self.alibi is None:
            return mask
        return self.alibi.bias(q_pos, k_pos).masked_fill(~mask, float("-inf")).to(q.dtype)


class Block(nn.Module):
    """One transformer layer: attention mixes information across positions, the MLP within one.
    GPT-2's "sequential" block: the MLP reads what attention wrote. (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ModelConfig, layer_index: int = 0, position: nn.Module | None = None):
        super().__init__()
        self.attn_norm = build("norm", config)
        self.attn = CausalSelfAttention(config, layer_index, position)
        self.mlp_norm = build("norm", config)
        self.mlp = build("mlp", config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cache)  # residual connections keep gradients flowing
        x = x + self.mlp(self.mlp_norm(x))
        return x


class ParallelBlock(nn.Module):
    """GPT-J's and PaLM's block (Wang & Komatsuzaki 2021; Chowdhery et al. 2022): attention and the MLP
    read the same normalised input, side by side, and both write into the residual stream at once:

        h = norm(x);  x = x + Attention(h) + MLP(h)

    One norm per layer instead of two, and the two sublayers no longer wait for each other (PaLM
    fuses their input matmuls: ~15% faster at scale, a small quality cost at small scale). Its one norm
    is `attn_norm`; there is no `mlp_norm`. (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ModelConfig, layer_index: int = 0, position: nn.Module | None = None):
        super().__init__()
        self.attn_norm = build("norm", config)
        self.attn = CausalSelfAttention(config, layer_index, position)
        self.mlp = build("mlp", config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        h = self.attn_norm(x)
        return x + self.attn(h, cache) + self.mlp(h)


# One table per kind of part; the blocks are built per layer: build("block", config, layer_index, position).
COMPONENTS: dict[str, dict[str, type[nn.Module]]] = {**COMPONENT_PARTS, "block": {"sequential": Block, "parallel": ParallelBlock}}


class GPT(nn.Module):
    """The whole model: token ids (B, T) -> logits (B, T, padded_vocab_size), and a loss given targets.

    Built from `config`: the position scheme, the norm, the MLP and the block come from the COMPONENTS
    tables; `tie_embeddings` decides whether the output layer has its own matrix. State-dict names:
    token_embedding, position_embedding (learned positions only), blocks.N.{attn_norm, attn.qkv,
    attn.q_norm and attn.k_norm (qk_norm only), attn.proj, mlp_norm (sequential blocks only), mlp.fc,
    mlp.proj}, final_norm, lm_head (untied only). attn.qkv has (n_head + 2 n_kv_head) x D rows: 3C, as
    in GPT-2, unless grouped-query.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        problems = config.validate()
        if problems:
            raise ValueError("; ".join(problems))
        self.config = config
        # padded_vocab_size rows: the ids from vocab_size up are padding, never produced by the tokenizer.
        self.token_embedding = nn.Embedding(config.padded_vocab_size, config.n_embd)
        # The position scheme enters either once at the input (a learned table) or in every layer's
        # attention (rotary, ALiBi: one module, its tables shared by all layers), or nowhere (none).
        position = build("position", config)
        self.position_embedding = position if position.adds_at_input else None
        in_attention = position if position.acts_in_attention else None
        self.embedding_dropout = dropout_layer(config.dropout)
        self.blocks = nn.ModuleList(build("block", config, i, in_attention) for i in range(config.n_layer))
        self.final_norm = build("norm", config)
        # Tied: the output layer reuses token_embedding.weight, so there is no separate matrix to learn.
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def expected_shapes(config: ModelConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """The state dict's tensor shapes for `config`, without allocating any weight: (the tensors outside
        the blocks, those of one block named without its "blocks.N." prefix). One block is built on the
        meta device, so even an absurd config costs milliseconds; loaders compare a file's header with
        this before they build anything (checkpoint.check_weights_fit)."""
        with shapes_only():
            one_block = GPT(replace(config, n_layer=1))
        outside, block = {}, {}
        for name, tensor in one_block.state_dict().items():
            if name.startswith("blocks.0."):
                block[name.removeprefix("blocks.0.")] = tuple(tensor.shape)
            else:
                outside[name] = tuple(tensor.shape)
        return outside, block

    @classmethod
    def from_state_dict(cls, config: ModelConfig, state_dict: dict[str, torch.Tensor]) -> GPT:
        """A model that uses `state_dict`'s tensors as its weights: built on the meta device (no memory,
        no random init), then given the tensors themselves, so loading costs no more than the file."""
        with shapes_only():
            model = cls(config)
        model.load_state_dict(state_dict, strict=True, assign=True)
        for module in model.modules():  # the tables no checkpoint saves (rotary cos/sin, ALiBi slopes), for real
            if isinstance(module, (Rotary, ALiBi)):
                module.build_tables(config)
        return model

    def _init_weights(self, module: nn.Module) -> None:
        if getattr(module, "weight", None) is not None and module.weight.is_meta:
            return  # built on the meta device (shapes only, or to receive loaded tensors): nothing to draw
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_projection", False):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, include_position_embedding: bool = True) -> int:
        """Parameter count. The token embedding counts once: it is also the output layer. Padded rows
        count too: they are real weights that the output matmul (and so flops_per_token) computes with."""
        n = sum(p.numel() for p in self.parameters())
        if not include_position_embedding and self.position_embedding is not None:
            n -= self.position_embedding.weight.numel()
        return n

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) -> the final norm's output (B, T, C): everything but the output layer. Generation
        calls this and output_logits separately, to compute the logits of the last positions only."""
        B, T = idx.shape
        if cache is None and T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
        if cache is not None:  # each row continues at its own length (see kv_cache.py)
            cache.begin(B, T, self.config.block_size, idx.device)
        x = self.token_embedding(idx)  # (B, T, C)
        if self.position_embedding is not None:
            x = self.position_embedding.add_to(x, cache.positions if cache is not None else 0)  # + (T, C) or (B, T, C)
        x = self.embedding_dropout(x)
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.end(T)
        return self.final_norm(x)

    def output_logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., C) -> logits (..., padded_vocab_size)."""
        if self.lm_head is None:
            return F.linear(x, self.token_embedding.weight)  # tied: (..., C) @ (C, V)
        return self.lm_head(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        reduction: str = "mean",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) token ids. Returns logits (B, T, padded_vocab_size) and, given targets (B, T), the
        cross-entropy loss of predicting targets[:, t] from idx[:, :t+1].

        Targets equal to IGNORE_INDEX (-100) are masked: they add nothing to the loss. reduction="mean"
        (the default) averages over the valid targets of this batch (NaN if there are none);
        reduction="sum" returns their sum, so a training loop can divide by the number of valid
        targets of a whole optimizer step: (targets != IGNORE_INDEX).sum() over its micro-batches.

        The loss is over all padded logits, as in nanoGPT: the padded ids are never targets, so training
        drives their probability towards zero without a mask on the hot path."""
        B, T = idx.shape
        logits = self.output_logits(self.hidden_states(idx, cache))  # (B, T, padded_vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(B * T, -1).float(), targets.reshape(B * T), ignore_index=IGNORE_INDEX, reduction=reduction
            )  # float32 softmax whatever the autocast dtype
        return logits, loss

    def unpadded(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (..., padded_vocab_size) -> (..., vocab_size): the scores of real tokens only. Whatever
        turns logits into tokens or probabilities (sampling, top-k) goes through this."""
        return logits[..., : self.config.vocab_size]

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 per parameter (forward 2, backward 4) plus attention's scores.

        From the PaLM paper's appendix B; used to report model FLOPs utilisation (MFU). The scores term
        is 6 x (q.k and the weighted sum of v: 2 x 2 FLOPs per channel) per key a query sees, counted
        over the whole context as PaLM does, or over the window when there is one; it does not depend on
        the key/value heads (every query head still scores every key). Grouped-query attention lowers
        the parameter term instead (a smaller qkv layer).
        """
        c = self.config
        n = self.num_params(include_position_embedding=False)  # padded rows included: they are computed
        keys_seen = min(c.attention_window or c.block_size, c.block_size)
        return 6 * n + 12 * c.n_layer * c.n_embd * keys_seen
