"""Before a training run starts: check everything it needs, and report every problem at once.

A run that dies after an hour because the data folder was wrong wastes the hour; a run that reports
one problem, then the next after the user fixed the first, wastes their patience. So `train()` first
checks, independently of each other,

    the config          every invalid value (config.py)
    the device          the device and dtype exist here
    the data            meta.json, both splits' shards, that each split is longer than the context
    the run folder      free to start in (or --overwrite), or holding a run to --resume
    the saved state     when resuming: checkpoint and resume state verify, match each other and the data
    the start weights   with init_from: the checkpoint verifies and matches the data
    the extras          --tensorboard has its package

and raises one GptkitError listing every problem found, each with its fix. Nothing is written before
all checks pass, so a refused run damages nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from gptkit.checkpoint import Checkpoint
from gptkit.config import TrainConfig, config_problems
from gptkit.devices import Runtime, resolve_runtime
from gptkit.errors import GptkitError, Problems, UsageError
from gptkit.hf_import import load_init_checkpoint
from gptkit.model import ModelConfig
from gptkit.run_folder import ResumePoint, find_resume_point, holds_run, load_resume_point
from gptkit.shards import SPLITS, Split, read_meta
from gptkit.train_state import from_resume_files


@dataclass
class RunPlan:
    """Everything `train()` needs, checked."""

    model_config: ModelConfig  # with the data's vocabulary size (or the resumed checkpoint's config)
    runtime: Runtime
    meta: dict
    splits: dict[str, Split]
    out: Path
    resume_point: ResumePoint | None = None
    checkpoint: Checkpoint | None = None  # the checkpoint being resumed, verified
    resume_state: dict | None = None  # its TrainState.state_dict(), verified
    init_from: Checkpoint | None = None  # the weights a fresh run starts from (init_from=), verified


def plan_run(
    model_config: ModelConfig,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    resume_from: int | None = None,
    init_from: str | Path | None = None,
) -> RunPlan:
    """Check a run before it starts (see the module docstring); returns what the checks loaded.
    init_from (a checkpoint) applies to a fresh run only: a resumed run has its own saved weights."""
    problems = Problems()
    out = Path(cfg.out)
    resume = resume or resume_from is not None

    invalid = config_problems(model_config, cfg)
    if invalid:
        problems.errors.append(
            UsageError("invalid configuration: " + "; ".join(invalid), hint="fix these options (see `gptkit train --help`)")
        )
    runtime = meta = None
    with problems.check():
        runtime = resolve_runtime(cfg.device, cfg.dtype)
    with problems.check():
        meta = read_meta(cfg.data)
    splits = {}
    for name in SPLITS if meta is not None else ():
        with problems.check():
            splits[name] = Split.open(cfg.data, name, meta)

    point = checkpoint = state = None
    with problems.check():
        check_out_folder(out, resume, overwrite)
        if resume:
            point = find_resume_point(out, resume_from)
            checkpoint, saved = load_resume_point(out, point)
            checkpoint.check_weights()  # before train() builds a model of the config the file claims
            state = from_resume_files(checkpoint, saved)
    start = None
    if init_from is not None and not resume:
        with problems.check():
            start = load_init_checkpoint(init_from)  # a gptkit checkpoint, or Hugging Face GPT-2 weights
            start.check_weights()  # before train() builds a model of the config it claims
    if start is not None and meta is not None:
        with problems.check():
            start.check_data(meta, cfg.data, init_from)
    if checkpoint is not None:
        model_config = checkpoint.model_config
        if meta is not None:
            with problems.check():
                checkpoint.check_data(meta, cfg.data, point.checkpoint)
    elif start is not None:
        model_config = start.model_config  # the shape of the weights it starts from
    elif meta is not None:
        model_config = replace(model_config, vocab_size=meta["vocab_size"])
    if model_config.block_size >= 1:
        for split in splits.values():
            with problems.check():
                split.check_fits(model_config.block_size)
    if cfg.tensorboard:
        from gptkit.monitor import require_tensorboard

        with problems.check():
            require_tensorboard()
    problems.raise_if_any()
    return RunPlan(model_config, runtime, meta, splits, out, point, checkpoint, state, start)


def check_out_folder(out: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other", hint="pass one of them")
    if out.exists() and not out.is_dir():
        raise GptkitError(f"--out {out} is a file, not a folder", hint="choose a folder for the run")
    if not resume and not overwrite and holds_run(out):
        raise GptkitError(
            f"{out} already holds a training run",
            hint="pass --resume to continue it, --overwrite to start afresh, or choose another --out",
        )
