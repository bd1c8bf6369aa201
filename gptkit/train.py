"""Stage 2, `gptkit train`: the training loop.

    model_config, train_config = resolve_config("shakespeare-char-cpu")
    result = train(model_config, train_config)

train() is short glue: plan_run (check) -> build the TrainState -> fit (the loop, fit.py) -> result.
A run starts from scratch, from a saved step (resume), or from a checkpoint's weights (init_from=),
with optional model transforms (callables GPT -> module, e.g. LoRA) applied before DDP/FSDP wraps it.
`weights=` (a RunWeights) says what a save writes and how a resume loads it back: by default the
module's own state dict; fine-tuning with LoRA saves the merged model and an adapter file instead.

One optimizer step (train_step.py) is:

    for each of grad_accum micro-batches:        # gradient accumulation: a big batch in small pieces
        loss = model(x, y) * its share of the step's valid targets   # 1/grad_accum unless masked (-100)
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

import random
import time
from contextlib import nullcontext
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from gptkit import distributed
from gptkit.chat_template import run_template
from gptkit.config import TrainConfig, to_toml
from gptkit.devices import Runtime, compile_enabled, peak_flops
from gptkit.checkpoint import Checkpoint
from gptkit.errors import UsageError
from gptkit.fileio import atomic_write_text
from gptkit.fit import TrainingInterrupted, fit
from gptkit.instruction_data import InstructionBatches, InstructionSplit, is_instruction_data, row_width
from gptkit.loader import RandomBatches, make_loader
from gptkit.loss_guard import LossGuard
from gptkit.model import GPT, ModelConfig
from gptkit.monitor import MetricsLog, Monitor, TensorBoardLog
from gptkit.optim import make_optimizer
from gptkit.preflight import RunPlan, plan_run
from gptkit.run_banner import run_banner
from gptkit.run_folder import (
    BEST_NAME,
    CKPT_NAME,
    TENSORBOARD_DIR,
    best_saved_val_loss,
    lock_run_folder,
    prepare_run_folder,
)
from gptkit.schedule import learning_rate_at
from gptkit.shards import Split
from gptkit.train_state import TrainState, capture_rng_states, restore_rng_states, write_to_run_folder
from gptkit.train_step import ParallelModel, estimate_loss

__all__ = [
    "BEST_NAME", "CKPT_NAME", "RunWeights", "TrainResult", "TrainingInterrupted", "capture_rng_states", "estimate_loss",
    "learning_rate_at", "make_optimizer", "restore_rng_states", "train",
]

Transform = Callable[[GPT], nn.Module]


class RunWeights:
    """The seam between the loop and what the run folder holds of the trained module. This default is
    pretraining's: the module is a GPT, each step's checkpoint is its state dict, and a resume loads it
    back as is. A transform that changes the state dict (LoRA adds lora_A/lora_B) passes a subclass."""

    def to_checkpoint(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weights written as the step's checkpoint (a plain GPT's), from the module's full state dict."""
        return weights

    def saved(self, out: Path, step: int, weights: dict[str, torch.Tensor], train_loss, val_loss, is_best: bool) -> None:
        """After the step's files are written (rank 0 only): write whatever else belongs to the step."""

    def resume(self, model: nn.Module, checkpoint: Checkpoint) -> None:
        """Put the resumed step's weights (its verified checkpoint) into the transformed module."""
        checkpoint.load_into(model)


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
    steps_done: int = 0  # optimizer steps this call made (0: a resumed run already at max_iters)


def eval_batches(split: Split, cfg: TrainConfig, block_size: int, ctx, meta: dict | None = None) -> Callable[[], list]:
    """The `eval_iters` batches of a split that every evaluation measures: the same each time (a fixed
    seed), so successive losses differ because the model changed, not the data. Under torchrun each
    rank takes its slice of every batch. Instruction data: rows of examples, prompts masked."""

    def batches():
        if meta is not None and is_instruction_data(meta):
            width = row_width(meta, block_size)
            source = InstructionLoader(InstructionSplit.open(cfg.data, split.name, meta), cfg.batch_size, width, cfg.seed + 1, ctx.rank, ctx.world_size)
        else:
            source = RandomBatches(split, cfg.batch_size, block_size, cfg.seed + 1, ctx.rank, ctx.world_size)
        return (source.next_batch() for _ in range(cfg.eval_iters))

    return batches


class InstructionLoader(InstructionBatches):
    """instruction_data.InstructionBatches with the loaders' state_dict interface (TrainState's)."""

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.epoch, self.position = int(state["epoch"]), int(state["position"])


def train_batches(plan: RunPlan, cfg: TrainConfig, ctx, runtime: Runtime):
    """The training batch source, picked by the data folder's kind (meta.json): windows of a token
    stream for text (cfg.sampler), one example per row with prompt targets masked for instructions."""
    pin = runtime.device.type == "cuda"
    block_size = plan.model_config.block_size
    if is_instruction_data(plan.meta):
        split = InstructionSplit.open(cfg.data, "train", plan.meta)
        return InstructionLoader(split, cfg.batch_size, row_width(plan.meta, block_size), cfg.seed, ctx.rank, ctx.world_size, pin)
    return make_loader(
        cfg.sampler, plan.splits["train"], cfg.batch_size, block_size, cfg.seed,
        ctx.rank, ctx.world_size, pin_memory=pin, eot_id=plan.meta.get("eot_id"),
    )


def build_state(
    plan: RunPlan, cfg: TrainConfig, ctx, runtime: Runtime, transforms: Sequence[Transform], weights: RunWeights | None = None
) -> tuple[TrainState, ParallelModel]:
    """The model (scratch, a checkpoint's weights, or the resumed step's), transformed, wrapped for
    DDP/FSDP, its optimizer, and the rest of the TrainState, restored when resuming."""
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = GPT(plan.model_config).to(runtime.device)
    if plan.init_from is not None:
        plan.init_from.load_into(model)
    for transform in transforms:  # before wrapping: DDP/FSDP must see the final parameters
        model = transform(model)
    if plan.checkpoint is not None:
        (weights or RunWeights()).resume(model, plan.checkpoint)
    wrapped = distributed.wrap_model(model, ctx, cfg.parallel, runtime.dtype)  # `model` itself on one process
    loader = train_batches(plan, cfg, ctx, runtime)
    state = TrainState(
        model,
        make_optimizer(model, cfg, runtime.device),
        torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_grad_scaler),
        LossGuard(cfg.on_bad_loss, cfg.loss_spike_factor, cfg.max_bad_steps),
        loader,
    )
    if plan.resume_state is not None:
        state.load_state_dict(plan.resume_state, load_weights=False)  # the weights are in (before wrapping)
        # best.safetensors is replaced only by a better model, even one from steps a --resume-from undid.
        on_disk = best_saved_val_loss(plan.out)
        if on_disk is not None and (state.best_val_loss is None or on_disk < state.best_val_loss):
            state.best_val_loss = on_disk
    if ctx.enabled:  # each rank its own dropout masks; a function of the step, so a resumed run draws fresh ones
        torch.manual_seed(hash((cfg.seed, ctx.rank, state.step)) % 2**63)
    forward = torch.compile(wrapped) if compile_enabled(cfg.compile, runtime.device) else wrapped
    return state, ParallelModel(wrapped, forward, runtime, ctx)


def train(model_config: ModelConfig, cfg: TrainConfig, **options) -> TrainResult:
    """Train a GPT on the data folder `cfg.data`, writing the run into `cfg.out` (the options: _train's).

    The run folder has one writer: this process holds its lock (folder_lock.py) from before the first
    check to the end, so a second `train` on the same --out is refused at once, whatever its options.
    Under torchrun rank 0 takes it for the job; the other ranks never write the folder."""
    with lock_run_folder(cfg.out) if distributed.is_main_process() else nullcontext():
        return _train(model_config, cfg, **options)


def _train(
    model_config: ModelConfig,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    resume_from: int | None = None,
    monitor: Monitor | None = None,
    init_from: str | Path | None = None,
    transforms: Sequence[Transform] = (),
    weights: RunWeights | None = None,
) -> TrainResult:
    """The run itself. resume continues the newest saved step of `cfg.out`, resume_from=N the saved step N (the steps
    after it are deleted: the run redoes them). init_from starts a fresh run from a checkpoint's
    weights (and model config); a resumed run ignores it. transforms turn the model into the module
    to train, before DDP/FSDP wrapping; weights (default RunWeights()) what each save writes of it and
    how a resume loads it. Raises GptkitError listing every problem it finds before
    starting, TrainingInterrupted after a SIGINT/SIGTERM (saved), BadLoss when the loss guard stops
    the run (nothing saved after the last good checkpoint)."""
    monitor = monitor or Monitor()
    plan = plan_run(model_config, cfg, resume=resume, overwrite=overwrite, resume_from=resume_from, init_from=init_from)
    out, model_config, resumed = plan.out, plan.model_config, plan.checkpoint
    # Under torchrun: join the other ranks (after every rank has checked the run) and take this rank's GPU.
    ctx, device = distributed.setup(plan.runtime.device)
    runtime = Runtime(device, plan.runtime.dtype)
    if ctx.enabled and cfg.parallel == "fsdp" and runtime.needs_grad_scaler:
        raise UsageError("parallel fsdp does not support float16 with a grad scaler", hint="use --dtype bfloat16")
    if not ctx.is_main:
        monitor = Monitor()  # rank 0 alone reports and writes the run folder
    else:
        for note in prepare_run_folder(out, plan.resume_point):
            monitor.message(note)
    ctx.barrier()

    weights = weights or RunWeights()
    state, model = build_state(plan, cfg, ctx, runtime, transforms, weights)
    sinks = []
    if ctx.is_main:  # rank 0 alone writes the run folder
        atomic_write_text(out / "config.toml", to_toml(model_config, cfg))
        sinks.append(MetricsLog(out / "metrics.jsonl", keep_until_step=state.step if resumed else None))
        if cfg.tensorboard:
            sinks.append(TensorBoardLog(out / TENSORBOARD_DIR, purge_step=state.step + 1 if resumed else None))

    def log(record: dict) -> None:
        for sink in sinks:
            sink.write(record)

    train_config_dict = asdict(cfg)
    start = resumed or plan.init_from  # the weights the run started from, which may carry a template
    chat_template = run_template(plan.meta, start.chat_template if start is not None else None)

    def write(saved: dict, train_loss, val_loss, is_best: bool) -> None:
        module_weights = saved["model"]
        saved = {**saved, "model": weights.to_checkpoint(module_weights)}
        write_to_run_folder(
            out, saved, state.model, plan.meta["tokenizer"], train_loss, val_loss, train_config_dict, cfg.keep_checkpoints, is_best,
            chat_template,
        )
        weights.saved(out, saved["step"], module_weights, train_loss, val_loss, is_best)

    # The global batch: every rank trains on its own batch_size x grad_accum sequences per step.
    tokens_per_step = cfg.batch_size * model_config.block_size * cfg.grad_accum * ctx.world_size
    peak = peak_flops(runtime)
    for line in run_banner(state.model, model_config, cfg, tokens_per_step, ctx.world_size):  # what is trained, and how
        monitor.message(line)
    monitor.message(f"device: {runtime.describe()} | data: {plan.splits['train'].num_tokens:,} train tokens")
    if ctx.enabled:
        monitor.message(
            f"distributed: {ctx.world_size} processes ({cfg.parallel}); global batch = {cfg.batch_size} x "
            f"grad_accum {cfg.grad_accum} x {ctx.world_size} = {cfg.batch_size * cfg.grad_accum * ctx.world_size} sequences"
        )
    if resumed is not None:
        log({"step": state.step, "event": "resumed"})
        monitor.message(f"resumed from step {state.step} ({plan.resume_point.checkpoint})")
        if init_from is not None:
            monitor.message("init_from is not used: the resumed step holds the weights")
    elif plan.init_from is not None:
        monitor.message(f"starting from the weights of {init_from} (step {plan.init_from.step})")
    started = time.perf_counter()
    try:
        result = fit(
            state, model, cfg,
            eval_batches={name: eval_batches(plan.splits[name], cfg, model_config.block_size, ctx, plan.meta) for name in ("train", "val")},
            write=write, out=out, monitor=monitor, log=log, tokens_per_step=tokens_per_step,
            peak_flops=peak * ctx.world_size if peak else None,  # all the GPUs together
            last_saved=state.step if resumed else None,
        )
        if result.steps_done == 0 and resumed is not None:
            monitor.message(f"nothing to do: the run is already at step {state.step} (max_iters {cfg.max_iters})")
    finally:
        monitor.close()
        for sink in sinks:
            sink.close()
        ctx.close()
    train_loss, val_loss = result.train_loss, result.val_loss
    if result.steps_done == 0 and resumed is not None:
        train_loss, val_loss = resumed.train_loss, resumed.val_loss

    seconds = time.perf_counter() - started
    steps_done = max(result.steps_done, 1)
    return TrainResult(
        step=state.step,
        train_loss=train_loss,
        val_loss=val_loss,
        best_val_loss=state.best_val_loss,
        elapsed_s=seconds,
        tokens_per_sec=tokens_per_step * steps_done / seconds,
        ms_per_iter=1000 * seconds / steps_done,
        out=out,
        steps_done=result.steps_done,
    )
