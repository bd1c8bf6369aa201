"""Exact resume: a run stopped anywhere and resumed gives, bitwise, the losses and weights of a run
that never stopped (CPU, same seed). Dropout is on in these runs, so the torch RNG must be restored
too, not only the weights, optimizer and batch sampler."""

from __future__ import annotations

import random
import signal
import time

import numpy as np
import pytest
import torch
from robust_fixtures import (  # noqa: F401  (fixtures are used by name)
    baseline,
    gptkit_process,
    loss_curve,
    records,
    run_cli,
    same_weights,
    tiny_configs,
    tiny_data,
    tiny_toml,
    val_curve,
)

from gptkit.checkpoint import load_resume_state
from gptkit.monitor import Monitor
from gptkit.run_folder import BEST_NAME, CKPT_NAME, saved_steps
from gptkit.train import TrainingInterrupted, capture_rng_states, restore_rng_states, train


class SignalAt(Monitor):
    """Sends this process a real signal when step `at` is reported; the loop's handler must finish the
    step, save it and stop."""

    def __init__(self, at: int, signum: int = signal.SIGINT):
        self.at, self.signum = at, signum

    def step(self, record: dict) -> None:
        if record["step"] == self.at:
            signal.raise_signal(self.signum)


class CrashAt(Monitor):
    """Fails at step `at` the way a crash or kill -9 does: nothing is saved after the last checkpoint."""

    def __init__(self, at: int):
        self.at = at

    def step(self, record: dict) -> None:
        if record["step"] == self.at:
            raise RuntimeError("simulated crash")


def assert_same_run(run, reference):
    assert loss_curve(run) == loss_curve(reference)  # every step's loss, bitwise
    assert val_curve(run) == val_curve(reference)
    assert same_weights(run / CKPT_NAME, reference / CKPT_NAME)


@pytest.mark.parametrize(
    "stop_at, signum",
    [(3, signal.SIGINT), (10, signal.SIGTERM), (17, signal.SIGINT)],  # mid-interval, at an eval step, late
)
def test_resume_after_a_signal_continues_bitwise(stop_at, signum, baseline, tiny_data, tiny_toml, tmp_path):
    out = tmp_path / "run"
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(*tiny_configs(tiny_toml, tiny_data, out), monitor=SignalAt(stop_at, signum))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back
    assert stopped.value.signum == signum
    assert f"step {stop_at}" in stopped.value.message
    assert f"gptkit train --out {out} --resume" in stopped.value.hint
    assert saved_steps(out)[0].step == stop_at  # the step in flight was finished and saved
    assert max(loss_curve(out)) == stop_at

    result = train(*tiny_configs(tiny_toml, tiny_data, out), resume=True)
    assert result.step == 30
    assert_same_run(out, baseline)


def test_resume_after_a_crash_between_checkpoints(baseline, tiny_data, tiny_toml, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(*tiny_configs(tiny_toml, tiny_data, out), monitor=CrashAt(13))
    assert saved_steps(out)[0].step == 10  # steps 11-13 were lost with the crash ...
    train(*tiny_configs(tiny_toml, tiny_data, out), resume=True)
    assert_same_run(out, baseline)  # ... and redone identically
    steps = [r["step"] for r in records(out) if "loss" in r]
    assert steps == sorted(set(steps)), "metrics.jsonl must not repeat the redone steps"


def test_resume_from_an_earlier_step_redoes_the_later_ones(baseline, tiny_data, tiny_toml, tmp_path):
    out = tmp_path / "run"
    train(*tiny_configs(tiny_toml, tiny_data, out, keep_checkpoints=10))
    assert [p.step for p in saved_steps(out)] == [30, 25, 20, 15, 10, 5]
    train(*tiny_configs(tiny_toml, tiny_data, out, keep_checkpoints=10), resume_from=10)
    assert [p.step for p in saved_steps(out)] == [30, 25, 20, 15, 10, 5]
    assert_same_run(out, baseline)


def test_training_longer_continues_the_same_run(baseline, tiny_data, tiny_toml, tmp_path):
    out = tmp_path / "run"
    train(*tiny_configs(tiny_toml, tiny_data, out, max_iters=12))
    result = train(*tiny_configs(tiny_toml, tiny_data, out, max_iters=30), resume=True)
    assert result.step == 30
    assert loss_curve(out) == loss_curve(baseline)


def test_float16_grad_scaler_is_saved_and_restored(tiny_data, tiny_toml, tmp_path):
    if not torch.amp.autocast_mode.is_autocast_available("cpu"):
        pytest.skip("no CPU autocast in this torch")
    reference, out = tmp_path / "reference", tmp_path / "run"
    options = dict(dtype="float16", max_iters=8, eval_interval=4)
    train(*tiny_configs(tiny_toml, tiny_data, reference, **options))
    with pytest.raises(TrainingInterrupted):
        train(*tiny_configs(tiny_toml, tiny_data, out, **options), monitor=SignalAt(6))
    _, _, _, extra = load_resume_state(saved_steps(out)[0].state)
    assert extra["grad_scaler"]["scale"] > 0  # float16 runs carry a loss scale ...
    train(*tiny_configs(tiny_toml, tiny_data, out, **options), resume=True)
    assert loss_curve(out) == loss_curve(reference)  # ... and the resumed run continues with it


def test_rng_states_round_trip():
    generator = torch.Generator().manual_seed(3)
    tensors, states = capture_rng_states()
    generator_state = generator.get_state()  # a batch sampler's generator is the loader's state, not a global RNG

    def draws():
        return random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item()

    first = draws()
    restore_rng_states(tensors, states)
    generator.set_state(generator_state)
    assert draws() == first


def test_cuda_rng_states_are_restored_in_device_order(monkeypatch):
    """On a machine with 11+ GPUs the saved states cuda0..cuda11 go back to devices 0..11, not in name
    order (cuda10 before cuda2). A CPU-only torch pretends to have 12 GPUs."""
    tensors, states = capture_rng_states()
    tensors.update({f"cuda{i}": torch.full((16,), i, dtype=torch.uint8) for i in range(12)})
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 12)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda new_states: restored.extend(new_states))
    restore_rng_states(tensors, states)
    assert [int(state[0]) for state in restored] == list(range(12))


def test_keeps_the_last_checkpoints_and_the_best(tiny_data, tiny_toml, tmp_path):
    out = tmp_path / "run"
    train(*tiny_configs(tiny_toml, tiny_data, out, keep_checkpoints=2))
    assert [p.step for p in saved_steps(out)] == [30, 25]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_000025.resume.safetensors", "step_000025.safetensors",
        "step_000030.resume.safetensors", "step_000030.safetensors",
    ]
    assert (out / CKPT_NAME).samefile(out / "checkpoints" / "step_000030.safetensors")
    from gptkit.checkpoint import load_checkpoint

    best = load_checkpoint(out / BEST_NAME)  # still there, though its step file may be gone
    vals = val_curve(out)
    assert best.val_loss == min(vals.values()) and best.step == min(vals, key=vals.get)


def _wait_for_step(run, step: int, process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if any(r.get("step", 0) >= step and "loss" in r for r in records(run)):
                return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"the run did not reach step {step}")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_cli_stopped_by_a_signal_resumes_bitwise(signum, code, baseline, tiny_data, tiny_toml, tmp_path, capsys):
    """A real `gptkit train` process, stopped by Ctrl-C or SIGTERM (saves, exits 130/143, prints the
    resume command) or SIGKILL (no chance to save: resumes from the last checkpoint), then resumed
    with the CLI."""
    out = tmp_path / "run"
    # A long run (the schedule is fixed by lr_decay_iters, so its first 30 steps are the baseline's).
    process = gptkit_process(["train", "--config", tiny_toml, "--data", tiny_data, "--out", out, "--max-iters", 5000])
    _wait_for_step(out, 12, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    stopped_at = max(loss_curve(out))
    assert stopped_at < 30, "the child ran past the baseline before the signal landed"
    if signum != signal.SIGKILL:
        assert "Traceback" not in stderr
        assert f"Interrupted: training stopped at step {stopped_at} ({signal.Signals(signum).name})" in stderr
        assert f"Hint: continue it with `gptkit train --out {out} --resume`" in stderr
        assert saved_steps(out)[0].step == stopped_at
    else:
        assert saved_steps(out)[0].step <= stopped_at

    code, stdout, stderr = run_cli(["train", "--out", out, "--resume", "--max-iters", 30], capsys)
    assert code == 0, stderr
    assert stdout.strip() == str(out / CKPT_NAME)
    assert_same_run(out, baseline)
