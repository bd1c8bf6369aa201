"""From what a `train` command line says to the configs of the run: a fresh start or a resume.

A command line states settings in layers (config.py): a --preset, a --config file, options. A fresh
start resolves them over the defaults; without --preset and --config the preset follows the device
(`default_preset`). A resume starts from the saved run's config (in its checkpoint) and takes the
command line's settings on top:

    a setting marked resumable (config.option)  applies: --max-iters to train longer, other
                                                 intervals, device, dtype, the data folder's path...
    any other setting the command line states   must equal the saved one (model shape, optimizer and
                                                 its hyper-parameters, schedule, seed, sampler); the
                                                 ones that differ are listed together in one error

so the command that started a run also resumes it. What a command line states: every setting of the
preset and the config file it names, and the options it gives; a setting it leaves out keeps the saved
value (the device's default preset is not stated). With resume "auto" the same command starts the run
when --out holds no saved step and resumes it otherwise: what a job scheduler or `torchrun
--max-restarts` needs, as they re-run the identical command after a crash (docs/robustness.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from gptkit.checkpoint import DamagedFile, peek_checkpoint
from gptkit.config import (
    DEFAULT_PRESET,
    PRESETS,
    RUN_LENGTH_SETTINGS,
    ModelConfig,
    TrainConfig,
    apply_settings,
    config_problems,
    load_toml,
    resolve_config,
)
from gptkit.errors import UsageError
from gptkit.run_folder import CKPT_NAME, find_resume_point, holds_run, saved_steps, with_last_good_step

RESUME_MODES = ("no", "yes", "auto")  # start afresh | continue the saved run | whichever --out calls for
GPU_PRESET = "shakespeare-char"


def default_preset(device: str = "auto") -> str:
    """The preset of a command line that names neither --preset nor --config: the GPU one on CUDA."""
    from gptkit.devices import resolve_device

    return GPU_PRESET if resolve_device(device).type == "cuda" else DEFAULT_PRESET


def checkpoint_path(out: str | Path) -> Path:
    """The latest checkpoint of a run folder (run_folder.py), which `train` prints when it ends."""
    return Path(out) / CKPT_NAME


def data_folder_of(ckpt: str | Path) -> Path:
    """The data folder a checkpoint trained on, from its header (eval's default --data)."""
    saved = peek_checkpoint(ckpt).train_config.get("data")
    if not saved:
        raise UsageError("the checkpoint does not record its data folder", hint="pass --data DIR")
    return Path(saved)


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


@dataclass
class Launch:
    """The run a command line asks for: its configs, and whether (and from which step) it resumes."""

    model: ModelConfig
    train: TrainConfig
    resume: bool
    resume_from: int | None
    overwrite: bool
    where: str  # for the first log line: "preset NAME", "config FILE" or "resuming OUT"


def stated_names(preset: str | None, config_file: str | Path | None, model_overrides: dict, train_overrides: dict):
    """The (model, train) setting names a command line states: its preset's, its config file's, its options'."""
    model, train = set(model_overrides), set(train_overrides)
    if preset in PRESETS:
        model |= set(PRESETS[preset].model)
        train |= set(PRESETS[preset].train) - set(RUN_LENGTH_SETTINGS)  # derived from max_iters (config.py)
    if config_file:
        data = load_toml(config_file)
        model |= set(data.get("model", {}))
        train |= set(data.get("train", {}))
    return model, train


def merge_with_saved(saved, stated, names: set[str], table: str) -> tuple[object, list[str]]:
    """`saved` with the resumable settings of `stated` applied; the other stated settings that differ."""
    conflicts, changes = [], {}
    for f in fields(saved):
        if f.name not in names or f.metadata.get("derived"):
            continue
        mine, theirs = getattr(stated, f.name), getattr(saved, f.name)
        if f.metadata.get("resumable"):
            changes[f.name] = mine
        elif mine != theirs:
            conflicts.append(f"{table}.{f.name} {mine!r} (saved {theirs!r})")
    return replace(saved, **changes), conflicts


def _check(model: ModelConfig, train: TrainConfig) -> None:
    problems = config_problems(model, train)
    if problems:
        raise UsageError("invalid configuration: " + "; ".join(problems))


def plan_launch(
    preset: str | None,
    config_file: str | Path | None,
    model_overrides: dict,
    train_overrides: dict,
    *,
    resume: str = "no",
    resume_from: int | None = None,
    overwrite: bool = False,
    check: bool = False,
) -> Launch:
    """Resolve a `train` command line (see the module docstring). resume is one of RESUME_MODES;
    resume_from=N resumes saved step N. check=True raises on invalid values at once (else train() checks
    them with the data and the run folder, listing every problem together)."""
    if resume not in RESUME_MODES:
        raise UsageError(f"resume must be one of {', '.join(RESUME_MODES)} (got {resume!r})")
    if resume_from is not None:
        resume = "yes"
    if not preset and not config_file:
        preset, stated_preset = default_preset(train_overrides.get("device", "auto")), None
    else:
        stated_preset = preset
    model, train = resolve_config(preset, config_file, model_overrides, train_overrides, check=False)
    if resume == "auto":
        if overwrite:
            raise UsageError("--resume-auto and --overwrite contradict each other", hint="pass one of them")
        # No complete saved step: start afresh, clearing what a run killed before its first save left.
        resume = "yes" if saved_steps(train.out) else "no"
        overwrite = resume == "no" and holds_run(train.out)
    if resume == "no":
        if check:
            _check(model, train)
        return Launch(model, train, False, None, overwrite, f"preset {preset}" if preset else f"config {config_file}")

    saved_model, saved_train = resume_config(train.out, {}, resume_from)
    model_names, train_names = stated_names(stated_preset, config_file, model_overrides, train_overrides)
    model, model_conflicts = merge_with_saved(saved_model, model, model_names, "model")
    train, train_conflicts = merge_with_saved(saved_train, train, train_names, "train")
    if model_conflicts or train_conflicts:
        raise UsageError(
            "--resume continues a run with its saved config; the command line differs from it in "
            + ", ".join(model_conflicts + train_conflicts),
            hint="give the saved values or leave these settings out; to start a new run pass --overwrite or another --out",
        )
    if check:
        _check(model, train)
    return Launch(model, train, True, resume_from, overwrite, f"resuming {train.out}")
