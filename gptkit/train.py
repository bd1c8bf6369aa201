"""Stage 2, `gptkit train`: the training loop.

    model_config, train_config = resolve_config("shakespeare-char-cpu")
    result = train(model_config, train_config)

One optimizer step is:

    for each of grad_accum micro-batches:        # gradient accumulation: a big batch in small pieces
        loss = model(x, y) / grad_accum           # under autocast (bf16/fp16) where the device has it
        loss.backward()                           # gradients add up across micro-batches
    clip the global gradient norm                 # one bad batch cannot blow up the weights
    lr = warmup, then cosine decay                # see learning_rate_at()
    AdamW step                                    # weight decay on matrices only

Every `eval_interval` steps (and at the end) it measures train/val loss on `eval_iters` fixed
batches and writes `ckpt.safetensors` (last), `best.safetensors` (lowest val loss so far) and
`resume.safetensors` (optimizer, RNGs, sampler) into the run folder. Ctrl-C or SIGTERM finishes the
current step, saves, and raises TrainingInterrupted so the CLI can say how to resume.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from gptkit.checkpoint import load_checkpoint, load_resume_state, save_checkpoint, save_resume_state
from gptkit.config import TrainConfig, apply_settings, to_toml
from gptkit.devices import Runtime, resolve_runtime
from gptkit.errors import GptkitError
from gptkit.fileio import atomic_write_text
from gptkit.model import GPT, ModelConfig
from gptkit.monitor import MetricsLog, Monitor
from gptkit.shards import Split, read_meta

CKPT_NAME = "ckpt.safetensors"
BEST_NAME = "best.safetensors"
RESUME_NAME = "resume.safetensors"


class TrainingInterrupted(GptkitError):
    """Raised after a SIGINT/SIGTERM once the run has been saved; carries the signal number."""

    def __init__(self, step: int, signum: int, out: Path):
        super().__init__(
            f"training stopped at step {step} ({signal.Signals(signum).name}); the run is saved in {out}",
            hint=f"continue it with `gptkit train --out {out} --resume`",
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


def _rng_states(batch_generator: torch.Generator) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state(), "batches": batch_generator.get_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda{i}"] = state
    return states


def _restore_rng_states(states: dict[str, torch.Tensor], batch_generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    batch_generator.set_state(states["batches"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def resume_config(out: str | Path, train_overrides: dict) -> tuple[ModelConfig, TrainConfig]:
    """The configs of the run saved in `out`, with the options given again on the command line on top
    (typically --max-iters to train longer). The model's shape always comes from the checkpoint."""
    checkpoint = load_checkpoint(Path(out) / CKPT_NAME)
    saved = {k: v for k, v in checkpoint.train_config.items() if k in TrainConfig.__dataclass_fields__}
    cfg = apply_settings(TrainConfig(), saved, f"{out}/{CKPT_NAME}")
    return checkpoint.model_config, apply_settings(cfg, train_overrides, "options")


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    ckpt = out / CKPT_NAME
    if resume:
        for name in (CKPT_NAME, RESUME_NAME):
            if not (out / name).is_file():
                raise GptkitError(f"cannot resume: {out / name} does not exist", hint="start a run without --resume")
    elif ckpt.exists() and not overwrite:
        raise GptkitError(
            f"{out} already holds a training run ({CKPT_NAME})",
            hint="pass --resume to continue it, --overwrite to start afresh, or choose another --out",
        )


def train(
    model_config: ModelConfig,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    monitor: Monitor | None = None,
) -> TrainResult:
    """Train a GPT on the data folder `cfg.data`, writing the run into `cfg.out`."""
    monitor = monitor or Monitor()
    out = Path(cfg.out)
    check_run_folder(out, resume, overwrite)
    runtime = resolve_runtime(cfg.device, cfg.dtype)
    meta = read_meta(cfg.data)
    train_split = Split.open(cfg.data, "train", meta)
    val_split = Split.open(cfg.data, "val", meta)

    resumed = None
    if resume:
        resumed = load_checkpoint(out / CKPT_NAME)
        if resumed.tokenizer_spec != meta["tokenizer"]:
            raise GptkitError(
                f"the data in {cfg.data} was tokenized differently from the run being resumed in {out}",
                hint="resume with the data folder the run was started on (see config.toml)",
            )
        model_config = resumed.model_config
    else:
        model_config = replace(model_config, vocab_size=meta["vocab_size"])
    for split in (train_split, val_split):
        split.check_fits(model_config.block_size)

    torch.manual_seed(cfg.seed)
    model = GPT(model_config).to(runtime.device)
    if resumed is not None:
        model.load_state_dict(resumed.state_dict)
    optimizer = make_optimizer(model, cfg, runtime.device)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_grad_scaler)
    batch_generator = torch.Generator().manual_seed(cfg.seed)
    step, best_val_loss = 0, None
    if resumed is not None:
        optimizer_state, step, rng, extra = load_resume_state(out / RESUME_NAME)
        if step != resumed.step:
            raise GptkitError(f"{out / RESUME_NAME} (step {step}) does not belong to {out / CKPT_NAME} (step {resumed.step})")
        optimizer.load_state_dict(optimizer_state)
        _restore_rng_states(rng, batch_generator)
        best_val_loss = extra.get("best_val_loss")
        if extra.get("grad_scaler"):
            scaler.load_state_dict(extra["grad_scaler"])
    forward = torch.compile(model) if cfg.compile else model

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", to_toml(model_config, cfg))
    metrics = MetricsLog(out / "metrics.jsonl", keep_until_step=step if resumed else None)
    tokens_per_step = cfg.batch_size * model_config.block_size * cfg.grad_accum
    train_config_dict = asdict(cfg)
    tokenizer_spec = meta["tokenizer"]

    def save(step: int, train_loss: float | None, val_loss: float | None) -> bool:
        nonlocal best_val_loss
        save_checkpoint(out / CKPT_NAME, model, tokenizer_spec, step, train_loss, val_loss, train_config_dict)
        is_best = val_loss is not None and (best_val_loss is None or val_loss < best_val_loss)
        if is_best:
            best_val_loss = val_loss
            save_checkpoint(out / BEST_NAME, model, tokenizer_spec, step, train_loss, val_loss, train_config_dict)
        extra = {"best_val_loss": best_val_loss, "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None}
        save_resume_state(out / RESUME_NAME, optimizer, step, _rng_states(batch_generator), extra)
        return is_best

    def evaluate_and_save(step: int) -> tuple[float, float]:
        train_loss = estimate_loss(forward, train_split, cfg, model_config.block_size, runtime)
        val_loss = estimate_loss(forward, val_split, cfg, model_config.block_size, runtime)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):  # never save a diverged model
            raise GptkitError(
                f"the evaluation loss became {val_loss if math.isfinite(train_loss) else train_loss} at step {step}; "
                "stopped without saving this model",
                hint="lower --learning-rate, keep --grad-clip on, or resume from the last checkpoint",
            )
        is_best = save(step, train_loss, val_loss)
        metrics.write({"step": step, "train_loss": train_loss, "val_loss": val_loss})
        monitor.evaluation({"step": step, "train_loss": train_loss, "val_loss": val_loss, "best": is_best})
        return train_loss, val_loss

    monitor.message(
        f"model: {model.num_params() / 1e6:.2f}M parameters | device: {runtime.describe()} | "
        f"{tokens_per_step:,} tokens per step | data: {train_split.num_tokens:,} train tokens"
    )
    monitor.start(cfg.max_iters, step)
    train_loss = val_loss = None
    start_step, started = step, time.perf_counter()
    window_start, window_steps, loss_sum = time.perf_counter(), 0, torch.zeros((), device=runtime.device)
    model.train()
    try:
        with _StopSignal() as stop:
            while step < cfg.max_iters:
                lr = learning_rate_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                for _ in range(cfg.grad_accum):
                    x, y = train_split.sample_batch(cfg.batch_size, model_config.block_size, batch_generator)
                    x = x.to(runtime.device, non_blocking=True)
                    y = y.to(runtime.device, non_blocking=True)
                    with runtime.autocast:
                        _, loss = forward(x, y)
                    scaler.scale(loss / cfg.grad_accum).backward()
                    loss_sum += loss.detach() / cfg.grad_accum
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                window_steps += 1

                if step % cfg.log_interval == 0 or step == cfg.max_iters:
                    mean_loss = loss_sum.item() / window_steps  # .item() waits for the GPU: only here
                    elapsed = time.perf_counter() - window_start
                    ms_per_iter = 1000 * elapsed / window_steps
                    record = {
                        "step": step,
                        "loss": mean_loss,
                        "lr": lr,
                        "tokens_per_sec": tokens_per_step * window_steps / elapsed,
                        "ms_per_iter": ms_per_iter,
                        "eta_s": (cfg.max_iters - step) * ms_per_iter / 1000,
                    }
                    if not math.isfinite(mean_loss):
                        raise GptkitError(
                            f"the loss became {mean_loss} at step {step}; stopped without saving this model",
                            hint="lower --learning-rate, keep --grad-clip on, or resume from the last checkpoint",
                        )
                    metrics.write({k: record[k] for k in ("step", "loss", "lr", "tokens_per_sec", "ms_per_iter")})
                    monitor.step(record)
                    window_start, window_steps, loss_sum = time.perf_counter(), 0, torch.zeros_like(loss_sum)

                if step % cfg.eval_interval == 0 or step == cfg.max_iters:
                    train_loss, val_loss = evaluate_and_save(step)
                    window_start = time.perf_counter()  # don't count evaluation as training time
                if stop.signum is not None:
                    if step % cfg.eval_interval != 0 and step != cfg.max_iters:
                        save(step, None, None)
                    raise TrainingInterrupted(step, stop.signum, out)
            if step == start_step and resumed is not None:
                monitor.message(f"the run is already at step {step} (max_iters {cfg.max_iters}); nothing to do")
                train_loss, val_loss = resumed.train_loss, resumed.val_loss
    finally:
        monitor.close()
        metrics.close()

    elapsed = time.perf_counter() - started
    steps_done = max(step - start_step, 1)
    return TrainResult(
        step=step,
        train_loss=train_loss,
        val_loss=val_loss,
        best_val_loss=best_val_loss,
        elapsed_s=elapsed,
        tokens_per_sec=tokens_per_step * steps_done / elapsed,
        ms_per_iter=1000 * elapsed / steps_done,
        out=out,
    )
