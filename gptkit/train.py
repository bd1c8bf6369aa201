"""Stage 2, `gptkit train`: the training loop.

    model_config, train_config = resolve_config("shakespeare-char-cpu")
    result = train(model_config, train_config)

One optimizer step is:

    for each of grad_accum micro-batches:        # gradient accumulation: a big batch in small pieces
        loss = model(x, y) / grad_accum           # under autocast (bf16/fp16) where the device has it
        loss.backward()                           # gradients add up across micro-batches
    clip the global gradient norm                 # one bad batch cannot blow up the weights
    ask the loss guard                            # NaN/inf or a spike: skip the update, or stop
    lr = warmup, then cosine decay                # see learning_rate_at()
    AdamW step                                    # weight decay on matrices only

Before the first step, preflight.py checks the config, data and run folder and reports every problem
at once. Every `eval_interval` steps (and at the end) it measures train/val loss on `eval_iters`
fixed batches and saves the step into the run folder (run_folder.py): a checkpoint and the resume
state (optimizer, every RNG, the sampler's position, the grad scaler, the loss guard), so that a
resumed run continues bitwise as if it had never stopped. Ctrl-C or SIGTERM finishes the current
step, saves, and raises TrainingInterrupted, which tells how to resume.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gptkit.checkpoint import DamagedFile, peek_checkpoint
from gptkit.config import TrainConfig, apply_settings, to_toml
from gptkit.devices import Runtime, peak_flops, peak_memory_bytes
from gptkit.errors import GptkitError
from gptkit.fileio import atomic_write_text
from gptkit.loss_guard import BadLoss, LossGuard
from gptkit.model import GPT, ModelConfig
from gptkit.monitor import MetricsLog, Monitor, TensorBoardLog
from gptkit.preflight import plan_run
from gptkit.run_folder import (
    BEST_NAME,
    CKPT_NAME,
    TENSORBOARD_DIR,
    best_saved_val_loss,
    find_resume_point,
    prepare_run_folder,
    resume_command,
    save_training_state,
    with_last_good_step,
)
from gptkit.shards import Split

__all__ = ["BEST_NAME", "CKPT_NAME", "TrainResult", "TrainingInterrupted", "resume_config", "train"]


class TrainingInterrupted(GptkitError):
    """Raised after a SIGINT/SIGTERM once the run has been saved; carries the signal number."""

    def __init__(self, step: int, signum: int, out: Path):
        super().__init__(
            f"training stopped at step {step} ({signal.Signals(signum).name}); the run is saved in {out}",
            hint=f"continue it with `{resume_command(out)}`",
        )
        self.signum = signum


@dataclass
class TrainResult:
    step: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    elapsed_s: float
    tokens_per_sec: float
    ms_per_iter: float
    out: Path


def learning_rate_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup for `warmup_iters` steps, then cosine decay to `min_lr` at `lr_decay_iters`.

    Warmup keeps the first, noisy Adam updates small; cosine decay anneals into a minimum.
    """
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(decay_iters - cfg.warmup_iters, 1)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on tensors of 2+ dimensions (matmul weights, embeddings) only:
    decaying biases and LayerNorm gains towards zero only hurts."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # The fused kernel updates all tensors in one pass instead of a dozen ops per tensor.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


@torch.no_grad()
def estimate_loss(model: GPT, split: Split, cfg: TrainConfig, block_size: int, runtime: Runtime) -> float:
    """Mean loss over `eval_iters` batches. The batches are the same at every evaluation (a fixed
    seed), so successive val losses differ because the model changed, not because the data did."""
    model.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    total = 0.0
    for _ in range(cfg.eval_iters):
        x, y = split.sample_batch(cfg.batch_size, block_size, generator)
        with runtime.autocast:
            _, loss = model(x.to(runtime.device), y.to(runtime.device))
        total += loss.item()
    model.train()
    return total / cfg.eval_iters


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


def capture_rng_states(batch_generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict]:
    """Every random number generator a run draws from, as tensors and JSON: torch's (dropout), the
    batch sampler's (its state *is* the loader's position), CUDA's, and Python's and NumPy's (gptkit
    draws from neither, but code run inside the loop might)."""
    tensors = {"torch": torch.get_rng_state(), "batches": batch_generator.get_state()}
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


def restore_rng_states(tensors: dict[str, torch.Tensor], states: dict, batch_generator: torch.Generator) -> None:
    torch.set_rng_state(tensors["torch"])
    batch_generator.set_state(tensors["batches"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def resume_config(out: str | Path, train_overrides: dict, step: int | None = None) -> tuple[ModelConfig, TrainConfig]:
    """The configs of the run saved in `out` (at `step`, else its newest step), with the options given
    again on the command line on top (typically --max-iters to train longer). The model's shape always
    comes from the checkpoint. Reads only the checkpoint's header; train() verifies the files."""
    point = find_resume_point(out, step)
    try:
        checkpoint = peek_checkpoint(point.checkpoint)
    except DamagedFile as e:
        raise with_last_good_step(e, out, point.step) from None
    saved = {k: v for k, v in checkpoint.train_config.items() if k in TrainConfig.__dataclass_fields__}
    cfg = apply_settings(TrainConfig(), saved, str(point.checkpoint))
    return checkpoint.model_config, apply_settings(cfg, train_overrides, "options")


class _Window:
    """Measures summed over the steps since the last progress report."""

    def __init__(self):
        self.start, self.steps, self.updates, self.skipped = time.perf_counter(), 0, 0, 0
        self.loss_sum = self.grad_norm_sum = 0.0

    def mean_loss(self) -> float | None:
        return self.loss_sum / self.updates if self.updates else None

    def mean_grad_norm(self) -> float | None:
        return self.grad_norm_sum / self.updates if self.updates else None


def weights_are_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train(
    model_config: ModelConfig,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    resume_from: int | None = None,
    monitor: Monitor | None = None,
) -> TrainResult:
    """Train a GPT on the data folder `cfg.data`, writing the run into `cfg.out`.

    resume continues the newest saved step of `cfg.out`, resume_from=N the saved step N (the steps
    after it are deleted: the run redoes them). Raises GptkitError listing every problem it finds
    before starting, TrainingInterrupted after a SIGINT/SIGTERM (saved), BadLoss when the loss guard
    stops the run (nothing saved after the last good checkpoint)."""
    monitor = monitor or Monitor()
    plan = plan_run(model_config, cfg, resume=resume, overwrite=overwrite, resume_from=resume_from)
    out, runtime, model_config = plan.out, plan.runtime, plan.model_config
    train_split, val_split = plan.splits["train"], plan.splits["val"]
    resumed = plan.checkpoint
    for note in prepare_run_folder(out, plan.resume_point):
        monitor.message(note)

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = GPT(model_config).to(runtime.device)
    if resumed is not None:
        model.load_state_dict(resumed.state_dict)
    optimizer = make_optimizer(model, cfg, runtime.device)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_grad_scaler)
    batch_generator = torch.Generator().manual_seed(cfg.seed)
    step, best_val_loss, extra = 0, None, {}
    if plan.resume_state is not None:
        optimizer_state, step, rng, extra = plan.resume_state
        optimizer.load_state_dict(optimizer_state)
        restore_rng_states(rng, extra.get("rng", {}), batch_generator)
        best_val_loss = extra.get("best_val_loss")
        if extra.get("grad_scaler"):
            scaler.load_state_dict(extra["grad_scaler"])
    # best.safetensors is replaced only by a better model, even one from steps a --resume-from undid.
    on_disk = best_saved_val_loss(out) if resumed is not None else None
    if on_disk is not None and (best_val_loss is None or on_disk < best_val_loss):
        best_val_loss = on_disk
    guard = LossGuard(cfg.on_bad_loss, cfg.loss_spike_factor, cfg.max_bad_steps, extra.get("loss_guard"))
    forward = torch.compile(model) if cfg.compile else model

    atomic_write_text(out / "config.toml", to_toml(model_config, cfg))
    sinks = [MetricsLog(out / "metrics.jsonl", keep_until_step=step if resumed else None)]
    if cfg.tensorboard:
        sinks.append(TensorBoardLog(out / TENSORBOARD_DIR, purge_step=step + 1 if resumed else None))

    def log(record: dict) -> None:
        for sink in sinks:
            sink.write(record)

    tokens_per_step = cfg.batch_size * model_config.block_size * cfg.grad_accum
    flops_per_token, peak = model.flops_per_token(), peak_flops(runtime)
    train_config_dict = asdict(cfg)
    tokenizer_spec = plan.meta["tokenizer"]
    elapsed_before, started = float(extra.get("elapsed_s", 0.0)), time.perf_counter()
    last_saved = step if resumed else None

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def refuse_broken_weights(step: int) -> None:
        if not weights_are_finite(model):  # never replace a good checkpoint with a broken model
            where = f"{out / CKPT_NAME} still holds step {last_saved}" if last_saved is not None else "nothing was saved"
            raise BadLoss(
                f"the model's weights hold NaN or inf at step {step}; not saved ({where})",
                hint="lower the learning rate, keep --grad-clip on, and resume from the last checkpoint",
            )

    def save(step: int, train_loss: float | None, val_loss: float | None) -> bool:
        nonlocal best_val_loss, last_saved
        refuse_broken_weights(step)
        is_best = val_loss is not None and (best_val_loss is None or val_loss < best_val_loss)
        rng_tensors, rng_states = capture_rng_states(batch_generator)
        state = {
            "best_val_loss": val_loss if is_best else best_val_loss,
            "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": rng_states,
            "loss_guard": guard.state(),
            "elapsed_s": elapsed(),
        }
        save_training_state(
            out, model, optimizer, tokenizer_spec, step, train_loss, val_loss, train_config_dict,
            rng_tensors, state, cfg.keep_checkpoints, is_best,
        )
        best_val_loss, last_saved = state["best_val_loss"], step
        return is_best

    def evaluate_and_save(step: int) -> tuple[float, float]:
        refuse_broken_weights(step)  # first: broken weights are the cause, a NaN evaluation only the symptom
        train_loss = estimate_loss(forward, train_split, cfg, model_config.block_size, runtime)
        val_loss = estimate_loss(forward, val_split, cfg, model_config.block_size, runtime)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):  # never save a diverged model
            raise BadLoss(
                f"the evaluation loss became {val_loss if math.isfinite(train_loss) else train_loss} at step {step}; "
                "stopped without saving this model",
                hint="lower --learning-rate, keep --grad-clip on, or resume from the last checkpoint",
            )
        is_best = save(step, train_loss, val_loss)
        log({"step": step, "train_loss": train_loss, "val_loss": val_loss})
        monitor.evaluation({"step": step, "train_loss": train_loss, "val_loss": val_loss, "best": is_best})
        return train_loss, val_loss

    def report_progress(step: int, lr: float, window: _Window) -> None:
        seconds = time.perf_counter() - window.start
        ms_per_iter = 1000 * seconds / window.steps
        record = {
            "step": step,
            "loss": window.mean_loss(),
            "lr": lr,
            "grad_norm": window.mean_grad_norm(),
            "tokens_per_sec": tokens_per_step * window.steps / seconds,
            "ms_per_iter": ms_per_iter,
            "elapsed_s": round(elapsed(), 3),
        }
        if peak:
            record["mfu"] = flops_per_token * record["tokens_per_sec"] / peak
        memory = peak_memory_bytes(runtime.device)
        if memory is not None:
            record["peak_memory_mb"] = round(memory / 2**20, 1)
        if window.skipped:
            record["skipped"] = window.skipped
        log(record)
        monitor.step({**record, "eta_s": (cfg.max_iters - step) * ms_per_iter / 1000})

    monitor.message(
        f"model: {model.num_params() / 1e6:.2f}M parameters | device: {runtime.describe()} | "
        f"{tokens_per_step:,} tokens per step | data: {train_split.num_tokens:,} train tokens"
    )
    if resumed is not None:
        log({"step": step, "event": "resumed"})
        monitor.message(f"resumed from step {step} ({plan.resume_point.checkpoint})")
    monitor.start(cfg.max_iters, step)
    train_loss = val_loss = None
    start_step = step
    window = _Window()
    model.train()
    try:
        with _StopSignal() as stop:
            while step < cfg.max_iters:
                lr = learning_rate_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_loss = torch.zeros((), device=runtime.device)
                for _ in range(cfg.grad_accum):
                    x, y = train_split.sample_batch(cfg.batch_size, model_config.block_size, batch_generator)
                    x = x.to(runtime.device, non_blocking=True)
                    y = y.to(runtime.device, non_blocking=True)
                    with runtime.autocast:
                        _, loss = forward(x, y)
                    scaler.scale(loss / cfg.grad_accum).backward()
                    step_loss += loss.detach() / cfg.grad_accum
                scaler.unscale_(optimizer)  # true gradients for the norm (a no-op without float16's scaler)
                # With max_norm=inf the norm is measured and the gradients are left as they are.
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
                # One wait for the device per step: the guard must see the loss before the update.
                loss_value, norm_value = torch.stack([step_loss.float(), grad_norm.float()]).tolist()
                step += 1
                window.steps += 1
                problem = guard.check(step, loss_value, norm_value, check_grad_norm=not scaler.is_enabled())
                if problem is None:
                    scaler.step(optimizer)
                    window.updates += 1
                    window.loss_sum += loss_value
                    window.grad_norm_sum += norm_value
                else:
                    window.skipped += 1
                    log({"step": step, "event": "skipped", "reason": problem})
                    monitor.message(f"step {step}: {problem}; update skipped")
                scaler.update()
                optimizer.zero_grad(set_to_none=True)

                if step % cfg.log_interval == 0 or step == cfg.max_iters:
                    report_progress(step, lr, window)
                    window = _Window()
                if step % cfg.eval_interval == 0 or step == cfg.max_iters:
                    train_loss, val_loss = evaluate_and_save(step)
                    window.start = time.perf_counter()  # don't count evaluation as training time
                if stop.signum is not None:
                    if window.steps:
                        report_progress(step, lr, window)
                    if last_saved != step:
                        save(step, None, None)
                    log({"step": step, "event": "interrupted", "signal": signal.Signals(stop.signum).name})
                    raise TrainingInterrupted(step, stop.signum, out)
            if step == start_step and resumed is not None:
                monitor.message(f"the run is already at step {step} (max_iters {cfg.max_iters}); nothing to do")
                train_loss, val_loss = resumed.train_loss, resumed.val_loss
    except BadLoss as e:
        if last_saved is not None:
            e.hint += f"; the last checkpoint is step {last_saved}: `{resume_command(out)}` continues from it"
        raise
    finally:
        monitor.close()
        for sink in sinks:
            sink.close()

    seconds = time.perf_counter() - started
    steps_done = max(step - start_step, 1)
    return TrainResult(
        step=step,
        train_loss=train_loss,
        val_loss=val_loss,
        best_val_loss=best_val_loss,
        elapsed_s=seconds,
        tokens_per_sec=tokens_per_step * steps_done / seconds,
        ms_per_iter=1000 * seconds / steps_done,
        out=out,
    )
