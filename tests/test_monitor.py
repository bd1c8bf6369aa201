"""Monitoring: the live panel on a terminal, plain lines elsewhere, metrics.jsonl always, TensorBoard
on request."""

from __future__ import annotations

import io
import json
import math
import os
import pty
import subprocess
import sys

import pytest
from robust_fixtures import (  # noqa: F401  (fixtures are used by name)
    REPO,
    baseline,
    records,
    tiny_configs,
    tiny_data,
    tiny_toml,
)
from rich.console import Console

from gptkit.monitor import MetricsLog, PlainMonitor, RichMonitor
from gptkit.train import train

STEP = {
    "step": 40, "loss": 1.23456, "lr": 3e-4, "grad_norm": 0.42, "tokens_per_sec": 12345.0, "ms_per_iter": 51.9,
    "eta_s": 65.0, "elapsed_s": 125.0, "mfu": 0.41, "peak_memory_mb": 1536.0,
}
EVAL = {"step": 40, "train_loss": 1.4, "val_loss": 1.5, "best": True}


def test_the_live_panel_shows_every_measure():
    console = Console(file=io.StringIO(), force_terminal=True, width=100, record=True)
    monitor = RichMonitor(console, title="gptkit train → out/x")
    monitor.start(100, 0)
    monitor.step(STEP)
    monitor.evaluation(EVAL)
    monitor.close()  # draws the final panel
    text = console.export_text()
    for expected in (
        "gptkit train → out/x", "step 40/100", "loss", "1.2346", "val loss", "1.5000  (best 1.5000 @ 40)",
        "lr", "3.00e-04", "grad norm", "0.420", "tokens/s", "12,345", "MFU", "41.0%", "ETA", "1:05",
        "elapsed", "2:05", "memory", "1.5 GB", "ms/iter", "51.9",
    ):
        assert expected in text, expected
    assert "step 40: train loss 1.4000, val loss 1.5000 (best)" in text  # the eval scrolled above


def test_the_panel_marks_what_is_not_known_yet():
    console = Console(file=io.StringIO(), force_terminal=True, width=100, record=True)
    monitor = RichMonitor(console)
    monitor.start(50, 10)  # a resumed run, before its first report
    monitor.close()
    text = console.export_text()
    assert "step 10/50" in text and "val loss" in text and "MFU" in text and text.count("—") >= 6


def test_plain_lines_carry_the_same_measures():
    stream = io.StringIO()
    monitor = PlainMonitor(stream)
    monitor.start(100, 0)
    monitor.step(STEP)
    monitor.step({**STEP, "loss": None, "grad_norm": None, "mfu": None, "skipped": 2})
    monitor.evaluation(EVAL)
    lines = stream.getvalue().splitlines()
    assert lines[0] == (
        "step     40/100 | loss 1.2346 | lr 3.00e-04 | grad norm 0.420 | 12,345 tok/s | 51.9 ms/iter | "
        "MFU 41.0% | mem 1.5 GB | ETA 1:05"
    )
    assert "loss - |" in lines[1] and "MFU" not in lines[1] and lines[1].endswith("2 skipped")
    assert lines[2] == "eval     40 | train loss 1.4000 | val loss 1.5000  (best)"


def test_metrics_jsonl_records_every_step_and_evaluation(baseline):
    rows = records(baseline)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    for r in steps:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "ms_per_iter", "elapsed_s", "time"} <= r.keys()
        assert math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["tokens_per_sec"] > 0
        assert "mfu" not in r  # unknown on a CPU
    assert [r["elapsed_s"] for r in steps] == sorted(r["elapsed_s"] for r in steps)
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [5, 10, 15, 20, 25, 30]
    assert all(set(r) == {"step", "train_loss", "val_loss", "time"} for r in evals)


def test_mfu_is_reported_when_the_peak_is_known(tiny_data, tiny_toml, tmp_path, monkeypatch):
    import gptkit.train

    monkeypatch.setattr(gptkit.train, "peak_flops", lambda runtime: 1e12)
    out = tmp_path / "run"
    train(*tiny_configs(tiny_toml, tiny_data, out, max_iters=3))
    import tomllib

    from gptkit.model import GPT, ModelConfig

    model_config = ModelConfig(**tomllib.loads((out / "config.toml").read_text())["model"])
    flops_per_token = GPT(model_config).flops_per_token()
    for r in (r for r in records(out) if "loss" in r):
        assert r["mfu"] == pytest.approx(flops_per_token * r["tokens_per_sec"] / 1e12)


def test_resuming_metrics_drops_later_and_broken_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in range(1, 6)] + ['{"step": 6, "lo']  # cut by a crash
    path.write_text("\n".join(lines))
    log = MetricsLog(path, keep_until_step=3)
    log.write({"step": 4, "loss": 0.5})
    log.close()
    assert [(r["step"], r["loss"]) for r in map(json.loads, path.read_text().splitlines())] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 0.5)]


def test_tensorboard_gets_the_same_measures(tiny_data, tiny_toml, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(*tiny_configs(tiny_toml, tiny_data, out, max_iters=10, tensorboard=True))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"loss/train", "loss/val", "optim/lr", "optim/grad_norm", "speed/tokens_per_sec"} <= set(events.Tags()["scalars"])
    logged = {e.step: e.value for e in events.Scalars("loss/train")}
    expected = {r["step"]: r["loss"] for r in records(out) if "loss" in r}
    assert logged.keys() == expected.keys()
    assert all(logged[s] == pytest.approx(expected[s], rel=1e-6) for s in expected)
    assert [e.step for e in events.Scalars("loss/val")] == [5, 10]


def test_a_terminal_gets_the_live_panel_and_stdout_stays_data(tiny_data, tiny_toml, tmp_path):
    """The real CLI with stderr on a pseudo-terminal, as in an interactive shell."""
    out = tmp_path / "run"
    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="100", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "gptkit", "train", "--config", str(tiny_toml), "--data", str(tiny_data), "--out", str(out), "--max-iters", "10"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=follower, text=True,
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    stdout = child.stdout.read()
    assert child.wait(timeout=60) == 0
    os.close(leader)
    text = screen.decode("utf-8", errors="replace")
    assert "╭" in text and "╰" in text  # the panel's frame
    for expected in ("gptkit train →", "step 10/10", "val loss", "grad norm", "tokens/s", "MFU", "ETA", "memory"):
        assert expected in text, expected
    assert stdout == f"{out / 'ckpt.safetensors'}\n"
