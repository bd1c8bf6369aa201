"""The model's swappable parts: norms, position schemes and MLPs, one small class each.

model.py builds a GPT from these by name: COMPONENTS[kind][name](config), the names being the choices of
config.COMPONENT_CHOICES[kind] (a test checks the two agree). Each class says in its docstring what it
computes, with shapes, and where it comes from; docs/components.md has the table of every choice.

    norm        layernorm  GPT-2's, centre and scale        | rmsnorm  scale only (Zhang & Sennrich 2019)
    position    learned    a table added at the input       | rope     queries and keys rotated (Su et al. 2021)
                alibi      a distance bias on the scores     | none     nothing: order from the causal mask alone
                           (Press et al. 2022)                           (Haviv et al. 2022)
    mlp         gelu       GPT-2's, 4x wide                  | relu2    relu(x)^2 (So et al. 2021)
                swiglu     gated, 8/3 x wide (Shazeer 2020)

A position scheme enters in one of two places, which its two flags say: `adds_at_input` (learned: once,
to the token embeddings) or `acts_in_attention` (rope turns queries and keys, alibi biases the scores, in
every layer; one module is shared by all layers). `none` is neither. Positions are given as an int start
(every row at start..start+T-1) or per row (B, T), as kv_cache.py hands them out.

Shapes use B = batch, T = time, C = n_embd, H = n_head, D = C // H.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptkit.config import ModelConfig


def as_positions(positions: int | torch.Tensor, T: int, device: torch.device) -> torch.Tensor:
    """Positions of T new tokens: an int start -> (1, T) start..start+T-1; a (B, T) tensor as it is."""
    if not isinstance(positions, torch.Tensor):  # an int start (or a traced SymInt: ONNX export)
        return torch.arange(positions, positions + T, device=device)[None, :]
    return positions


def dropout_layer(p: float) -> nn.Module:
    """nn.Dropout(p), or for p = 0 an nn.Identity: the same function, one call fewer per use (a decode
    step of a small model is bound by such calls: nine dropouts of nothing cost it 5%, docs/performance.md)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


# --- norms ------------------------------------------------------------------------------------------------

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


# --- positions --------------------------------------------------------------------------------------------


class LearnedPosition(nn.Embedding):
    """GPT-2's positions: one learned C-vector per position, added to the token embeddings.
    Its weight is GPT's `position_embedding.weight` (block_size, C)."""

    adds_at_input = True  # enters once, at the input
    acts_in_attention = False

    def __init__(self, config: ModelConfig):
        super().__init__(config.block_size, config.n_embd)

    def add_to(self, x: torch.Tensor, positions: int | torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) embeddings -> x plus their position vectors. positions: an int start (every row at
        start..start+T-1) or each row's own positions (B, T) (a batch of rows of different lengths)."""
        if not isinstance(positions, torch.Tensor):  # an int start (or a traced SymInt: ONNX export)
            return x + self.weight[positions : positions + x.size(1)]  # rows start..start+T-1: (T, C), broadcast
        return x + self(positions)  # each row's own: (B, T, C)


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

    adds_at_input = False
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


class ALiBi(nn.Module):
    """Attention with Linear Biases (Press, Smith & Lewis 2022): no position vectors at all. Each head h
    lowers a score by the distance between query and key, at its own fixed slope m_h:

        score(q, k) = q.k / sqrt(D) - m_h * (pos_q - pos_k)

    The slopes are a geometric sequence, m_h = 2^(-8h/H) for h = 1..H (the paper's; for H not a power of
    two, those of the power below plus every other one of the power above), so some heads look far back
    and others only near. Nothing is learned, so nothing is saved; the bias is a function of positions
    alone, so it extrapolates to contexts longer than the training one (the paper's point). The cost: the
    scores need an explicit mask (B|1, H, T, S) instead of the fused causal kernel."""

    adds_at_input = False
    acts_in_attention = True  # biases every layer's scores; nothing is added at the input

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.build_tables(config)

    @staticmethod
    def slopes_for(n_head: int) -> list[float]:
        def powers(n: int) -> list[float]:
            return [2 ** (-8 * h / n) for h in range(1, n + 1)]

        below = 2 ** math.floor(math.log2(n_head))
        return powers(below) + powers(2 * below)[0::2][: n_head - below]

    def build_tables(self, config: ModelConfig) -> None:
        # Not learned and cheap to rebuild: not saved in checkpoints (persistent=False), rebuilt at load.
        slopes = torch.empty(config.n_head)
        if slopes.device.type != "meta":
            slopes = torch.tensor(self.slopes_for(config.n_head))
        self.register_buffer("slopes", slopes, persistent=False)  # (H,)

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """q_pos (B|1, T), k_pos (B|1, S) -> the additive score bias (B|1, H, T, S), float32."""
        distance = (q_pos[:, None, :, None] - k_pos[:, None, None, :]).float()  # (B|1, 1, T, S)
        return -self.slopes[None, :, None, None] * distance


class NoPosition(nn.Module):
    """No position encoding at all ("NoPE": Haviv et al. 2022, Kazemnejad et al. 2023). Attention alone is
    blind to order, but the causal mask is not: position t averages over exactly t + 1 values, so the
    model can still work out where it is. Nothing is learned, added or saved; a baseline that shows what
    the other schemes buy (and how they extrapolate past the training context)."""

    adds_at_input = False
    acts_in_attention = False

    def __init__(self, config: ModelConfig):
        super().__init__()


# --- MLPs -------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Position-wise feed-forward network: widen, apply a nonlinearity, project back.

        x (B, T, C) -> fc (B, T, fc_width) -> activate (B, T, hidden) -> proj (B, T, C)

    The subclasses differ only in `activate` (and SwiGLU in its width)."""

    def __init__(self, config: ModelConfig, hidden: int, fc_width: int):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, fc_width, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.proj.residual_projection = True  # scaled at init, see GPT._init_weights
        self.dropout = dropout_layer(config.dropout)

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


COMPONENT_PARTS: dict[str, dict[str, type[nn.Module]]] = {
    "position": {"learned": LearnedPosition, "rope": Rotary, "alibi": ALiBi, "none": NoPosition},
    "norm": {"layernorm": LayerNorm, "rmsnorm": RMSNorm},
    "mlp": {"gelu": GeluMLP, "relu2": Relu2MLP, "swiglu": SwiGLU},
}
