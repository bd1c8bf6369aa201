"""The training loop: steps, evaluation, saving, progress reports and signals.

    while state.step < cfg.max_iters:
        stats = train_step(state, model, cfg)             # train_step.py
        report progress every log_interval steps          # monitor.py, metrics.jsonl
        evaluate and save every eval_interval steps       # train_state.py -> run_folder.py
        on SIGINT/SIGTERM: save, raise TrainingInterrupted

fit() knows nothing of where the model, the data or the run folder came from: train() (pretraining)
builds them, and a fine-tuning command builds its own and calls the same loop.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from gptkit import distributed
from gptkit.devices import peak_memory_bytes
from gptkit.errors import GptkitError
from gptkit.loss_guard import BadLoss
from gptkit.monitor import Monitor
from gptkit.run_folder import CKPT_NAME, resume_command
from gptkit.train_state import TrainState
from gptkit.train_step import Batch, ParallelModel, StepStats, estimate_loss, train_step


class TrainingInterrupted(GptkitError):
    """Raised after a SIGINT/SIGTERM once the run has been saved; carries the signal number."""

    def __init__(self, step: int, signum: int, out: Path):
        super().__init__(
            f"training stopped at step {step} ({signal.Signals(signum).name}); the run is saved in {out}",
            hint=f"continue it with `{resume_command(out)}`",
        )
        self.signum = signum


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so a save is never torn."""

    def __init__(self):
        self.signum: int | None = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C: stop right now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _Window:
    """Measures summed over the steps since the last progress report."""

    def __init__(self):
        self.start, self.steps, self.updates, self.skipped = time.perf_counter(), 0, 0, 0
        self.loss_sum = self.grad_norm_sum = 0.0

    def add(self, stats: StepStats) -> None:
        self.steps += 1
        if stats.skipped is None:
            self.updates += 1
            self.loss_sum += stats.loss
            self.grad_norm_sum += stats.grad_norm
        else:
            self.skipped += 1

    def mean_loss(self) -> float | None:
        return self.loss_sum / self.updates if self.updates else None

    def mean_grad_norm(self) -> float | None:
        return self.grad_norm_sum / self.updates if self.updates else None


def weights_are_finite(model: torch.nn.Module) -> bool:
    """Of this process's weights: under FSDP, its shards (all ranks agree before a save)."""
    return all(bool(torch.isfinite(distributed.local(p)).all()) for p in model.parameters())


@dataclass
class FitResult:
    train_loss: float | None  # of the last evaluation (None when the loop ran no step)
    val_loss: float | None
    steps_done: int


# write(state_dict, train_loss, val_loss, is_best): put a saved step where it belongs (rank 0 only).
Writer = Callable[[dict, "float | None", "float | None", bool], None]


def fit(
    state: TrainState,
    model: ParallelModel,
    cfg,
    *,
    eval_batches: dict[str, Callable[[], Iterable[Batch]]],
    write: Writer,
    out: Path,
    monitor: Monitor,
    log: Callable[[dict], None],
    tokens_per_step: int,
    peak_flops: float | None = None,
    last_saved: int | None = None,
) -> FitResult:
    """Train `state` to cfg.max_iters. eval_batches: the splits to evaluate ("train" and "val"), each
    a callable giving the same batches every time. `last_saved`: the step already on disk, if any.
    Raises TrainingInterrupted after a signal (saved) and BadLoss (nothing saved after the last good step)."""
    ctx, device = model.ctx, model.runtime.device
    flops_per_token = state.model.flops_per_token() if peak_flops else None

    def refuse_broken_weights() -> None:
        # never replace a good checkpoint with a broken model (all ranks agree, so all stop together)
        if ctx.any(not weights_are_finite(state.model), device):
            where = f"{out / CKPT_NAME} still holds step {last_saved}" if last_saved is not None else "nothing was saved"
            raise BadLoss(
                f"the model's weights hold NaN or inf at step {state.step}; not saved ({where})",
                hint="lower the learning rate, keep --grad-clip on, and resume from the last checkpoint",
            )

    def save(train_loss: float | None, val_loss: float | None) -> bool:
        nonlocal last_saved
        refuse_broken_weights()
        is_best = val_loss is not None and (state.best_val_loss is None or val_loss < state.best_val_loss)
        if is_best:
            state.best_val_loss = val_loss
        saved = state.state_dict()  # under FSDP every rank takes part in gathering the full tensors
        if ctx.is_main:
            write(saved, train_loss, val_loss, is_best)
        last_saved = state.step
        return is_best

    def evaluate_and_save() -> tuple[float, float]:
        refuse_broken_weights()  # first: broken weights are the cause, a NaN evaluation only the symptom
        train_loss = estimate_loss(model, eval_batches["train"])
        val_loss = estimate_loss(model, eval_batches["val"])
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):  # never save a diverged model
            raise BadLoss(
                f"the evaluation loss became {val_loss if math.isfinite(train_loss) else train_loss} at step {state.step}; "
                "stopped without saving this model",
                hint="lower --learning-rate, keep --grad-clip on, or resume from the last checkpoint",
            )
        is_best = save(train_loss, val_loss)
        record = {"step": state.step, "train_loss": train_loss, "val_loss": val_loss}
        log(record)
        monitor.evaluation({**record, "best": is_best})
        return train_loss, val_loss

    def report_progress(lr: float, window: _Window) -> None:
        seconds = time.perf_counter() - window.start
        ms_per_iter = 1000 * seconds / window.steps
        record = {
            "step": state.step,
            "loss": window.mean_loss(),
            "lr": lr,
            "grad_norm": window.mean_grad_norm(),
            "tokens_per_sec": tokens_per_step * window.steps / seconds,
            "ms_per_iter": ms_per_iter,
            "elapsed_s": round(state.elapsed_s, 3),
        }
        if peak_flops:
            record["mfu"] = flops_per_token * record["tokens_per_sec"] / peak_flops
        memory = peak_memory_bytes(device)
        if memory is not None:
            record["peak_memory_mb"] = round(memory / 2**20, 1)
        if window.skipped:
            record["skipped"] = window.skipped
        log(record)
        monitor.step({**record, "eta_s": (cfg.max_iters - state.step) * ms_per_iter / 1000})

    monitor.start(cfg.max_iters, state.step)
    train_loss = val_loss = None
    start_step = state.step
    window = _Window()
    model.wrapped.train()
    try:
        with _StopSignal() as stop:
            while state.step < cfg.max_iters:
                stats = train_step(state, model, cfg)
                window.add(stats)
                if stats.skipped is not None:
                    log({"step": stats.step, "event": "skipped", "reason": stats.skipped})
                    monitor.message(f"step {stats.step}: {stats.skipped}; update skipped")
                if stats.step % cfg.log_interval == 0 or stats.step == cfg.max_iters:
                    report_progress(stats.lr, window)
                    window = _Window()
                if stats.step % cfg.eval_interval == 0 or stats.step == cfg.max_iters:
                    train_loss, val_loss = evaluate_and_save()
                    window.start = time.perf_counter()  # don't count evaluation as training time
                if ctx.any(stop.signum is not None, device):  # all ranks stop at the same step
                    signum = stop.signum or signal.SIGTERM
                    if window.steps:
                        report_progress(stats.lr, window)
                    if last_saved != state.step:
                        save(None, None)
                    log({"step": state.step, "event": "interrupted", "signal": signal.Signals(signum).name})
                    raise TrainingInterrupted(state.step, signum, out)
        ctx.barrier()  # under torchrun: no rank tears the process group down while rank 0 still saves
    except BadLoss as e:
        if last_saved is not None:
            e.hint += f"; the last checkpoint is step {last_saved}: `{resume_command(out)}` continues from it"
        raise
    return FitResult(train_loss, val_loss, state.step - start_step)
