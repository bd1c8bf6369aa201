"""Shared helpers for the robustness tests (resume, crash safety, user errors, monitoring, report).

Everything is tiny so each training run takes a fraction of a second: a char-level model of 2 layers,
32 wide, context 16, trained for 30 steps on the first 60,000 characters of tiny Shakespeare. The same
settings live in one TOML file, so runs made in-process (train()) and through the CLI in a subprocess
are the same run, bitwise.

Test modules import the fixtures they use by name: `from robust_fixtures import tiny_data, ...`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

TINY_TOML = """\
[model]
n_layer = 2
n_head = 2
n_embd = 32
block_size = 16
dropout = 0.1
bias = false

[train]
device = "cpu"
dtype = "float32"
seed = 7
max_iters = 30
lr_decay_iters = 30
batch_size = 4
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 3
eval_interval = 5
eval_iters = 2
log_interval = 1
"""


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A char-level data folder (train/val shards, meta.json) made by `gptkit prepare`."""
    from gptkit.prepare import prepare_text

    if not SHAKESPEARE.is_file():
        pytest.skip(f"tiny Shakespeare not found at {SHAKESPEARE}")
    folder = tmp_path_factory.mktemp("robust-data")
    source = folder / "shakespeare-60k.txt"
    source.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    prepare_text([source], folder / "data", "char", 0.1)
    return folder / "data"


@pytest.fixture(scope="session")
def tiny_toml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("robust-config") / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def tiny_configs(toml: Path, data: Path, out: Path, **train_overrides):
    from gptkit.config import resolve_config

    return resolve_config(None, toml, {}, {"data": str(data), "out": str(out), **train_overrides})


@pytest.fixture(scope="session")
def baseline(tiny_data, tiny_toml, tmp_path_factory) -> Path:
    """An uninterrupted 30-step run: the reference every resumed run must reproduce bitwise."""
    from gptkit.train import train

    out = tmp_path_factory.mktemp("robust-baseline") / "run"
    train(*tiny_configs(tiny_toml, tiny_data, out))
    return out


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def loss_curve(run: Path) -> dict[int, float]:
    """step -> training loss, from metrics.jsonl (log_interval = 1: every step)."""
    return {r["step"]: r["loss"] for r in records(run) if "loss" in r}


def val_curve(run: Path) -> dict[int, float]:
    return {r["step"]: r["val_loss"] for r in records(run) if "val_loss" in r}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from gptkit.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint).state_dict


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder` (hidden temp files included)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[Path]:
    """Temporary files or staging folders an interrupted write could leave behind."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return [p for p in folder.rglob(".*") if p.name.endswith((".tmp", ".preparing", ".old"))]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in this process (fast: torch is already imported); returns (code, stdout, stderr)."""
    from gptkit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def gptkit_process(argv: list[str], **kwargs) -> subprocess.Popen:
    """`python -m gptkit ARGV` in a child process running this checkout, with as many CPU threads as
    this process uses, so that its arithmetic matches in-process runs bitwise."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(torch.get_num_threads()), NO_COLOR="1")
    env.pop("GPTKIT_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "gptkit", *map(str, argv)], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,
    )


def scale_training_loss(monkeypatch, factors: dict[int, float]) -> None:
    """Multiply the training loss of the given steps (1-based, one micro-batch per step) by a factor:
    nan or inf to make the step's loss and gradients non-finite, 4.0 for a spike."""
    from gptkit.model import GPT

    original, calls = GPT.forward, [0]

    def forward(self, idx, targets=None, cache=None):
        logits, loss = original(self, idx, targets, cache)
        if self.training and targets is not None:
            calls[0] += 1
            loss = loss * factors.get(calls[0], 1.0)
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward)
