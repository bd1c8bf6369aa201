"""Shared fixtures: tiny data, a tiny trained run, an isolated cache, torch's global settings put back
after every test, and an in-process CLI runner.

Everything here is small on purpose (2 layers, 32 wide, contexts of 16 tokens, a few steps) so the
whole suite runs in a minute or two on 2 cores, and nothing touches the network.
"""

from __future__ import annotations

import importlib.util
import io
import os
import random
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# Read before any fixture clears the variable for isolation.
_SHAKESPEARE_ENV = os.environ.get("GPTKIT_SHAKESPEARE")

# Tiny models run fastest on one thread, and several agents share this machine's two cores: a second
# thread spinning against another process makes a 3 ms step take hundreds of ms. (The one place this is
# set for every test module; child processes get the same count through OMP_NUM_THREADS, which also
# keeps their arithmetic bitwise equal to in-process runs.)
torch.set_num_threads(1)

# The tiny model every test trains: small enough for a step to take a few milliseconds.
TINY_MODEL = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0, bias=True)
TINY_TRAIN = dict(
    device="cpu", dtype="float32", max_iters=30, batch_size=8, learning_rate=3e-3, min_lr=3e-4,
    warmup_iters=5, lr_decay_iters=0, eval_interval=15, eval_iters=2, log_interval=5, seed=1234,
)
# The same, as `gptkit train` options.
TINY_TRAIN_ARGS = [
    "--device", "cpu", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
    "--batch-size", "8", "--eval-iters", "2", "--log-interval", "5", "--warmup-iters", "5", "--lr", "3e-3",
]


def find_shakespeare() -> Path | None:
    candidates = [REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"]
    if _SHAKESPEARE_ENV:
        candidates.append(Path(_SHAKESPEARE_ENV))
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="session")
def shakespeare_file() -> Path:
    path = find_shakespeare()
    if path is None:
        pytest.skip(
            "tiny Shakespeare not found at ../shared/data/tinyshakespeare.txt (relative to the repo root) "
            "and GPTKIT_SHAKESPEARE is not set"
        )
    return path


@pytest.fixture(scope="session")
def shakespeare_data(tmp_path_factory, shakespeare_file) -> Path:
    """tiny Shakespeare prepared with the char tokenizer (read-only: don't modify it)."""
    from gptkit.prepare import prepare_shakespeare

    out = tmp_path_factory.mktemp("shakespeare") / "data"
    prepare_shakespeare(out, "char", source=shakespeare_file)
    return out


def make_corpus(num_chars: int = 30_000, seed: int = 0) -> str:
    """Deterministic pseudo-English: lines of words drawn from a small vocabulary, ASCII only."""
    rng = random.Random(seed)
    words = "the a king queen speak thou art my lord good night and what say you come here now".split()
    lines, size = [], 0
    while size < num_chars:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize() + rng.choice(".,!?")
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:num_chars] + "\n"


@pytest.fixture(scope="session")
def small_corpus() -> str:
    return make_corpus()


# Where tests fake a device (a CPU-only torch pretending to have GPUs) or change a process-wide torch
# setting. Only public names are saved: torch fills in private caches (torch.cuda._initialized, ...) as
# it runs, and those must not be rolled back.
_FAKEABLE_MODULES = (torch.cuda, torch.version, torch.backends.mps, importlib.util)


def _tf32_knobs() -> list[tuple[object, str]]:
    """(object, attribute) of every TF32 switch the running torch has. torch >= 2.9 has
    `fp32_precision` per backend and refuses reads of the legacy `allow_tf32` once the new API was used,
    so the legacy flags are only touched on a torch without the new one."""
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        owners = [backends, backends.cuda.matmul, backends.cudnn, backends.cudnn.conv, backends.cudnn.rnn]
        return [(owner, "fp32_precision") for owner in owners]
    return [(backends.cuda.matmul, "allow_tf32"), (backends.cudnn, "allow_tf32")]


@pytest.fixture(autouse=True)
def _global_torch_state_restored():
    """No faked device and no global torch setting outlives its test, whatever its teardown does.

    monkeypatch undoes in reverse order and stops at the first undo that raises (pytest 9 cannot undo
    a patch of torch.backends.cuda.matmul.allow_tf32, a computed attribute), leaving every earlier
    patch, e.g. a faked torch.cuda.is_available, in place for the rest of the session. This fixture is
    set up before monkeypatch (pytest orders autouse fixtures by name, and this name sorts first), so it
    is torn down after it, and puts everything back by value."""
    saved_modules = [
        (module, {name: value for name, value in vars(module).items() if not name.startswith("_")})
        for module in _FAKEABLE_MODULES
    ]
    saved_tf32 = [(owner, name, getattr(owner, name)) for owner, name in _tf32_knobs()]
    saved_dtype = torch.get_default_dtype()
    saved_threads = torch.get_num_threads()
    saved_deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    for module, names in saved_modules:
        for name, value in names.items():
            if vars(module).get(name) is not value:
                setattr(module, name, value)
    for owner, name, value in saved_tf32:
        if getattr(owner, name) != value:
            setattr(owner, name, value)
    torch.set_default_dtype(saved_dtype)
    if torch.get_num_threads() != saved_threads:
        torch.set_num_threads(saved_threads)
    if torch.are_deterministic_algorithms_enabled() != saved_deterministic:
        torch.use_deterministic_algorithms(saved_deterministic)


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    """Every test gets its own gptkit cache, no debug mode, no colour, and no network."""
    monkeypatch.setenv("GPTKIT_CACHE", str(tmp_path_factory.mktemp("gptkit-cache")))
    monkeypatch.delenv("GPTKIT_SHAKESPEARE", raising=False)
    monkeypatch.delenv("GPTKIT_DEBUG", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the network (urllib.request.urlopen)")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, small_corpus) -> Path:
    """A char-level data folder prepared from the generated corpus (read-only: don't modify it)."""
    from gptkit.prepare import prepare_text

    root = tmp_path_factory.mktemp("tiny-data")
    (root / "corpus.txt").write_text(small_corpus, encoding="utf-8")
    out = root / "data"
    prepare_text([root / "corpus.txt"], out, "char", val_fraction=0.1)
    return out


def tiny_configs(data: Path, out: Path, model: dict | None = None, **train_overrides):
    """(ModelConfig, TrainConfig) of the tiny model, with `model` and train settings on top."""
    from gptkit.config import resolve_config

    train = {**TINY_TRAIN, "data": str(data), "out": str(out), **train_overrides}
    return resolve_config(None, None, {**TINY_MODEL, **(model or {})}, train)


@dataclass
class TinyRun:
    out: Path
    ckpt: Path
    data: Path
    result: object


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> TinyRun:
    """A finished 30-step run on `tiny_data` (read-only: copy it before changing anything)."""
    from gptkit.train import train

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    result = train(*tiny_configs(tiny_data, out))
    return TinyRun(out=out, ckpt=out / "ckpt.safetensors", data=tiny_data, result=result)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    return e.code if isinstance(e.code, int) else 1


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run `gptkit ARGS...` in this process through gptkit.cli.main; returns a CliResult."""
    from gptkit.cli import main

    def run(*args: str, stdin: str = "") -> CliResult:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()  # drop anything printed before
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = _exit_code(e)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def subprocess_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTKIT_")}
    env.update(OMP_NUM_THREADS="1", NO_COLOR="1", PYTHONPATH=str(REPO_ROOT), **extra)
    return env


def run_gptkit_process(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 120) -> CliResult:
    """Run `python -m gptkit ARGS...` as a real process (the console entry a user runs)."""
    proc = subprocess.run(
        [sys.executable, "-m", "gptkit", *map(str, args)],
        cwd=cwd, env=env or subprocess_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
