"""What a run trains, in words: the lines `gptkit train` prints before its first step.

    model: 0.80M parameters (all trained) | 4 layers x 4 heads, 128 wide, context 64 | rope, layernorm, swiglu, tied embeddings, no biases
    optimizer: Muon lr 2.00e-02 on 0.52M (the blocks' matrices) + AdamW lr 6.00e-03 on 0.28M (embeddings, gains) | weight decay 0.1
    schedule: cosine | warmup 50 steps | decay to min_lr 6.00e-04 at step 500 | 500 steps of 768 tokens (12 x 64 x grad_accum 1)

so a newcomer sees what a preset and the options add up to before the run spends its time, and which
learning rate each optimizer uses (the progress line shows AdamW's; Muon's follows it in proportion).
"""

from __future__ import annotations

import torch.nn as nn

from gptkit.model import ModelConfig


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _count(params) -> int:
    return sum(p.numel() for p in params)


def describe_model(model: nn.Module, config: ModelConfig) -> str:
    total = _count(model.parameters())
    trained = _count(p for p in model.parameters() if p.requires_grad)
    share = "all trained" if trained == total else f"{_millions(trained)} trained"
    parts = [
        config.position, config.norm, config.mlp + (f" ({config.gelu_approximate} approximation)" if config.mlp == "gelu" and config.gelu_approximate != "none" else ""),
        "tied embeddings" if config.tie_embeddings else "untied embeddings",
        "biases" if config.bias else "no biases",
    ]
    if config.dropout:
        parts.append(f"dropout {config.dropout}")
    return (
        f"model: {_millions(total)} parameters ({share}) | {config.n_layer} layers x {config.n_head} heads, "
        f"{config.n_embd} wide, context {config.block_size}, {config.padded_vocab_size:,} token ids | " + ", ".join(parts)
    )


def describe_optimizer(model: nn.Module, cfg) -> str:
    trained = [p for p in model.parameters() if p.requires_grad]
    adamw = f"AdamW lr {cfg.learning_rate:.2e} (betas {cfg.beta1}/{cfg.beta2})"
    if cfg.optimizer != "muon":
        return f"optimizer: {adamw} on {_millions(_count(trained))} | weight decay {cfg.weight_decay} on matrices and embeddings"
    from gptkit.optim import hidden_matrices

    hidden = _count(hidden_matrices(model))
    return (
        f"optimizer: Muon lr {cfg.muon_lr:.2e} (momentum {cfg.muon_momentum}) on {_millions(hidden)} (the blocks' matrices) "
        f"+ {adamw} on {_millions(_count(trained) - hidden)} (embeddings, gains, biases) | weight decay {cfg.weight_decay} (AdamW's matrices)"
    )


def describe_schedule(cfg, tokens_per_step: int, sequences: str) -> str:
    decay_end = cfg.lr_decay_iters or cfg.max_iters
    if cfg.lr_schedule == "constant":
        decay = f"constant at {cfg.learning_rate:.2e}"
    elif cfg.lr_schedule == "wsd":
        cooldown = max(round(cfg.cooldown_frac * decay_end), 1)
        decay = f"hold, then decay to min_lr {cfg.min_lr:.2e} over steps {decay_end - cooldown}-{decay_end}"
    else:
        decay = f"decay to min_lr {cfg.min_lr:.2e} at step {decay_end}"
    return (
        f"schedule: {cfg.lr_schedule} | warmup {cfg.warmup_iters} steps | {decay} | "
        f"{cfg.max_iters} steps of {tokens_per_step:,} tokens ({sequences})"
    )


def run_banner(model: nn.Module, config: ModelConfig, cfg, tokens_per_step: int, world_size: int = 1) -> list[str]:
    """The three lines above: model, optimizer(s) with their learning rates, schedule and batch."""
    sequences = f"{cfg.batch_size} x {config.block_size} x grad_accum {cfg.grad_accum}" + (f" x {world_size} processes" if world_size > 1 else "")
    return [describe_model(model, config), describe_optimizer(model, cfg), describe_schedule(cfg, tokens_per_step, sequences)]
