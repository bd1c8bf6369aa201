"""Resume as people use it: the command line that started a run also resumes it (launch.py), and
`--resume-auto` makes one command line start the run or continue it, whatever killed it before."""

from __future__ import annotations

import random
import signal
import time

import pytest
from robust_fixtures import (  # noqa: F401  (fixtures are used by name)
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

from gptkit.errors import UsageError
from gptkit.launch import default_preset, plan_launch
from gptkit.run_folder import CKPT_NAME, saved_steps
from gptkit.train import train


def started(tiny_toml, tiny_data, out, *more):
    """The command line of a 10-step run (a checkpoint every 5 steps)."""
    return ["train", "--config", tiny_toml, "--data", tiny_data, "--out", out, "--max-iters", 10, *more]


def test_the_command_that_started_a_run_resumes_it(tiny_toml, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, stderr = run_cli(started(tiny_toml, tiny_data, out), capsys)
    assert code == 0, stderr
    code, stdout, stderr = run_cli(started(tiny_toml, tiny_data, out, "--resume"), capsys)
    assert code == 0, stderr
    assert "nothing to do" in stderr and stdout.strip() == str(out / CKPT_NAME)
    # settings meant to change on resume apply; a stated setting equal to the saved one is fine
    more = started(tiny_toml, tiny_data, out, "--resume", "--max-iters", 15, "--eval-interval", 3, "--seed", 7, "--n-layer", 2)
    code, _, stderr = run_cli(more, capsys)
    assert code == 0, stderr
    assert saved_steps(out)[0].step == 15 and max(loss_curve(out)) == 15


def test_settings_that_conflict_with_the_saved_run_are_listed_together(tiny_toml, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(started(tiny_toml, tiny_data, out), capsys)[0] == 0
    argv = started(tiny_toml, tiny_data, out, "--resume", "--n-layer", 3, "--seed", 8, "--optimizer", "muon", "--lr", 0.1)
    code, _, stderr = run_cli(argv, capsys)
    assert code == 2
    error = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, stderr
    for conflict in ("model.n_layer 3 (saved 2)", "train.seed 8 (saved 7)", "train.optimizer 'muon' (saved 'adamw')",
                     "train.learning_rate 0.1 (saved 0.003)"):
        assert conflict in error[0]
    assert "Traceback" not in stderr and saved_steps(out)[0].step == 10  # the run is untouched


def test_a_preset_given_again_on_resume_is_compared_with_the_run(tiny_data, tmp_path):
    out = tmp_path / "run"
    fresh = plan_launch("shakespeare-char-cpu", None, {}, {"out": str(out), "data": str(tiny_data), "device": "cpu"})
    assert not fresh.resume and fresh.model.n_embd == 128
    cfg = fresh.train.__class__(**{**vars(fresh.train), "max_iters": 2, "eval_interval": 2, "eval_iters": 1})
    train(fresh.model, cfg)
    # the user's line again, with --resume: the preset's values equal the saved ones, max_iters applies
    again = plan_launch("shakespeare-char-cpu", None, {}, {"out": str(out), "max_iters": 4}, resume="yes")
    assert again.resume and again.train.max_iters == 4 and again.train.eval_iters == 20  # the preset's, resumable
    assert again.model == train_model_of(out)
    with pytest.raises(UsageError, match=r"differs from it in .*train.batch_size|n_embd 384 \(saved 128\)"):
        plan_launch("shakespeare-char", None, {}, {"out": str(out)}, resume="yes")  # another preset's model


def train_model_of(out):
    from gptkit.checkpoint import peek_checkpoint

    return peek_checkpoint(out / CKPT_NAME).model_config


def test_resume_auto_starts_when_nothing_is_saved_and_resumes_otherwise(tiny_toml, tiny_data, tmp_path):
    out = tmp_path / "run"
    stated = {"out": str(out), "data": str(tiny_data)}
    first = plan_launch(None, tiny_toml, {}, stated, resume="auto")
    assert not first.resume and not first.overwrite
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step_000005.safetensors").write_bytes(b"half a save")  # killed during its first save
    assert plan_launch(None, tiny_toml, {}, stated, resume="auto").overwrite  # starts afresh, clearing it
    train(*tiny_configs(tiny_toml, tiny_data, out, max_iters=5), overwrite=True)
    later = plan_launch(None, tiny_toml, {}, stated, resume="auto")
    assert later.resume and later.where == f"resuming {out}"
    with pytest.raises(UsageError, match="contradict"):
        plan_launch(None, tiny_toml, {}, stated, resume="auto", overwrite=True)


def test_the_default_preset_follows_the_device():
    assert default_preset("cpu") == "shakespeare-char-cpu"


def _run_until_killed(argv, out, kill_at: int):
    """Start `gptkit ARGV`; SIGKILL it once metrics.jsonl reaches step `kill_at`. Returns the exit code."""
    process = gptkit_process(argv)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if any(r.get("step", 0) >= kill_at and "loss" in r for r in records(out)):
                process.send_signal(signal.SIGKILL)
                break
        except (FileNotFoundError, ValueError):  # not written yet, or a line half written
            pass
        time.sleep(0.005)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode in (0, -signal.SIGKILL), stderr
    return process.returncode


def test_kill_9_and_rerun_the_identical_command_until_it_finishes(tiny_toml, tiny_data, tmp_path):
    """A scheduler's view: the same command line, killed with kill -9 at random steps and started again
    until it exits 0, trains the loss curve of a run never killed, bitwise."""
    total = 40
    reference = tmp_path / "reference"
    train(*tiny_configs(tiny_toml, tiny_data, reference, max_iters=total))
    out = tmp_path / "run"
    argv = ["train", "--config", tiny_toml, "--data", tiny_data, "--out", out, "--max-iters", total, "--resume-auto"]
    seed = random.randrange(1 << 30)
    kill_steps = sorted(random.Random(seed).sample(range(2, total - 4), 3))
    codes = [_run_until_killed(argv, out, step) for step in kill_steps]
    assert -signal.SIGKILL in codes, f"no kill landed (seed {seed})"
    for _ in range(5):  # run it again until it finishes
        if _run_until_killed(argv, out, total + 1) == 0:
            break
    assert max(loss_curve(out)) == total
    assert loss_curve(out) == loss_curve(reference), f"kill steps {kill_steps} (seed {seed})"
    assert val_curve(out) == val_curve(reference)
    assert same_weights(out / CKPT_NAME, reference / CKPT_NAME)
