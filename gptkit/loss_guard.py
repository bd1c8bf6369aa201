"""Catching a bad step before it reaches the weights: NaN/inf losses and loss spikes.

A run that diverges (too high a learning rate, an overflow in fp16, one garbage batch) shows it in
the loss: it becomes NaN or inf, or jumps far above where it has been. One such update can ruin the
weights for good. So `train()` looks at each step's loss (and gradient norm) *before* the optimizer
step and asks the guard:

    healthy        update as usual
    bad, "skip"    drop this update (the batch is skipped; the schedule moves on), go on training
    bad, "stop"    stop the run with a message; the last checkpoint still holds the good model

Even when skipping, `max_bad_steps` bad steps in a row stop the run: the model has diverged, and
skipping more batches will not bring it back. A spike is a loss above `spike_factor` times the mean
of the recent healthy losses (0 turns spike detection off). PaLM (Chowdhery et al., 2022, sec. 5.1)
handled its spikes the same way: skip the batches around them.

The guard's memory (recent losses, the current streak) is part of the resume state, so a resumed
run makes exactly the same decisions as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections import deque

from gptkit.errors import GptkitError

RECENT_STEPS = 50  # healthy losses the spike test compares against
MIN_HISTORY = 10  # no spike test before this many healthy steps: the first losses fall fast


class BadLoss(GptkitError):
    """The run stopped on a bad loss; nothing was saved after the last good checkpoint."""


class LossGuard:
    def __init__(self, policy: str = "skip", spike_factor: float = 3.0, max_bad_steps: int = 10, state: dict | None = None):
        self.policy = policy
        self.spike_factor = spike_factor
        self.max_bad_steps = max_bad_steps
        self.load_state(state)

    def state(self) -> dict:
        return {"recent": list(self.recent), "streak": self.streak}

    def load_state(self, state: dict | None) -> None:
        state = state or {}
        self.recent = deque(state.get("recent", []), maxlen=RECENT_STEPS)
        self.streak = int(state.get("streak", 0))

    def problem(self, loss: float, grad_norm: float, check_grad_norm: bool = True) -> str | None:
        """What is wrong with a step of this loss and gradient norm, or None when it is healthy."""
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        if check_grad_norm and not math.isfinite(grad_norm):
            return f"the gradient norm is {grad_norm}"
        if self.spike_factor > 0 and len(self.recent) >= MIN_HISTORY:
            mean = sum(self.recent) / len(self.recent)
            if loss > self.spike_factor * mean:
                return f"the loss spiked to {loss:.4f}, {loss / mean:.1f}x its recent mean of {mean:.4f}"
        return None

    def check(self, step: int, loss: float, grad_norm: float, check_grad_norm: bool = True) -> str | None:
        """Judge step `step` (1-based, the step being completed). Returns None to apply the update, or
        the reason to skip it; raises BadLoss when the run must stop.

        check_grad_norm=False leaves overflowing gradients to a float16 GradScaler, whose job they are.
        """
        reason = self.problem(loss, grad_norm, check_grad_norm)
        if reason is None:
            self.recent.append(loss)
            self.streak = 0
            return None
        self.streak += 1
        hint = (
            "lower the learning rate (resume with --learning-rate), keep --grad-clip on"
            + (", or let gptkit skip bad steps with --on-bad-loss skip" if self.policy == "stop" else "")
        )
        if self.policy == "stop":
            raise BadLoss(f"stopped at step {step}: {reason}; this update was not applied and nothing was saved", hint=hint)
        if self.streak >= self.max_bad_steps:
            raise BadLoss(
                f"stopped at step {step}: {self.streak} bad steps in a row ({reason}); the model has diverged "
                "and nothing was saved after the last good checkpoint",
                hint=hint,
            )
        return reason
