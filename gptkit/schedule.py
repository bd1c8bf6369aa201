"""Learning-rate schedules: the learning rate as a function of the optimizer step.

Every schedule starts with the same linear warmup (`warmup_iters` steps from near 0 to the peak
`learning_rate`): the first updates are made from gradients of a random model and from optimizer
moments that have seen only a few batches, so they are kept small. After the warmup:

    cosine     half a cosine wave from the peak down to `min_lr` at `lr_decay_iters` (nanoGPT's
               default; GPT-3 and Chinchilla used it). Smooth, but the rate starts falling at once.
    linear     a straight line from the peak down to `min_lr` at `lr_decay_iters`.
    constant   the peak until the end. Simple, and the baseline the others are measured against.
    wsd        warmup-stable-decay (Hu et al. 2024, "MiniCPM"; Hägele et al. 2024): hold the peak,
               then decay linearly to `min_lr` over the last `cooldown_frac` of the decay length.
               Most of the run trains at full speed, and a run can be extended before its cooldown
               without restarting, because nothing before the cooldown depends on its length.

Past `lr_decay_iters` (0 means `max_iters`) every schedule stays at its final value.

    >>> learning_rate_at(step, train_config)
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant", "wsd")


def learning_rate_at(step: int, cfg) -> float:
    """The learning rate for optimizer step `step` (0-based) of a run configured by `cfg` (TrainConfig)."""
    peak, low = cfg.learning_rate, cfg.min_lr
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return peak * (step + 1) / (cfg.warmup_iters + 1)
    if cfg.lr_schedule == "constant":
        return peak
    if step >= decay_iters:
        return low
    if cfg.lr_schedule == "cosine":
        progress = (step - cfg.warmup_iters) / max(decay_iters - cfg.warmup_iters, 1)  # 0 -> 1
        return low + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - low)
    if cfg.lr_schedule == "linear":
        progress = (step - cfg.warmup_iters) / max(decay_iters - cfg.warmup_iters, 1)
        return peak + progress * (low - peak)
    if cfg.lr_schedule == "wsd":
        cooldown = max(round(cfg.cooldown_frac * decay_iters), 1)
        cooldown_start = decay_iters - cooldown
        if step < cooldown_start:
            return peak
        return peak + (step - cooldown_start) / cooldown * (low - peak)
    raise ValueError(f"unknown learning-rate schedule {cfg.lr_schedule!r} (known: {', '.join(SCHEDULES)})")
