"""One writer per folder (issue: artifacts you can trust): a second `train` or `prepare` on a folder that
another process is writing is refused at once, and the first one's files are those of an undisturbed run."""

from __future__ import annotations

import signal
import sys
import time

import pytest
from robust_fixtures import (  # noqa: F401  (fixtures are used by name)
    baseline,
    gptkit_process,
    loss_curve,
    records,
    run_cli,
    same_weights,
    snapshot,
    tiny_data,
    tiny_toml,
)

from gptkit.run_folder import CKPT_NAME, saved_steps

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock locks are POSIX only")


def _argv(tiny_toml, tiny_data, out, *more):
    return ["train", "--config", tiny_toml, "--data", tiny_data, "--out", out, *more]  # the baseline's 30 steps


def _wait_for_first_step(process, out, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if (out / "metrics.jsonl").exists() and any("loss" in r for r in records(out)):
            return
        time.sleep(0.05)
    raise AssertionError("the first run did not start training")


@pytest.mark.parametrize("second", [(), ("--overwrite", "--lr", "0.01")], ids=["same-command", "overwrite"])
def test_a_second_train_on_a_live_run_folder_is_refused(tiny_toml, tiny_data, baseline, tmp_path, second, capsys):
    out = tmp_path / "run"
    first = gptkit_process(_argv(tiny_toml, tiny_data, out))
    try:
        _wait_for_first_step(first, out)
        # The first is paused mid-run (SIGSTOP: it keeps its lock), so the second surely meets a live
        # writer however fast the first would finish; the second runs in this process (a lock belongs to
        # a process, so this is a second writer like any other).
        first.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        try:
            code, _, stderr = run_cli(_argv(tiny_toml, tiny_data, out, *second), capsys)
        finally:
            first.send_signal(signal.SIGCONT)
        assert code == 1, stderr
        assert time.monotonic() - started < 5  # at once, before touching anything
        error = next(line for line in stderr.splitlines() if line.startswith("Error:"))
        assert f"the run folder {out} is in use by process {first.pid}" in error and "started 20" in error
        assert "train --config" in error  # the holder's command line
        assert "Hint:" in stderr and "--out" in stderr
        assert first.wait(120) == 0
    finally:
        first.kill()
    # the first run's files are exactly an undisturbed run's
    assert loss_curve(out) == loss_curve(baseline)
    assert same_weights(out / CKPT_NAME, baseline / CKPT_NAME)
    assert [p.step for p in saved_steps(out)] == [p.step for p in saved_steps(baseline)]


def test_a_killed_holder_frees_the_folder_for_the_same_command(tiny_toml, tiny_data, baseline, tmp_path):
    out = tmp_path / "run"
    argv = _argv(tiny_toml, tiny_data, out, "--resume-auto")
    first = gptkit_process(argv)
    deadline = time.monotonic() + 60
    while not saved_steps(out):  # killed once a step is saved
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    again = gptkit_process(argv)
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert "resumed from step" in stderr and "in use by" not in stderr
    assert loss_curve(out) == loss_curve(baseline)


def test_a_refused_run_leaves_no_empty_folder(tiny_toml, tmp_path):
    from gptkit.cli import main

    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(tiny_toml), "--data", str(tmp_path / "missing"), "--out", str(out)])
    assert e.value.code == 1 and not out.exists()


def test_two_prepares_into_one_folder_one_refused_one_intact(tmp_path, capsys):
    big, small = tmp_path / "big.txt", tmp_path / "small.txt"
    big.write_text(("All the world's a stage, and all the men and women merely players.\n" * 150_000), encoding="utf-8")
    small.write_text("They have their exits and their entrances.\n" * 50, encoding="utf-8")
    out = tmp_path / "data"
    first = gptkit_process(["prepare", "text", big, "--out", out])
    staging = tmp_path / ".data.preparing"
    deadline = time.monotonic() + 60
    while not staging.exists():  # the first holds the lock and is writing its shards
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.001)
    first.send_signal(signal.SIGSTOP)  # paused while it writes (it keeps its lock): surely a live writer
    try:
        code, _, stderr = run_cli(["prepare", "text", small, "--out", out], capsys)
    finally:
        first.send_signal(signal.SIGCONT)
    assert code == 1, stderr
    assert f"the data folder {out} is in use by process {first.pid}" in stderr
    _, first_err = first.communicate(timeout=180)
    assert first.returncode == 0, first_err
    from gptkit.shards import read_meta, verify_data_folder

    assert verify_data_folder(out)["checksums_verified"] == 2  # intact, and the first's
    assert "big.txt" in str(read_meta(out)["source"]) and "small.txt" not in str(read_meta(out)["source"])
    assert not staging.exists()
