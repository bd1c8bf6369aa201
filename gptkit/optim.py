"""Optimizers: AdamW for everything, or Muon for the hidden matrices and AdamW for the rest.

    optimizer = make_optimizer(model, train_config, device)
    set_learning_rate(optimizer, learning_rate_at(step, train_config))   # schedule.py

AdamW (Loshchilov & Hutter 2019) keeps, per weight, running means of the gradient and of its square,
and steps by their ratio: every weight moves at about the learning rate, whatever its gradient's scale.
Weight decay pulls matrices and embeddings towards zero; biases and LayerNorm gains are left alone.

Muon (Keller Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks") treats a
weight matrix as a linear map rather than a bag of numbers. It keeps momentum like SGD, then replaces
the momentum matrix M = U S V^T by (approximately) U V^T: the same input and output directions, but
every singular value set to 1. Gradients of transformer matrices are dominated by a few directions
(a few huge singular values); orthogonalizing gives the many small directions, which plain momentum
would barely move, an equal step. U V^T is computed without an SVD by a Newton–Schulz iteration: a
handful of matmuls, which GPUs (and CPUs) do fast.

Muon is defined for matrices that map hidden features to hidden features, so it gets the 2-D weights
of the transformer blocks. The token embedding (a lookup table, whose rows see gradient only when their
token occurs), the output layer (the same matrix when tied, else `lm_head`: it maps to vocabulary
scores, not hidden features), the position embedding, and every gain and bias (vectors, not maps) stay
with AdamW, as in the Muon write-up and modded-nanogpt.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# Coefficients of the quintic Newton–Schulz step x -> a x + b (x x^T) x + c (x x^T)^2 x, from the Muon
# write-up: chosen to make the slope at 0 as steep as possible (small singular values grow fast) while
# keeping every singular value in about [0.7, 1.2] after 5 steps, which trains as well as exactly 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Approximately U V^T for matrix = U S V^T (its "zeroth power"), by Newton–Schulz iteration."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide orientation: x x^T is then the smaller of the two Gram matrices
        x = x.mT
    # The iteration converges for singular values in (0, 1]; the Frobenius norm bounds the largest.
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT  # (rows, rows); x x^T = U S^2 U^T, so each step maps every singular value s
        x = a * x + (b * gram + c * gram @ gram) @ x  # to a s + b s^3 + c s^5, pushing it towards 1
    if tall:
        x = x.mT
    return x.to(matrix.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalized (for 2-D parameters only)."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0, ns_steps: int = 5):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon updates matrices only; got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buffer = state["momentum_buffer"]
                # Momentum as a running average of gradients: averages out the noise of single batches.
                buffer.lerp_(grad, 1 - momentum)
                # Nesterov: step along where the momentum is heading (a blend that leans on the newest
                # gradient), which reacts faster than the buffer alone.
                direction = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = _orthogonalize_any(direction, group["ns_steps"])
                # U V^T of a (rows x cols) matrix has entries of size ~1/sqrt(max(rows, cols)); scaling
                # by sqrt(rows/cols) for tall matrices gives every matrix the same per-entry update size.
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                if weight_decay:
                    p.mul_(1 - lr * weight_decay)  # decoupled, as in AdamW
                p.add_(update, alpha=-lr * scale)
        return loss


def _orthogonalize_any(direction: torch.Tensor, steps: int) -> torch.Tensor:
    """orthogonalize() for plain tensors and for FSDP's sharded ones (DTensor): a shard holds only
    some rows of the matrix, and U V^T depends on all of them, so the whole matrix is gathered,
    orthogonalized (identically on every rank) and cut back to this rank's rows."""
    # bf16 on GPUs: the iteration is robust to its rounding and runs at the tensor cores' full rate.
    dtype = torch.bfloat16 if direction.device.type == "cuda" else torch.float32
    if type(direction).__name__ != "DTensor":
        return orthogonalize(direction, steps, dtype)
    from torch.distributed.tensor import DTensor, Replicate

    full = orthogonalize(direction.full_tensor(), steps, dtype)
    replicated = DTensor.from_local(full, direction.device_mesh, [Replicate()] * direction.device_mesh.ndim, run_check=False)
    return replicated.redistribute(direction.device_mesh, direction.placements)


class CombinedOptimizer:
    """Several optimizers, each over its own parameters, driven as one: step, zero_grad, param_groups
    (for the schedule, gradient clipping and the grad scaler) and a state_dict in torch's usual format
    (parameters numbered in param_groups order), so resume files look the same as AdamW's alone."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self, closure=None):
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        merged = {"state": {}, "param_groups": []}
        offset = 0
        for optimizer in self.optimizers:
            sd = optimizer.state_dict()
            merged["state"].update({offset + i: s for i, s in sd["state"].items()})
            merged["param_groups"] += [{**g, "params": [offset + i for i in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return merged

    def load_state_dict(self, state_dict: dict) -> None:
        groups, offset = state_dict["param_groups"], 0
        for optimizer in self.optimizers:
            own_groups, groups = groups[: len(optimizer.param_groups)], groups[len(optimizer.param_groups) :]
            count = sum(len(g["params"]) for g in optimizer.param_groups)
            optimizer.load_state_dict(
                {
                    "state": {int(i) - offset: s for i, s in state_dict["state"].items() if offset <= int(i) < offset + count},
                    "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in own_groups],
                }
            )
            offset += count


def _adamw(groups: list[dict], cfg, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel updates all tensors in one pass instead of a dozen ops per tensor.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


def _decay_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """Weight decay on tensors of 2+ dimensions (matmul weights, embeddings) only: decaying biases and
    LayerNorm gains towards zero only hurts."""
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights of the transformer blocks' Linear layers: the parameters Muon is for."""
    return [
        module.weight
        for module in model.blocks.modules()
        if isinstance(module, nn.Linear) and module.weight.requires_grad
    ]


def make_optimizer(model: nn.Module, cfg, device: torch.device):
    """The optimizer TrainConfig.optimizer names: adamw, or muon (+ AdamW for the other parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return _adamw(_decay_groups(params, cfg.weight_decay), cfg, device)
    if cfg.optimizer != "muon":
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (known: adamw, muon)")
    hidden = hidden_matrices(model)
    hidden_ids = {id(p) for p in hidden}
    others = [p for p in params if id(p) not in hidden_ids]
    # No weight decay for Muon: its steps have a fixed size in every direction, so the weights'
    # norm cannot run away the way Adam's can; it is what the Muon write-up used for GPT-2 speedruns.
    # lr_scale: the schedule gives AdamW's learning rate; Muon's follows it in proportion.
    muon = Muon(
        [{"params": hidden, "lr": cfg.muon_lr, "lr_scale": cfg.muon_lr / cfg.learning_rate}],
        momentum=cfg.muon_momentum,
    )
    return CombinedOptimizer(muon, _adamw(_decay_groups(others, cfg.weight_decay), cfg, device))


def set_learning_rate(optimizer, lr: float) -> None:
    """Set the schedule's learning rate on every parameter group (times the group's lr_scale, if any)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
