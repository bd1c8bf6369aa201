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
(the GPT-2 choice is the default; presets pick others). Each kind has one table, COMPONENTS[kind]
(name -> class, every class built as cls(config)); a new choice is one class and one table row,
plus its name in config.COMPONENT_CHOICES:

    position        learned  | rope    rotary embeddings (Su et al., RoFormer 2021): relative positions,
                                       adjacent channel pairs turned by real cos/sin tables
    norm            layernorm| rmsnorm scale-only normalisation (Zhang & Sennrich 2019): cheaper
    mlp             gelu     | relu2 | swiglu   (So et al., Primer 2021; Shazeer, GLU variants 2020)
    tie_embeddings  True     | False   separate output matrix

The loss skips targets equal to IGNORE_INDEX (-100: prompt tokens, padding) and can be summed
(`reduction="sum"`) so a training loop weighs every valid token of an optimizer step alike.

`generate.py` and `engine.py` drive this model with a KV cache (kv_cache.py): `forward(idx, cache=...)`
writes the keys and values of the new positions into the cache, in place, instead of recomputing the
whole prefix; each row of the batch has its own positions (B, T), which both position schemes take.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

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


# --- swappable components -----------------------------------------------------------------------------
# Every component kind has one table, name -> class, and every class is built as cls(config). The
# names are config.COMPONENT_CHOICES[kind]; adding a choice (ALiBi, another norm) is one class here and
# one name there.


class LayerNorm(nn.LayerNorm):
    """GPT-2's norm: centre each C-vector, scale it to unit variance, then a learned gain (and bias).
    (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config.n_embd, bias=config.bias)


class RMSNorm(nn.RMSNorm):
    """Scale-only normalisation (Zhang & Sennrich 2019): divide by the root mean square, no centring,
    no bias; one reduction fewer than LayerNorm. (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config.n_embd, eps=1e-5)


class LearnedPosition(nn.Embedding):
    """GPT-2's positions: one learned C-vector per position, added to the token embeddings.
    Its weight is GPT's `position_embedding.weight` (block_size, C)."""

    acts_in_attention = False  # enters once, at the input

    def __init__(self, config: ModelConfig):
        super().__init__(config.block_size, config.n_embd)

    def add_to(self, x: torch.Tensor, positions: int | torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) embeddings -> x plus their position vectors. positions: an int start (every row at
        start..start+T-1) or each row's own positions (B, T) (a batch of rows of different lengths)."""
        if not isinstance(positions, torch.Tensor):  # an int start (or a traced SymInt: ONNX export)
            positions = torch.arange(positions, positions + x.size(1), device=x.device)  # (T,)
        return x + self(positions)  # (T, C) broadcast over the batch, or (B, T, C)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al., RoFormer 2021): rotate each pair of query/key channels by
    an angle proportional to the position, so the score q.k depends only on the *distance* between
    two positions. Nothing is learned; the cos/sin tables are rebuilt at load, never saved.

    Which channels pair up: ADJACENT ones, (2i, 2i+1) within each head, turning at frequency
    base^(-2i/D). This is the pairing of the original RoFormer and Meta's Llama code, and the one
    every gptkit checkpoint was trained with (earlier versions rotated the same pairs as complex
    numbers), so old checkpoints load unchanged and give the same logits. Hugging Face's Llama pairs
    channel i with i + D/2 ("halves") instead; an exporter converts by permuting the rows of the
    query and key projections within each head, once, at export, as HF's own conversion script does.

    Real-valued: a pair (a, b) turned by angle t is (a cos t - b sin t, b cos t + a sin t), written as
    x * cos + swap(x) * sin with swap(a, b) = (b, a) and the tables laid out per channel:
    cos = (c0, c0, c1, c1, ...), sin = (-s0, s0, -s1, s1, ...). No complex tensors, so ONNX export,
    torch.compile and bf16 kernels see only multiplies and adds.
    """

    acts_in_attention = True  # turns queries and keys in every layer; nothing is added at the input

    def __init__(self, config: ModelConfig, base: float = 10000.0):
        super().__init__()
        self.base = base
        self.build_tables(config)

    def build_tables(self, config: ModelConfig) -> None:
        head_size = config.n_embd // config.n_head
        if torch.get_default_device().type == "meta":  # shapes only (GPT.expected_shapes): no arithmetic
            for name in ("cos", "sin"):
                self.register_buffer(name, torch.empty(config.block_size, head_size), persistent=False)
            return
        inv_freq = self.base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (D/2,)
        angles = torch.outer(torch.arange(config.block_size, dtype=torch.float32), inv_freq)  # (block_size, D/2)
        # Not learned and cheap to rebuild, so not saved in checkpoints (persistent=False).
        self.register_buffer("cos", angles.cos().repeat_interleave(2, dim=-1), persistent=False)  # (block_size, D)
        sin = angles.sin()
        self.register_buffer("sin", torch.stack((-sin, sin), dim=-1).flatten(-2), persistent=False)  # (block_size, D)

    def forward(self, x: torch.Tensor, positions: int | torch.Tensor) -> torch.Tensor:
        """x: (B, T, ..., D) -> the same shape, rotated. positions: an int start (every row at
        start..start+T-1) or each row's own positions (B, T)."""
        B, T = x.shape[:2]
        if not isinstance(positions, torch.Tensor):  # an int start (or a traced SymInt: ONNX export)
            shape = (T, *[1] * (x.dim() - 3), -1)  # (T, 1.., D): broadcast over batch and heads
            cos, sin = self.cos[positions : positions + T].view(shape), self.sin[positions : positions + T].view(shape)
        else:
            shape = (B, T, *[1] * (x.dim() - 3), -1)  # (B, T, 1.., D): each row its own angles
            cos, sin = self.cos[positions].view(shape), self.sin[positions].view(shape)
        x32 = x.float()  # rotate in float32 whatever the autocast dtype, as the complex form did
        pairs = x32.unflatten(-1, (-1, 2))  # (B, T, ..., D/2, 2)
        swapped = torch.stack((pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (b, a) for each (a, b)
        return torch.addcmul(x32 * cos, swapped, sin).type_as(x)


class MLP(nn.Module):
    """Position-wise feed-forward network: widen, apply a nonlinearity, project back.

        x (B, T, C) -> fc (B, T, fc_width) -> activate (B, T, hidden) -> proj (B, T, C)

    The subclasses differ only in `activate` (and SwiGLU in its width)."""

    def __init__(self, config: ModelConfig, hidden: int, fc_width: int):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, fc_width, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.proj.residual_projection = True  # scaled at init, see GPT._init_weights
        self.dropout = nn.Dropout(config.dropout)

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.activate(self.fc(x))))  # (B, T, C)


class GeluMLP(MLP):
    """GPT-2's MLP: 4x wide, GELU. The exact (erf) form: on CPU ~5x faster than the tanh approximation,
    which config.gelu_approximate = "tanh" selects (GPT-2's own: imported GPT-2 weights need it)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config, hidden=4 * config.n_embd, fc_width=4 * config.n_embd)
        self.approximate = config.gelu_approximate  # "none" | "tanh"

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        return F.gelu(h, approximate=self.approximate)  # (B, T, 4C)


class Relu2MLP(MLP):
    """relu(x)^2, 4x wide: from the Primer architecture search (So et al. 2021); used by modded-nanogpt."""

    def __init__(self, config: ModelConfig):
        super().__init__(config, hidden=4 * config.n_embd, fc_width=4 * config.n_embd)

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h).square()  # (B, T, 4C)


class SwiGLU(MLP):
    """A gated unit (Shazeer, GLU variants 2020): silu(x W1) * (x W2). The hidden width is 8/3 C instead
    of 4C so the parameter count stays that of the 4x MLP; W1 and W2 are the two halves of `fc`."""

    def __init__(self, config: ModelConfig):
        hidden = 32 * math.ceil(8 * config.n_embd / 3 / 32)  # a multiple of 32 for fast matmuls
        super().__init__(config, hidden=hidden, fc_width=2 * hidden)  # both halves in one matmul

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        gate, value = h.chunk(2, dim=-1)  # 2 x (B, T, hidden)
        return F.silu(gate) * value  # (B, T, hidden)


COMPONENTS: dict[str, dict[str, type[nn.Module]]] = {
    "position": {"learned": LearnedPosition, "rope": Rotary},
    "norm": {"layernorm": LayerNorm, "rmsnorm": RMSNorm},
    "mlp": {"gelu": GeluMLP, "relu2": Relu2MLP, "swiglu": SwiGLU},
}


def build(kind: str, config: ModelConfig) -> nn.Module:
    """The component of `kind` that `config` names, e.g. build("norm", config) -> LayerNorm(config)."""
    return COMPONENTS[kind][getattr(config, kind)](config)


class CausalSelfAttention(nn.Module):
    """Multi-head attention where position t may only look at positions <= t.
    (B, T, C) -> (B, T, C); `rotary`, when given, turns queries and keys by their positions."""

    def __init__(self, config: ModelConfig, layer_index: int, rotary: Rotary | None = None):
        super().__init__()
        self.layer_index = layer_index
        self.n_head = config.n_head
        self.dropout = config.dropout
        # One matrix computes queries, keys and values together: one big matmul beats three small ones.
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.residual_projection = True  # scaled at init, see GPT._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)
        self.rotary = rotary  # one module shared by all layers (its tables are not saved)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head)  # q, k, v, each split into heads
        positions = cache.positions if cache is not None else 0  # int start, or each row's (B, T)
        if self.rotary is not None:  # positions enter here, not at the embedding
            q, k = self.rotary(qkv[:, :, :2], positions).unbind(2)  # queries and keys turn together
            v = qkv[:, :, 2]
        else:
            q, k, v = qkv.unbind(2)  # 3 x (B, T, H, D)
        # (B, T, H, D) -> (B, H, T, D): each head attends independently.
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        mask, causal = None, True
        if cache is not None:
            # Stored in place. A prefill gets its own k, v back (causal, as in training); a decode step
            # gets every cached slot (B, H, S, D) and, for rows at different positions, the mask built
            # from positions by kv_cache.attention_mask.
            k, v = cache.write(self.layer_index, k, v)
            mask, causal = cache.mask_for(window=None), cache.prefill
        # softmax(q k^T / sqrt(D)) v in one fused kernel; training takes the is_causal fast path. A sliding
        # window: cache.mask_for(window) here, attention_mask(pos, pos, window=...) without a cache.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and mask is None, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    """One transformer layer: attention mixes information across positions, the MLP within one.
    (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ModelConfig, layer_index: int, rotary: Rotary | None = None):
        super().__init__()
        self.attn_norm = build("norm", config)
        self.attn = CausalSelfAttention(config, layer_index, rotary)
        self.mlp_norm = build("norm", config)
        self.mlp = build("mlp", config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cache)  # residual connections keep gradients flowing
        x = x + self.mlp(self.mlp_norm(x))
        return x


class GPT(nn.Module):
    """The whole model: token ids (B, T) -> logits (B, T, padded_vocab_size), and a loss given targets.

    Built from `config`: the position scheme, the norm and the MLP come from the COMPONENTS tables;
    `tie_embeddings` decides whether the output layer has its own matrix. State-dict names:
    token_embedding, position_embedding (learned positions only), blocks.N.{attn_norm, attn.qkv,
    attn.proj, mlp_norm, mlp.fc, mlp.proj}, final_norm, lm_head (untied only).
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
        # attention (rotary: the same cos/sin tables for all layers).
        position = build("position", config)
        self.position_embedding = None if position.acts_in_attention else position
        rotary = position if position.acts_in_attention else None
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i, rotary) for i in range(config.n_layer))
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
        for module in model.modules():  # the tables no checkpoint saves (rotary cos/sin), built for real
            if isinstance(module, Rotary):
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

        From the PaLM paper's appendix B; used to report model FLOPs utilisation (MFU).
        """
        c = self.config
        n = self.num_params(include_position_embedding=False)  # padded rows included: they are computed
        return 6 * n + 12 * c.n_layer * c.n_embd * c.block_size
