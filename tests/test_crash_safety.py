"""Crash safety: a kill in the middle of a save, damaged files, a full disk, and losses gone bad never
cost more than the steps since the last checkpoint, and are always reported with a way forward."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch
from robust_fixtures import (  # noqa: F401  (fixtures are used by name)
    REPO,
    baseline,
    leftovers,
    loss_curve,
    records,
    same_weights,
    scale_training_loss,
    snapshot,
    tiny_configs,
    tiny_data,
    tiny_toml,
)

from gptkit.checkpoint import load_checkpoint, load_resume_state, peek_checkpoint
from gptkit.errors import GptkitError
from gptkit.fileio import atomic_open, atomic_write_bytes
from gptkit.loss_guard import BadLoss
from gptkit.model import GPT
from gptkit.run_folder import CKPT_NAME, load_run_checkpoint, saved_steps, step_paths
from gptkit.train import train

# Runs training in a child process whose N-th file write stops half-way: the bytes written so far are
# flushed to disk, then the process kills itself with SIGKILL, as a power cut or OOM killer would.
DIE_DURING_WRITE = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from robust_fixtures import tiny_configs
import gptkit.checkpoint
from gptkit.fileio import atomic_open
from gptkit.train import train

writes = 0
original = gptkit.checkpoint.atomic_write_bytes

def write_then_die(path, data):
    global writes
    writes += 1
    if writes == {die_at}:
        with atomic_open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    original(path, data)

gptkit.checkpoint.atomic_write_bytes = write_then_die
train(*tiny_configs(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
"""


@pytest.mark.parametrize("die_at, what", [(3, "the checkpoint"), (4, "the resume state")])
def test_kill_9_during_a_save_leaves_the_previous_checkpoint(die_at, what, baseline, tiny_data, tiny_toml, tmp_path):
    """Each save writes the step's checkpoint, then its resume state; the 3rd and 4th writes belong to
    the save of step 10. Whichever one dies, step 5 stays loadable and the run resumes from it."""
    out = tmp_path / "run"
    script = DIE_DURING_WRITE.format(tests=str(REPO / "tests"), die_at=die_at)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    child = subprocess.run([sys.executable, "-c", script, tiny_toml, tiny_data, out], env=env, capture_output=True, text=True)
    assert child.returncode == -9, child.stderr

    assert leftovers(out), f"the half-written {what} should be a temporary file"
    assert load_checkpoint(out / CKPT_NAME).step == 5  # the previous checkpoint, intact
    assert [p.step for p in saved_steps(out)] == [5]
    train(*tiny_configs(tiny_toml, tiny_data, out), resume=True)
    assert not leftovers(out)
    assert loss_curve(out) == loss_curve(baseline)
    assert same_weights(out / CKPT_NAME, baseline / CKPT_NAME)


@pytest.fixture
def finished_run(tiny_data, tiny_toml, tmp_path):
    """A finished run keeping steps 20, 25 and 30."""
    out = tmp_path / "run"
    train(*tiny_configs(tiny_toml, tiny_data, out))
    assert [p.step for p in saved_steps(out)] == [30, 25, 20]
    return out


def truncate(path):
    data = path.read_bytes()
    with open(path, "r+b") as f:  # in place, as a disk error would: every hard link sees it
        f.truncate(len(data) * 2 // 3)


def flip_a_byte(path, offset_from_end=100):
    with open(path, "r+b") as f:
        f.seek(-offset_from_end, os.SEEK_END)
        byte = f.read(1)
        f.seek(-offset_from_end, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize(
    "damage, problem",
    [(truncate, "is not a readable safetensors file (truncated or damaged: "), (flip_a_byte, "is corrupted: its weights do not match the checksum")],
)
def test_a_damaged_checkpoint_names_the_file_and_the_last_good_one(damage, problem, finished_run):
    damage(step_paths(finished_run, 30).checkpoint)  # also ckpt.safetensors: the same file
    with pytest.raises(GptkitError) as error:
        load_run_checkpoint(finished_run / CKPT_NAME)
    assert str(finished_run / CKPT_NAME) in error.value.message and problem in error.value.message
    good = step_paths(finished_run, 25).checkpoint
    assert error.value.hint.startswith(f"the last good checkpoint is {good} (step 25)")
    assert load_checkpoint(good).step == 25


def test_a_damaged_resume_state_names_the_step_to_resume_from(baseline, finished_run, tiny_data, tiny_toml):
    flip_a_byte(step_paths(finished_run, 30).state)
    with pytest.raises(GptkitError) as error:
        train(*tiny_configs(tiny_toml, tiny_data, finished_run), resume=True)
    assert f"{step_paths(finished_run, 30).state} is corrupted" in error.value.message
    assert f"`gptkit train --out {finished_run} --resume-from 25`" in error.value.hint
    # following the hint works, and gives the uninterrupted run's result
    train(*tiny_configs(tiny_toml, tiny_data, finished_run), resume_from=25)
    assert same_weights(finished_run / CKPT_NAME, baseline / CKPT_NAME)


def test_a_resume_state_from_another_step_is_refused(finished_run, tiny_data, tiny_toml):
    step_30 = step_paths(finished_run, 30)
    step_30.state.write_bytes(step_paths(finished_run, 25).state.read_bytes())  # step 25's state beside step 30
    before = snapshot(finished_run)
    with pytest.raises(GptkitError) as error:
        train(*tiny_configs(tiny_toml, tiny_data, finished_run), resume=True)
    assert error.value.message == f"{step_30.state} (step 25) does not belong to {step_30.checkpoint} (step 30)"
    assert f"`gptkit train --out {finished_run} --resume-from 25`" in error.value.hint
    assert snapshot(finished_run) == before


def test_every_damaged_checkpoint_means_no_good_one(finished_run):
    for point in saved_steps(finished_run):
        flip_a_byte(point.checkpoint)
    with pytest.raises(GptkitError) as error:
        load_run_checkpoint(finished_run / "best.safetensors")
    assert "no other good checkpoint" in error.value.hint


def test_a_full_disk_leaves_the_previous_file_untouched(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.safetensors"
    target.write_bytes(b"previous")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(GptkitError) as error:
        atomic_write_bytes(target, b"new contents")
    assert "no space left on the device" in error.value.message and "previous ckpt.safetensors is untouched" in error.value.message
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_a_failure_while_writing_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "meta.json"
    with pytest.raises(ValueError):
        with atomic_open(target, "w") as f:
            f.write("{half")
            raise ValueError("the writer failed")
    assert os.listdir(tmp_path) == []


def test_stale_temporary_files_are_cleared_on_resume(finished_run, tiny_data, tiny_toml):
    stale = finished_run / "checkpoints" / ".step_000035.safetensors.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(*tiny_configs(tiny_toml, tiny_data, finished_run, max_iters=31), resume=True)
    assert not stale.exists()


# ---------------------------------------------------------------------------------------------------
# Bad losses


@pytest.fixture
def bad_forward(monkeypatch):
    """bad_forward({step: factor}) multiplies the training loss of those steps by factor."""
    return lambda factors: scale_training_loss(monkeypatch, factors)


def optimizer_updates(out) -> int:
    optimizer_state, _, _, _ = load_resume_state(saved_steps(out)[0].state)
    return int(optimizer_state["state"][0]["step"])


def test_a_nan_loss_skips_that_update(bad_forward, tiny_data, tiny_toml, tmp_path):
    bad_forward({4: float("nan")})
    out = tmp_path / "run"
    result = train(*tiny_configs(tiny_toml, tiny_data, out))
    assert result.step == 30
    events = [(r["step"], r["reason"]) for r in records(out) if r.get("event") == "skipped"]
    assert events == [(4, "the loss is nan")]
    step_4 = next(r for r in records(out) if r["step"] == 4 and "lr" in r)
    assert step_4["loss"] is None and step_4["skipped"] == 1
    assert optimizer_updates(out) == 29  # 30 steps, one update skipped
    assert all(torch.isfinite(t).all() for t in load_checkpoint(out / CKPT_NAME).state_dict.values())


def test_a_loss_spike_is_skipped_too(bad_forward, tiny_data, tiny_toml, tmp_path):
    bad_forward({20: 4.0})
    out = tmp_path / "run"
    train(*tiny_configs(tiny_toml, tiny_data, out))
    skipped = [r for r in records(out) if r.get("event") == "skipped"]
    assert [r["step"] for r in skipped] == [20] and "spiked" in skipped[0]["reason"]
    assert optimizer_updates(out) == 29


def test_on_bad_loss_stop_keeps_the_last_good_checkpoint(bad_forward, tiny_data, tiny_toml, tmp_path):
    bad_forward({7: float("inf")})
    out = tmp_path / "run"
    with pytest.raises(BadLoss) as error:
        train(*tiny_configs(tiny_toml, tiny_data, out, on_bad_loss="stop"))
    assert error.value.message.startswith("stopped at step 7: the loss is inf")
    assert f"the last checkpoint is step 5: `gptkit train --out {out} --resume`" in error.value.hint
    assert [p.step for p in saved_steps(out)] == [5]
    assert peek_checkpoint(out / CKPT_NAME).step == 5


def test_bad_steps_in_a_row_stop_even_when_skipping(bad_forward, tiny_data, tiny_toml, tmp_path):
    bad_forward({step: float("nan") for step in range(8, 31)})
    out = tmp_path / "run"
    with pytest.raises(BadLoss, match="stopped at step 11: 4 bad steps in a row"):
        train(*tiny_configs(tiny_toml, tiny_data, out, max_bad_steps=4))
    assert [p.step for p in saved_steps(out)] == [10, 5]


def test_a_model_with_nan_weights_is_never_saved(monkeypatch, tiny_data, tiny_toml, tmp_path):
    """Weights can turn NaN while the loss still looked fine; the save refuses them."""
    original, calls = GPT.forward, [0]

    def forward(self, idx, targets=None, cache=None):
        if self.training:
            calls[0] += 1
            if calls[0] == 8:
                with torch.no_grad():
                    self.final_norm.weight[0] = float("nan")
        return original(self, idx, targets, cache)

    monkeypatch.setattr(GPT, "forward", forward)
    out = tmp_path / "run"
    with pytest.raises(BadLoss, match="weights hold NaN or inf at step 10; not saved"):
        train(*tiny_configs(tiny_toml, tiny_data, out))
    good = load_checkpoint(out / CKPT_NAME)
    assert good.step == 5 and all(torch.isfinite(t).all() for t in good.state_dict.values())
