"""Stage 2, `gptkit train`: the training loop.

    model_config, train_config = resolve_config("shakespeare-char-cpu")
    result = train(model_config, train_config)

One optimizer step is:

    for each of grad_accum micro-batches:        # gradient accumulation: a big batch in small pieces
        loss = model(x, y) / grad_accum           # under autocast (bf16/fp16) where the device has it
        loss.backward()                           # gradients add up across micro-batches
    clip the global gradient norm                 # one bad batch cannot blow up the weights
    ask the loss guard                            # NaN/inf or a spike: skip the update, or stop
    lr = warmup, then decay                       # schedule.py: cosine, linear, constant, wsd
    AdamW (or Muon) step                          # optim.py; weight decay on matrices only

Batches come from loader.py (random windows, or shuffled epochs). Under torchrun every rank runs this
same loop on its own slice of each batch, with the plumbing in distributed.py: DDP or FSDP wraps the
model, gradients are averaged once per step, and rank 0 alone logs and writes files.

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

from gptkit import distributed
from gptkit.config import TrainConfig, to_toml
from gptkit.devices import Runtime, compile_enabled, peak_flops, peak_memory_bytes
from gptkit.distributed import Distributed
from gptkit.errors import GptkitError, UsageError
from gptkit.fileio import atomic_write_text
from gptkit.loader import RandomBatches, make_loader
from gptkit.loss_guard import BadLoss, LossGuard
from gptkit.model import GPT, ModelConfig
from gptkit.monitor import MetricsLog, Monitor, TensorBoardLog
from gptkit.optim import make_optimizer, set_learning_rate
from gptkit.preflight import plan_run
from gptkit.run_folder import (
    BEST_NAME,
    CKPT_NAME,
    TENSORBOARD_DIR,
    best_saved_val_loss,
    prepare_run_folder,
    resume_command,
    save_training_state,
)
from gptkit.schedule import learning_rate_at
from gptkit.shards import Split

__all__ = ["BEST_NAME", "CKPT_NAME", "TrainResult", "TrainingInterrupted", "train"]


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


@torch.no_grad()
def estimate_loss(
    model: GPT, split: Split, cfg: TrainConfig, block_size: int, runtime: Runtime, ctx: Distributed | None = None
) -> float:
    """Mean loss over `eval_iters` batches. The batches are the same at every evaluation (a fixed
    seed), so successive val losses differ because the model changed, not because the data did.
    Under torchrun each rank evaluates its slice of every batch and the ranks average their means."""
    ctx = ctx or Distributed()
    model.eval()
    batches = RandomBatches(split, cfg.batch_size, block_size, cfg.seed + 1, ctx.rank, ctx.world_size)
    total = 0.0
    for _ in range(cfg.eval_iters):
        x, y = batches.next_batch()
        with runtime.autocast:
            _, loss = model(x.to(runtime.device), y.to(runtime.device))
        total += loss.item()
    model.train()
    if not ctx.enabled:
        return total / cfg.eval_iters
    return ctx.mean(torch.tensor(total / cfg.eval_iters, dtype=torch.float64, device=runtime.device)).item()


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


def capture_rng_states(batch_generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Every random number generator a run draws from, as tensors and JSON: torch's (dropout), a
    batch generator's if given (train() lets its loader add its own state, see loader.py), CUDA's,
    and Python's and NumPy's (gptkit draws from neither, but code run inside the loop might)."""
    tensors = {"torch": torch.get_rng_state()}
    if batch_generator is not None:
        tensors["batches"] = batch_generator.get_state()
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


def restore_rng_states(tensors: dict[str, torch.Tensor], states: dict, batch_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(tensors["torch"])
    if batch_generator is not None:
        batch_generator.set_state(tensors["batches"])
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
    """Of this process's weights: under FSDP, its shards (see the agreement in save())."""
    return all(bool(torch.isfinite(distributed.local(p)).all()) for p in model.parameters())


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
    # Under torchrun: join the other ranks (after every rank has checked the run) and take this rank's GPU.
    ctx, device = distributed.setup(runtime.device)
    runtime = Runtime(device, runtime.dtype)
    if ctx.enabled and cfg.parallel == "fsdp" and runtime.needs_grad_scaler:
        raise UsageError("parallel fsdp does not support float16 with a grad scaler", hint="use --dtype bfloat16")
    if not ctx.is_main:
        monitor = Monitor()  # rank 0 alone reports and writes the run folder
    else:
        for note in prepare_run_folder(out, plan.resume_point):
            monitor.message(note)
    ctx.barrier()

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = GPT(model_config).to(runtime.device)
    if resumed is not None:
        resumed.load_into(model)
    wrapped = distributed.wrap_model(model, ctx, cfg.parallel, runtime.dtype)  # `model` itself on one process
    optimizer = make_optimizer(model, cfg, runtime.device)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_grad_scaler)
    loader = make_loader(
        cfg.sampler, train_split, cfg.batch_size, model_config.block_size, cfg.seed,
        ctx.rank, ctx.world_size, pin_memory=runtime.device.type == "cuda", eot_id=plan.meta.get("eot_id"),
    )
    step, best_val_loss, extra = 0, None, {}
    if plan.resume_state is not None:
        optimizer_state, step, rng, extra = plan.resume_state
        distributed.load_optimizer_state(model, optimizer, optimizer_state)
        restore_rng_states(rng, extra.get("rng", {}))
        loader.load_state(rng, extra)
        best_val_loss = extra.get("best_val_loss")
        if extra.get("grad_scaler"):
            scaler.load_state_dict(extra["grad_scaler"])
    # best.safetensors is replaced only by a better model, even one from steps a --resume-from undid.
    on_disk = best_saved_val_loss(out) if resumed is not None else None
    if on_disk is not None and (best_val_loss is None or on_disk < best_val_loss):
        best_val_loss = on_disk
    guard = LossGuard(cfg.on_bad_loss, cfg.loss_spike_factor, cfg.max_bad_steps, extra.get("loss_guard"))
    if ctx.enabled:  # each rank its own dropout masks; a function of the step, so a resumed run draws fresh ones
        torch.manual_seed(hash((cfg.seed, ctx.rank, step)) % 2**63)
    forward = torch.compile(wrapped) if compile_enabled(cfg.compile, runtime.device) else wrapped

    sinks = []
    if ctx.is_main:  # rank 0 alone writes the run folder
        atomic_write_text(out / "config.toml", to_toml(model_config, cfg))
        sinks.append(MetricsLog(out / "metrics.jsonl", keep_until_step=step if resumed else None))
        if cfg.tensorboard:
            sinks.append(TensorBoardLog(out / TENSORBOARD_DIR, purge_step=step + 1 if resumed else None))

    def log(record: dict) -> None:
        for sink in sinks:
            sink.write(record)

    # The global batch: every rank trains on its own batch_size x grad_accum sequences per step.
    tokens_per_step = cfg.batch_size * model_config.block_size * cfg.grad_accum * ctx.world_size
    flops_per_token, peak = model.flops_per_token(), peak_flops(runtime)
    peak = peak * ctx.world_size if peak else None  # all the GPUs together
    train_config_dict = asdict(cfg)
    tokenizer_spec = plan.meta["tokenizer"]
    elapsed_before, started = float(extra.get("elapsed_s", 0.0)), time.perf_counter()
    last_saved = step if resumed else None

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def refuse_broken_weights(step: int) -> None:
        # never replace a good checkpoint with a broken model (all ranks agree, so all stop together)
        if ctx.any(not weights_are_finite(model), runtime.device):
            where = f"{out / CKPT_NAME} still holds step {last_saved}" if last_saved is not None else "nothing was saved"
            raise BadLoss(
                f"the model's weights hold NaN or inf at step {step}; not saved ({where})",
                hint="lower the learning rate, keep --grad-clip on, and resume from the last checkpoint",
            )

    def save(step: int, train_loss: float | None, val_loss: float | None) -> bool:
        nonlocal best_val_loss, last_saved
        refuse_broken_weights(step)
        is_best = val_loss is not None and (best_val_loss is None or val_loss < best_val_loss)
        # Plain full tensors whatever the parallelism (under FSDP every rank takes part in gathering them).
        weights, optimizer_state = distributed.full_model_state(model), distributed.full_optimizer_state(model, optimizer)
        rng_tensors, rng_states = capture_rng_states()
        state = {
            "best_val_loss": val_loss if is_best else best_val_loss,
            "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": rng_states,
            "loss_guard": guard.state(),
            "elapsed_s": elapsed(),
        }
        loader.save_state(rng_tensors, state)
        if ctx.is_main:
            save_training_state(
                out, model, optimizer_state, tokenizer_spec, step, train_loss, val_loss, train_config_dict,
                rng_tensors, state, cfg.keep_checkpoints, is_best, weights=weights,
            )
        best_val_loss, last_saved = state["best_val_loss"], step
        return is_best

    def evaluate_and_save(step: int) -> tuple[float, float]:
        refuse_broken_weights(step)  # first: broken weights are the cause, a NaN evaluation only the symptom
        train_loss = estimate_loss(forward, train_split, cfg, model_config.block_size, runtime, ctx)
        val_loss = estimate_loss(forward, val_split, cfg, model_config.block_size, runtime, ctx)
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
    if ctx.enabled:
        monitor.message(
            f"distributed: {ctx.world_size} processes ({cfg.parallel}); global batch = {cfg.batch_size} x "
            f"grad_accum {cfg.grad_accum} x {ctx.world_size} = {cfg.batch_size * cfg.grad_accum * ctx.world_size} sequences"
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
                set_learning_rate(optimizer, lr)
                step_loss = torch.zeros((), device=runtime.device)
                for micro_step in range(cfg.grad_accum):
                    x, y = loader.next_batch()
                    x = x.to(runtime.device, non_blocking=True)
                    y = y.to(runtime.device, non_blocking=True)
                    # Under torchrun, gradients are averaged across ranks after the last micro-batch only.
                    with distributed.gradient_sync(wrapped, micro_step == cfg.grad_accum - 1):
                        with runtime.autocast:
                            _, loss = forward(x, y)
                        scaler.scale(loss / cfg.grad_accum).backward()
                    step_loss += loss.detach() / cfg.grad_accum
                scaler.unscale_(optimizer)  # true gradients for the norm (a no-op without float16's scaler)
                # With max_norm=inf the norm is measured and the gradients are left as they are.
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
                # One wait for the device per step: the guard must see the loss before the update.
                # Under torchrun the loss is averaged over the ranks, so they all take the same decision.
                step_loss, grad_norm = ctx.mean(step_loss), distributed.full(grad_norm)
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
                if ctx.any(stop.signum is not None, runtime.device):  # all ranks stop at the same step
                    signum = stop.signum or signal.SIGTERM
                    if window.steps:
                        report_progress(step, lr, window)
                    if last_saved != step:
                        save(step, None, None)
                    log({"step": step, "event": "interrupted", "signal": signal.Signals(signum).name})
                    raise TrainingInterrupted(step, signum, out)
            if step == start_step and resumed is not None:
                monitor.message(f"the run is already at step {step} (max_iters {cfg.max_iters}); nothing to do")
                train_loss, val_loss = resumed.train_loss, resumed.val_loss
        ctx.barrier()  # under torchrun: no rank tears the process group down while rank 0 still saves
    except BadLoss as e:
        if last_saved is not None:
            e.hint += f"; the last checkpoint is step {last_saved}: `{resume_command(out)}` continues from it"
        raise
    finally:
        monitor.close()
        for sink in sinks:
            sink.close()
        ctx.close()

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
