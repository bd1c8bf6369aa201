"""The run folder of `gptkit train`: which files it holds, and how they survive crashes.

    out/ckpt.safetensors                             the latest checkpoint (hard link into checkpoints/)
    out/best.safetensors                             the lowest val loss so far (hard link, likewise)
    out/checkpoints/step_000300.safetensors          the last `keep_checkpoints` steps, each a checkpoint
    out/checkpoints/step_000300.resume.safetensors   and the resume state that belongs to it
    out/config.toml, out/metrics.jsonl               the resolved config, the measurements (monitor.py)

A save writes the step's two files (each atomically, see fileio.py), then points the links at them,
then deletes the oldest steps. A crash at any moment (kill -9, power) leaves the previous complete
pair in place, and `--resume` picks the newest complete pair. Hard links cost no disk space; where a
file system has none, the links are copies.

A damaged file (truncated, bit-flipped) is reported with the last good checkpoint next to it: the
search for it is here, one floor above checkpoint.py, because only the folder's layout says where the
other checkpoints of a run are (load_run_checkpoint, load_resume_point).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from gptkit.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_resume_state,
    peek_checkpoint,
    save_checkpoint,
    save_resume_state,
    weights_checksum,
)
from gptkit.checkpoint_format import CKPT_NAME, DamagedFile
from gptkit.errors import GptkitError
from gptkit.folder_lock import LOCK_NAME, FolderLock
from gptkit.fileio import atomic_link, remove_stale_temp_files
from gptkit.model import GPT

BEST_NAME = "best.safetensors"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
_STEP_FILE = re.compile(r"step_(\d+)(\.resume)?\.safetensors")


@dataclass
class ResumePoint:
    """One saved step: its checkpoint and the resume state that belongs to it."""

    step: int
    checkpoint: Path
    state: Path


def step_paths(out: str | Path, step: int) -> ResumePoint:
    folder = Path(out) / CHECKPOINT_DIR
    return ResumePoint(step, folder / f"step_{step:06d}.safetensors", folder / f"step_{step:06d}.resume.safetensors")


def _step_files(out: str | Path) -> list[tuple[int, Path]]:
    folder = Path(out) / CHECKPOINT_DIR
    found = []
    for path in folder.glob("step_*.safetensors") if folder.is_dir() else []:
        match = _STEP_FILE.fullmatch(path.name)
        if match:
            found.append((int(match[1]), path))
    return found


def saved_steps(out: str | Path) -> list[ResumePoint]:
    """The complete (checkpoint, resume state) pairs in checkpoints/, newest first. A step that a
    crash left with one file only is not listed."""
    steps = {step for step, path in _step_files(out) if path.name.endswith(".resume.safetensors")}
    points = [step_paths(out, step) for step in steps]
    return sorted((p for p in points if p.checkpoint.is_file()), key=lambda p: p.step, reverse=True)


@contextmanager
def lock_run_folder(out: str | Path) -> Iterator[None]:
    """Hold the run folder's one-writer lock (folder_lock.py) for the block, creating the folder;
    raises FolderBusy naming the holder. A folder this call created and nothing else wrote (a run
    refused by its checks) is removed again, so a refused run leaves nothing behind."""
    out = Path(out)
    if out.exists() and not out.is_dir():  # not a folder: preflight says so, with its hint
        yield
        return
    created = not out.exists()
    try:
        with FolderLock(out / LOCK_NAME, out, "run folder"):
            try:
                yield
            except KeyboardInterrupt:
                # Ctrl-C while the run was starting (the loop itself saves first): a folder this call
                # created and that holds no saved step is only config.toml and an empty log. Gone again.
                if created and not saved_steps(out):
                    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
                    for name in ("config.toml", "metrics.jsonl"):
                        (out / name).unlink(missing_ok=True)
                raise
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def holds_run(out: str | Path) -> bool:
    return (Path(out) / CKPT_NAME).exists() or bool(_step_files(out))


# ---------------------------------------------------------------------------------------------------
# Saving


def save_training_state(
    out: str | Path,
    model: GPT,
    optimizer,
    tokenizer_spec: dict,
    step: int,
    train_loss: float | None,
    val_loss: float | None,
    train_config: dict,
    rng: dict[str, torch.Tensor],
    extra: dict,
    keep: int,
    is_best: bool,
    weights: dict[str, torch.Tensor] | None = None,
    chat_template: dict | None = None,
) -> ResumePoint:
    """Save step `step` into the run folder `out`, keeping the newest `keep` steps (and the best).
    `weights` (else `model`'s) and `optimizer` (an optimizer or its state_dict) are what gets written:
    under FSDP, the full tensors gathered from the ranks. `chat_template` goes into the checkpoint."""
    out = Path(out)
    point = step_paths(out, step)
    checksum = save_checkpoint(point.checkpoint, model, tokenizer_spec, step, train_loss, val_loss, train_config, weights, chat_template)
    save_resume_state(point.state, optimizer, step, rng, {**extra, "checkpoint_checksum": checksum})
    atomic_link(point.checkpoint, out / CKPT_NAME)
    if is_best:
        atomic_link(point.checkpoint, out / BEST_NAME)
    for old in saved_steps(out)[max(keep, 1) :]:
        old.checkpoint.unlink(missing_ok=True)
        old.state.unlink(missing_ok=True)
    return point


def best_saved_val_loss(out: str | Path) -> float | None:
    """The val loss recorded in best.safetensors, if it is there and readable."""
    try:
        return peek_checkpoint(Path(out) / BEST_NAME).val_loss
    except GptkitError:
        return None


def prepare_run_folder(out: str | Path, resume_from: ResumePoint | None) -> list[str]:
    """Ready `out` for a run and say what was cleared: the temporary files of interrupted writes; for
    a fresh run (--overwrite) an earlier run's checkpoints and TensorBoard events; for a resumed run the
    files of steps after the resume point, which the run is about to redo."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    stale = remove_stale_temp_files(out) + remove_stale_temp_files(out / CHECKPOINT_DIR)
    if stale:
        notes.append(f"removed {len(stale)} unfinished temporary file(s) of an interrupted save")
    later = sorted({step for step, path in _step_files(out) if resume_from is None or step > resume_from.step})
    for step, path in _step_files(out):
        if step in later:
            path.unlink()
    if resume_from is None:
        for name in (CKPT_NAME, BEST_NAME):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)
    else:
        if later:
            notes.append(f"resuming from step {resume_from.step}: removed the files of later step(s) {', '.join(map(str, later))}")
        atomic_link(resume_from.checkpoint, out / CKPT_NAME)
    return notes


# ---------------------------------------------------------------------------------------------------
# Resuming, and naming the last good checkpoint when a file is damaged


def find_resume_point(out: str | Path, step: int | None = None) -> ResumePoint:
    """The saved step to resume: `step`, or the newest complete one. Does not read the files."""
    out = Path(out)
    points = saved_steps(out)
    if step is not None:
        chosen = [p for p in points if p.step == step]
        if not chosen:
            have = ", ".join(str(p.step) for p in points) or "none"
            raise GptkitError(
                f"cannot resume from step {step}: {out} has no complete checkpoint of it (saved steps: {have})",
                hint="pick one of the saved steps, or drop --resume-from to resume the newest",
            )
        return chosen[0]
    if not points:
        raise GptkitError(
            f"cannot resume: {out} holds no saved training state ({CHECKPOINT_DIR}/step_*.safetensors)",
            hint="start a run without --resume, or point --out at the run folder",
        )
    return points[0]


FINETUNE_RECORD = "finetune.toml"  # written by `gptkit finetune` (finetune.py): such a run resumes with it


def resume_command(out: str | Path, step: int | None = None) -> str:
    tail = f" --resume-from {step}" if step is not None else " --resume"
    command = "finetune" if (Path(out) / FINETUNE_RECORD).is_file() else "train"
    return f"gptkit {command} --out {shlex.quote(str(out))}{tail}"


def verify_resume_point(point: ResumePoint) -> tuple[Checkpoint, tuple]:
    """Load and cross-check a checkpoint and its resume state; DamagedFile if either is broken."""
    checkpoint = load_checkpoint(point.checkpoint)
    state = load_resume_state(point.state)
    _, step, _, extra = state
    expected = extra.get("checkpoint_checksum")
    if step != checkpoint.step or (expected is not None and expected != "sha256:" + weights_checksum(checkpoint.state_dict)):
        raise DamagedFile(point.state, f"(step {step}) does not belong to {point.checkpoint} (step {checkpoint.step})")
    return checkpoint, state


def load_resume_point(out: str | Path, point: ResumePoint) -> tuple[Checkpoint, tuple]:
    """verify_resume_point, where a damaged file's error names the last good step to resume from."""
    try:
        return verify_resume_point(point)
    except DamagedFile as e:
        raise with_last_good_step(e, out, point.step) from None


def with_last_good_step(error: DamagedFile, out: str | Path, step: int) -> DamagedFile:
    """Fill in the hint of a damaged resume point with the newest good step before it."""
    for older in saved_steps(out):
        if older.step < step:
            try:
                verify_resume_point(older)
            except GptkitError:
                continue
            error.hint = (
                f"the last good checkpoint is {older.checkpoint} (step {older.step}); "
                f"resume from it with `{resume_command(out, older.step)}`"
            )
            return error
    error.hint = f"no earlier good checkpoint is left in {out}; start the run again with --overwrite"
    return error


def load_run_checkpoint(path: str | Path) -> Checkpoint:
    """checkpoint.load_checkpoint, where a damaged file's error names the last good checkpoint of
    the run it belongs to (see with_last_good). What `gptkit eval` and `gptkit sample` load with."""
    try:
        return load_checkpoint(path)
    except DamagedFile as e:
        raise with_last_good(e) from None


def last_good_checkpoint(damaged: str | Path) -> tuple[Path, int] | None:
    """The newest other checkpoint of the run that `damaged` belongs to which loads and verifies."""
    damaged = Path(damaged)
    run = damaged.parent.parent if damaged.parent.name == CHECKPOINT_DIR else damaged.parent
    tried = {_file_id(damaged)}  # ckpt.safetensors and its step file are one file: try it once
    for candidate in [p.checkpoint for p in saved_steps(run)] + [run / BEST_NAME, run / CKPT_NAME]:
        file_id = _file_id(candidate)
        if file_id is None or file_id in tried:
            continue
        tried.add(file_id)
        try:
            return candidate, load_checkpoint(candidate).step
        except GptkitError:
            continue
    return None


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def with_last_good(error: DamagedFile) -> DamagedFile:
    """Fill in the hint of a damaged checkpoint with the last good checkpoint next to it."""
    good = last_good_checkpoint(error.path)
    if good is not None:
        error.hint = f"the last good checkpoint is {good[0]} (step {good[1]}); use it instead, or train again"
    else:
        error.hint = "no other good checkpoint was found next to it; train again"
    return error
