"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), and freezing.

Fine-tuning all of a model's weights needs an optimizer state twice the model's size. LoRA freezes the
pretrained weight W (out, in) of chosen Linear layers and learns a low-rank change to it instead:

    y = x W^T + b  +  (alpha / r) * dropout(x) A^T B^T      A: (r, in), B: (out, r), r << in, out

A starts random (kaiming-uniform, like a Linear's weight) and B at zero, so B A = 0: at step 0 the model
is exactly the base model, and training moves it away only as far as the data asks. alpha / r scales
the update so that changing r does not change how far a learning rate moves it. After training, the
change folds into the weight (W + alpha / r * B A: merge_lora), and the model is a plain GPT again.

    model = apply_lora(GPT(config), targets=("q", "v", "o", "mlp"), rank=8, alpha=16)   # a transform
    lora_state_dict(model)        # the adapter: A and B of every wrapped layer, nothing else
    merge_lora(model)             # the plain GPT state dict with every B A folded in
    apply_adapter(model, adapter) # a base GPT + a saved adapter, not merged

Targets: q, k, v (the three parts of attention's fused `qkv` Linear), o (attention's output `proj`),
mlp_fc, mlp_proj, and mlp (both MLP layers). q, k and v live in one Linear (C -> 3C); targeting some of
them gives that Linear one (A, B) pair per chosen part, each acting on its own output slice (rows 0:C
for q, C:2C for k, 2C:3C for v), so "q,v" is exactly LoRA on separate q and v projections.

A wrapped layer keeps its weight and bias under their names (blocks.0.attn.qkv.weight) and adds
`lora_A` (P, r, in) and `lora_B` (P, part_out, r) for its P parts, so the base's state dict loads into
it as is. Full fine-tuning uses freeze() instead: embeddings and the first N blocks stop training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptkit.errors import UsageError

LORA_TARGETS = ("q", "k", "v", "o", "mlp_fc", "mlp_proj", "mlp")
_QKV = {"q": 0, "k": 1, "v": 2}


class LoRALinear(nn.Linear):
    """A Linear (its weight frozen) plus trainable low-rank updates on `parts`: (start, stop) row ranges
    of its output, all of one length."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float, parts: Sequence[tuple[int, int]]):
        nn.Module.__init__(self)  # not nn.Linear.__init__: keep the base's own weight and bias
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        for name, value in vars(base).items():  # plain attributes, e.g. residual_projection
            if not name.startswith("_") and name not in vars(self):
                setattr(self, name, value)
        self.parts = [tuple(p) for p in parts]
        part_out = self.parts[0][1] - self.parts[0][0]
        assert all(stop - start == part_out for start, stop in self.parts), "LoRA parts must be of one length"
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(len(self.parts), rank, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(len(self.parts), part_out, rank, device=device))
        for a in self.lora_A:  # as nn.Linear initializes a (rank, in) weight
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout)
        rows = torch.cat([torch.arange(start, stop) for start, stop in self.parts])
        self.whole = rows.numel() == self.out_features and bool((rows == torch.arange(self.out_features)).all())
        self.register_buffer("rows", rows.to(device), persistent=False)  # (P * part_out,)

    def delta_weight(self, lora_A: torch.Tensor | None = None, lora_B: torch.Tensor | None = None) -> torch.Tensor:
        """alpha / r * B A, scattered into the rows it changes: (out, in), zero in rows no part covers."""
        a = self.lora_A if lora_A is None else lora_A
        b = self.lora_B if lora_B is None else lora_B
        per_part = torch.bmm(b.float(), a.float()) * self.scaling  # (P, part_out, in)
        delta = torch.zeros(self.out_features, self.in_features, device=per_part.device)
        return delta.index_copy(0, self.rows.to(per_part.device), per_part.flatten(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)  # (..., out): the frozen base
        h = torch.einsum("...i,pri->...pr", self.lora_dropout(x), self.lora_A)  # (..., P, r)
        d = torch.einsum("...pr,por->...po", h, self.lora_B).flatten(-2) * self.scaling  # (..., P * part_out)
        if self.whole:
            return y + d
        return y.index_add(y.dim() - 1, self.rows, d)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha}, parts={self.parts}"


def parse_targets(targets: str | Sequence[str]) -> tuple[str, ...]:
    """"q,v,mlp" or ("q", "v", "mlp") -> the targets, checked (UsageError naming the unknown ones)."""
    names = [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()]
    unknown = [t for t in names if t not in LORA_TARGETS]
    if unknown or not names:
        raise UsageError(
            f"unknown LoRA target(s) {', '.join(unknown) or '(none given)'}",
            hint=f"choose among {', '.join(LORA_TARGETS)}, comma-separated (e.g. q,v,o,mlp)",
        )
    return tuple(dict.fromkeys(names))


def _layers_to_wrap(model: nn.Module, targets: tuple[str, ...]) -> dict[str, tuple[nn.Linear, list[tuple[int, int]]]]:
    """{qualified name: (the Linear, its parts)} for every layer the targets name."""
    chosen = {}
    for i, block in enumerate(model.blocks):
        sizes = block.attn.qkv_split  # rows of q, k, v: (H*D, H_kv*D, H_kv*D), thirds unless grouped-query
        starts = [0, sizes[0], sizes[0] + sizes[1]]
        qkv_parts = [(starts[_QKV[t]], starts[_QKV[t]] + sizes[_QKV[t]]) for t in ("q", "k", "v") if t in targets]
        if qkv_parts:
            chosen[f"blocks.{i}.attn.qkv"] = (block.attn.qkv, qkv_parts)
        layers = {"o": ("attn.proj", block.attn.proj), "mlp_fc": ("mlp.fc", block.mlp.fc), "mlp_proj": ("mlp.proj", block.mlp.proj)}
        for target, (name, layer) in layers.items():
            if target in targets or (target.startswith("mlp_") and "mlp" in targets):
                chosen[f"blocks.{i}.{name}"] = (layer, [(0, layer.out_features)])
    return chosen


def apply_lora(model: nn.Module, targets: str | Sequence[str], rank: int, alpha: float, dropout: float = 0.0) -> nn.Module:
    """Freeze every weight of the GPT `model` and wrap the target Linears in LoRALinear (in place;
    returns the model). Apply it after the base weights are in: the wrapped layers keep them."""
    if rank < 1:
        raise UsageError(f"LoRA rank must be at least 1 (got {rank})", hint="use --lora-rank 0 for full fine-tuning")
    model.requires_grad_(False)
    for name, (layer, parts) in _layers_to_wrap(model, parse_targets(targets)).items():
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, LoRALinear(layer, rank, alpha, dropout, parts))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def is_lora_key(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")


def lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter's weights only (every lora_A, lora_B), from `state` (else the model's state dict)."""
    state = model.state_dict() if state is None else state
    return {k: v for k, v in state.items() if is_lora_key(k)}


def merge_lora(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The plain GPT state dict of a LoRA model: every weight W + alpha / r * B A, no lora_ keys.
    `state`: the model's state dict as gathered for a save (default: model.state_dict()). Merged in
    float32, then stored in the weight's dtype."""
    state = model.state_dict() if state is None else state
    merged = {k: v for k, v in state.items() if not is_lora_key(k)}
    for name, layer in lora_layers(model).items():
        weight = merged[f"{name}.weight"]
        delta = layer.delta_weight(state[f"{name}.lora_A"], state[f"{name}.lora_B"]).to(weight.device)
        merged[f"{name}.weight"] = (weight.float() + delta).to(weight.dtype)
    return merged


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def apply_adapter(model: nn.Module, adapter) -> nn.Module:
    """Put a saved adapter (a Checkpoint of kind "adapter", whose train_config["lora"] holds rank,
    alpha, targets) onto the base GPT `model`, without merging. The caller checks it belongs to this
    base (Checkpoint.check_base)."""
    lora = (adapter.train_config or {}).get("lora")
    if not lora:
        raise UsageError("the adapter does not record its LoRA settings (rank, alpha, targets)", hint="use an adapter written by `gptkit finetune`")
    # The rank comes from the tensors, not from the metadata alone: a stranger's file claiming rank 10^9
    # over small matrices must not make apply_lora allocate them (lora_A is (P, r, in), lora_B (P, out, r)).
    ranks = {t.shape[1] for n, t in adapter.state_dict.items() if n.endswith("lora_A") and t.dim() == 3}
    ranks |= {t.shape[2] for n, t in adapter.state_dict.items() if n.endswith("lora_B") and t.dim() == 3}
    if ranks != {int(lora["rank"])}:
        raise UsageError(
            f"the adapter's weights do not fit its recorded LoRA settings: rank {lora['rank']} recorded, "
            f"{', '.join(map(str, sorted(ranks))) or 'no LoRA matrices'} in its tensors",
            hint="the adapter file is not one `gptkit finetune` wrote",
        )
    apply_lora(model, lora["targets"], int(lora["rank"]), float(lora["alpha"]), 0.0)
    expected = {name: tuple(t.shape) for name, t in lora_state_dict(model).items()}
    if {name: tuple(t.shape) for name, t in adapter.state_dict.items()} != expected:
        raise UsageError(
            "the adapter's weights do not fit its recorded LoRA settings on this model",
            hint="the adapter file is not one `gptkit finetune` wrote for this base model",
        )
    model.load_state_dict(adapter.state_dict, strict=False)
    return model


def freeze(model: nn.Module, embeddings: bool = False, blocks: int = 0) -> nn.Module:
    """For full fine-tuning: stop training the embeddings (token and learned position; with tied
    embeddings that is the output layer too) and the first `blocks` transformer blocks. In place."""
    if blocks < 0 or blocks > len(model.blocks):
        raise UsageError(f"cannot freeze {blocks} blocks of a model with {len(model.blocks)}", hint=f"give 0..{len(model.blocks)}")
    if embeddings:
        model.token_embedding.requires_grad_(False)
        if model.position_embedding is not None:
            model.position_embedding.requires_grad_(False)
    for block in model.blocks[:blocks]:
        block.requires_grad_(False)
    return model
