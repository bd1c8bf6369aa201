"""One optimizer step, and the loss of a model on a source of batches.

    stats = train_step(state, model, cfg)     # StepStats: loss, grad_norm, lr, skipped
    loss = estimate_loss(model, batches)      # batches: any iterable (or callable giving one) of (x, y)

Targets may be masked: a target of -100 (IGNORE_INDEX) is not predicted, and the model's
cross-entropy leaves it out (F.cross_entropy's ignore_index). Instruction data masks the prompt, so
micro-batches hold different numbers of valid targets; a step's loss is therefore

    sum over every valid target of the step (all micro-batches, all ranks) / their number

and each micro-batch's mean loss is weighted by its share of the step's valid targets. With unmasked
data every micro-batch holds B * T targets and the weight is 1 / grad_accum, exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from gptkit import distributed
from gptkit.devices import Runtime
from gptkit.distributed import Distributed
from gptkit.optim import set_learning_rate
from gptkit.schedule import learning_rate_at
from gptkit.train_state import TrainState

IGNORE_INDEX = -100  # a target the loss leaves out (F.cross_entropy's default ignore_index)

Batch = tuple[torch.Tensor, torch.Tensor]  # x (B, T) token ids, y (B, T) targets (IGNORE_INDEX: masked)


@dataclass
class ParallelModel:
    """The model as this process runs it: `wrapped` is the DDP wrapper (or the FSDP/plain module),
    `forward` the same, compiled when --compile is on; `runtime` and `ctx` say where and with whom."""

    wrapped: nn.Module
    forward: Callable
    runtime: Runtime
    ctx: Distributed


@dataclass
class StepStats:
    step: int  # the step just completed (1-based)
    lr: float
    loss: float  # the step's loss (mean over its valid targets, all ranks)
    grad_norm: float
    skipped: str | None  # why the loss guard dropped the update, or None when it was applied


def valid_targets(y: torch.Tensor) -> int:
    return int((y != IGNORE_INDEX).sum())


def _step_target_count(local: int, ctx: Distributed, device: torch.device):
    """The valid targets of the whole step over all ranks: an int on one process, else a tensor
    (one all-reduce, no wait for the device)."""
    if not ctx.enabled:
        return max(local, 1)
    count = torch.tensor(local, dtype=torch.int64, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return count.clamp(min=1)


def train_step(state: TrainState, model: ParallelModel, cfg) -> StepStats:
    """Run one optimizer step of cfg.grad_accum micro-batches from state.loader; returns its stats.
    Raises BadLoss when the loss guard stops the run."""
    runtime, ctx, optimizer, scaler = model.runtime, model.ctx, state.optimizer, state.scaler
    lr = learning_rate_at(state.step, cfg)
    set_learning_rate(optimizer, lr)
    batches = [state.loader.next_batch() for _ in range(cfg.grad_accum)]
    counts = [valid_targets(y) for _, y in batches]  # on the CPU: no wait for the device
    total = _step_target_count(sum(counts), ctx, runtime.device)
    step_loss = torch.zeros((), device=runtime.device)
    for micro_step, ((x, y), count) in enumerate(zip(batches, counts)):
        x = x.to(runtime.device, non_blocking=True)
        y = y.to(runtime.device, non_blocking=True)
        # The micro-batch's share of the step: count / total. Written as a divisor, total / (count * W),
        # which is grad_accum exactly for unmasked data (the arithmetic of a plain mean); W because DDP
        # and FSDP average the ranks' gradients.
        divisor = total / (count * ctx.world_size) if count else None
        # Under torchrun, gradients are averaged across ranks after the last micro-batch only.
        with distributed.gradient_sync(model.wrapped, micro_step == cfg.grad_accum - 1):
            with runtime.autocast:
                logits, loss = model.forward(x, y) if count else (model.forward(x)[0], None)
            if divisor is None:  # nothing to predict: a zero gradient that still runs every layer's backward
                scaler.scale(logits.float().sum() * 0.0).backward()
                continue
            scaler.scale(loss / divisor).backward()
        step_loss += loss.detach() / divisor
    scaler.unscale_(optimizer)  # true gradients for the norm (a no-op without float16's scaler)
    # With max_norm=inf the norm is measured and the gradients are left as they are.
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    # One wait for the device per step: the guard must see the loss before the update. Under torchrun
    # each rank holds W x its share of the loss, so the ranks' mean is the step's loss on every rank.
    step_loss, grad_norm = ctx.mean(step_loss), distributed.full(grad_norm)
    loss_value, norm_value = torch.stack([step_loss.float(), grad_norm.float()]).tolist()
    state.step += 1
    skipped = state.guard.check(state.step, loss_value, norm_value, check_grad_norm=not scaler.is_enabled())
    if skipped is None:
        scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return StepStats(state.step, lr, loss_value, norm_value, skipped)


@torch.no_grad()
def estimate_loss(model: ParallelModel, batches: Iterable[Batch] | Callable[[], Iterable[Batch]]) -> float:
    """Mean loss per valid target over `batches` (under torchrun: over every rank's batches)."""
    runtime, ctx = model.runtime, model.ctx
    model.wrapped.eval()
    total, count = 0.0, 0
    for x, y in batches() if callable(batches) else batches:
        n = valid_targets(y)
        if n == 0:
            continue
        with runtime.autocast:
            _, loss = model.forward(x.to(runtime.device), y.to(runtime.device))
        total += loss.item() * n  # exact in float64 for float32 losses, so equal counts give the plain mean
        count += n
    model.wrapped.train()
    if ctx.enabled:
        both = torch.tensor([total, count], dtype=torch.float64, device=runtime.device)
        dist.all_reduce(both, op=dist.ReduceOp.SUM)
        total, count = both.tolist()
    return total / count if count else math.nan


__all__ = ["IGNORE_INDEX", "ParallelModel", "StepStats", "estimate_loss", "train_step"]
