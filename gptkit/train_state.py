"""What a training run is at one step, in one place: TrainState, and how it maps onto the resume files.

    state = TrainState(model, optimizer, scaler, guard, loader)
    saved = state.state_dict()        # step, model, optimizer, grad_scaler, loss_guard, loader, rng,
    state.load_state_dict(saved)      #   best_val_loss, elapsed_s
    write_to_run_folder(out, saved, model, ...)    # ckpt + resume state (run_folder.py, checkpoint.py)
    saved = from_resume_files(checkpoint, resume)  # and back, from what preflight.py verified

A resumed run continues bitwise as if it had never stopped only if every piece of state a step reads
comes back: the weights, the optimizer's moments, the float16 grad scaler, the loss guard's memory,
the sampler's position, and every random number generator (torch's drives dropout). The files on
disk keep the layout of earlier gptkit versions (rng tensors "torch", "batches", "cuda<i>"; JSON
"extra" with best_val_loss, grad_scaler, rng, loss_guard, elapsed_s, loader), so their runs resume.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from gptkit import distributed
from gptkit.checkpoint import Checkpoint
from gptkit.loss_guard import LossGuard
from gptkit.run_folder import save_training_state


def capture_rng_states() -> tuple[dict[str, torch.Tensor], dict]:
    """Every global random number generator, as tensors and JSON: torch's (dropout), CUDA's, and
    Python's and NumPy's (gptkit draws from neither, but code run inside the loop might). The batch
    sampler's own generator is the loader's state (loader.py)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, states


def restore_rng_states(tensors: dict[str, torch.Tensor], states: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    # In device order: sorted() by name would put cuda10 before cuda2 on machines with 11+ GPUs.
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda")), key=lambda k: int(k[4:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


class TrainState:
    """The model and everything besides it that the next step depends on.

    `model` is the plain module (not the DDP wrapper); under FSDP state_dict() gathers full tensors,
    a collective every rank must call (rank 0 receives them, the others empty dicts)."""

    def __init__(self, model, optimizer, scaler: torch.amp.GradScaler, guard: LossGuard, loader):
        self.model, self.optimizer, self.scaler, self.guard, self.loader = model, optimizer, scaler, guard, loader
        self.step = 0  # optimizer steps done
        self.best_val_loss: float | None = None
        self._elapsed_before, self._clock = 0.0, time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        """Training time over the whole run, the time before a resume included."""
        return self._elapsed_before + time.perf_counter() - self._clock

    def state_dict(self) -> dict:
        rng_tensors, rng_states = capture_rng_states()
        return {
            "step": self.step,
            "model": distributed.full_model_state(self.model),
            "optimizer": distributed.full_optimizer_state(self.model, self.optimizer),
            "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "loss_guard": self.guard.state(),
            "loader": self.loader.state_dict(),
            "rng": {**rng_tensors, **rng_states},
            "best_val_loss": self.best_val_loss,
            "elapsed_s": self.elapsed_s,
        }

    def load_state_dict(self, state: dict, load_weights: bool = True) -> None:
        """Restore a state_dict(). load_weights=False when the weights are already in (train() loads
        them before wrapping the model for DDP/FSDP)."""
        if load_weights:
            self.model.load_state_dict(state["model"])
        self.step = int(state["step"])
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.guard.load_state(state.get("loss_guard"))
        self.loader.load_state_dict(state.get("loader") or {})
        rng = state["rng"]
        restore_rng_states({k: v for k, v in rng.items() if isinstance(v, torch.Tensor)}, rng)
        self.best_val_loss = state.get("best_val_loss")
        self._elapsed_before, self._clock = float(state.get("elapsed_s", 0.0)), time.perf_counter()


# ---------------------------------------------------------------------------------------------------
# The state on disk: a checkpoint (weights) and a resume state (the rest), see run_folder.py


def to_resume_files(state: dict) -> tuple[dict[str, torch.Tensor], dict, int, dict[str, torch.Tensor], dict]:
    """A state_dict() as the files hold it: (weights, optimizer state, step, rng tensors, extra JSON)."""
    rng_tensors = {k: v for k, v in state["rng"].items() if isinstance(v, torch.Tensor)}
    loader = dict(state["loader"])
    if "generator" in loader:  # the random sampler's generator: the "batches" RNG tensor
        rng_tensors["batches"] = loader.pop("generator")
    extra = {
        "best_val_loss": state["best_val_loss"],
        "grad_scaler": state["grad_scaler"],
        "rng": {k: v for k, v in state["rng"].items() if not isinstance(v, torch.Tensor)},
        "loss_guard": state["loss_guard"],
        "elapsed_s": state["elapsed_s"],
    }
    if loader:  # the epoch samplers' position
        extra["loader"] = loader
    return state["model"], state["optimizer"], state["step"], rng_tensors, extra


def from_resume_files(checkpoint: Checkpoint, resume: tuple[dict, int, dict[str, torch.Tensor], dict]) -> dict:
    """A state_dict() from a verified checkpoint and its resume state (run_folder.load_resume_point)."""
    optimizer_state, step, rng, extra = resume
    rng = dict(rng)
    loader = dict(extra.get("loader") or {})
    if "batches" in rng:
        loader["generator"] = rng.pop("batches")
    return {
        "step": step,
        "model": checkpoint.state_dict,
        "optimizer": optimizer_state,
        "grad_scaler": extra.get("grad_scaler"),
        "loss_guard": extra.get("loss_guard"),
        "loader": loader,
        "rng": {**rng, **extra.get("rng", {})},
        "best_val_loss": extra.get("best_val_loss"),
        "elapsed_s": float(extra.get("elapsed_s", 0.0)),
    }


def write_to_run_folder(
    out: Path, state: dict, model, tokenizer_spec: dict, train_loss: float | None, val_loss: float | None,
    train_config: dict, keep: int, is_best: bool, chat_template: dict | None = None,
) -> None:
    """Save a state_dict() as its step in the run folder (rank 0 only)."""
    weights, optimizer_state, step, rng, extra = to_resume_files(state)
    save_training_state(
        out, model, optimizer_state, tokenizer_spec, step, train_loss, val_loss, train_config,
        rng, extra, keep, is_best, weights=weights, chat_template=chat_template,
    )
