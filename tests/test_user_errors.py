"""Every mistake a user can make is one clear message, never a traceback, and never damages a file.

One table, one row per mistake. Each row runs the real CLI (in this process, for speed) against fresh
copies of a data folder and a finished run, and asserts:

    the exit code          1 for a failure, 2 for bad usage
    the message            exactly one `Error:` line, then at most one `Hint:` line, at the end of stderr;
                           the Error line names the problem (the row's `says`)
    no traceback           not even in a child library's warning
    no damaged artifact    every file under the test's folder is byte-for-byte what it was (or, for
                           the rows that train, what the row's own check expects), and no temporary
                           file or staging folder is left behind
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from robust_fixtures import (  # noqa: F401  (fixtures are used by name)
    baseline,
    leftovers,
    run_cli,
    scale_training_loss,
    snapshot,
    tiny_data,
    tiny_toml,
)

from gptkit.checkpoint import load_checkpoint, peek_checkpoint
from gptkit.run_folder import CKPT_NAME, saved_steps, step_paths
from gptkit.shards import write_shard


@dataclass
class Env:
    """The folder of one row: `data` (a prepared data folder), `run` (a finished 30-step run keeping
    steps 20, 25, 30), `other` (data tokenized with a different char vocabulary), `toml` (tiny config)."""

    tmp: Path
    data: Path
    run: Path
    other: Path
    toml: Path

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path


@dataclass
class Case:
    id: str
    argv: Callable[[Env], list]
    code: int
    says: list[str]
    setup: Callable[[Env, pytest.MonkeyPatch], None] | None = None
    # Files allowed to change: a row that trains names them and checks them itself in `check`.
    changes: Callable[[Env], list[Path]] = field(default=lambda env: [])
    check: Callable[[Env], None] | None = None


# --- setups -------------------------------------------------------------------------------------------


def edit_meta(**changes):
    def setup(env, monkeypatch):
        meta = json.loads((env.data / "meta.json").read_text())
        meta.update(changes)
        (env.data / "meta.json").write_text(json.dumps(meta))

    return setup


def truncate_shard(env, monkeypatch):
    shard = env.data / "train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:5000])


def old_shard_version(env, monkeypatch):
    shard = bytearray((env.data / "val_000000.bin").read_bytes())
    shard[4:8] = (7).to_bytes(4, "little")  # header[1]: the version
    (env.data / "val_000000.bin").write_bytes(bytes(shard))


def short_val_shard(env, monkeypatch):
    import numpy as np

    write_shard(env.data / "val_000000.bin", np.arange(100, dtype=np.uint16) % 50)  # valid, but not what meta says


def flip_byte(path_of):
    def setup(env, monkeypatch):
        path = path_of(env)
        data = bytearray(path.read_bytes())
        data[-50] ^= 0xFF
        path.write_bytes(bytes(data))

    return setup


def truncate_checkpoint(env, monkeypatch):
    path = step_paths(env.run, 30).checkpoint
    path.write_bytes(path.read_bytes()[:-4000])


def newer_format(path_of):
    def setup(env, monkeypatch):
        from safetensors import safe_open
        from safetensors.torch import save_file

        path = path_of(env)
        with safe_open(str(path), framework="pt") as f:
            metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        save_file(tensors, str(path), metadata={**metadata, "format_version": "99"})

    return setup


def disk_full_for(name_part: str):
    """fsync fails with ENOSPC for files whose name holds `name_part`, as on a disk that just filled."""

    def setup(env, monkeypatch):
        if not Path("/proc/self/fd").is_dir():
            pytest.skip("needs /proc to tell files apart")
        real_fsync = os.fsync

        def fsync(fd):
            try:
                name = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                name = ""
            if name_part in Path(name).name:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    return setup


def nan_loss_at(step: int):
    return lambda env, monkeypatch: scale_training_loss(monkeypatch, {step: float("nan")})


def hide_module(name: str):
    def setup(env, monkeypatch):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError

    return setup


# --- checks of the rows that write --------------------------------------------------------------------


def previous_checkpoint_intact(env):
    assert [p.step for p in saved_steps(env.run)] == [30, 25, 20]
    assert load_checkpoint(env.run / CKPT_NAME).step == 30


def stopped_run_kept_step_5(env):
    new = env.tmp / "new"
    assert [p.step for p in saved_steps(new)] == [5] and peek_checkpoint(new / CKPT_NAME).step == 5


LATIN1 = "café crème\n".encode("latin-1")
TRAIN = lambda env, *more: ["train", "--config", env.toml, "--data", env.data, "--out", env.tmp / "new", *more]  # noqa: E731
RESUME = lambda env, *more: ["train", "--out", env.run, "--resume", *more]  # noqa: E731
EVAL = lambda env, *more: ["eval", "--ckpt", env.run / CKPT_NAME, "--data", env.data, *more]  # noqa: E731
SAMPLE = lambda env, *more: ["sample", "--ckpt", env.run / CKPT_NAME, "--max-new-tokens", 5, "--seed", 1, *more]  # noqa: E731

CASES = [
    # prepare: the input text
    Case("prepare-missing-file", lambda env: ["prepare", "text", env.tmp / "nope.txt", "--out", env.tmp / "d"], 1, ["nope.txt does not exist"]),
    Case("prepare-binary-file", lambda env: ["prepare", "text", env.file("a.bin", b"\x00\x01PK\x03"), "--out", env.tmp / "d"], 1, ["a.bin", "binary"]),
    Case("prepare-latin1-file", lambda env: ["prepare", "text", env.file("l.txt", LATIN1), "--out", env.tmp / "d"], 1, ["l.txt is not valid UTF-8 (byte 3"]),
    Case("prepare-all-bad-files-at-once",
         lambda env: ["prepare", "text", env.file("a.bin", b"\x00\x00"), env.file("ok.txt", "fine\n"), env.file("l.txt", LATIN1), "--out", env.tmp / "d"],
         1, ["2 problems", "a.bin", "binary", "l.txt", "UTF-8"]),
    Case("prepare-empty-file", lambda env: ["prepare", "text", env.file("e.txt", ""), "--out", env.tmp / "d"], 1, ["empty"]),
    Case("prepare-bad-val-fraction", lambda env: ["prepare", "text", env.file("t.txt", "hello\n" * 50), "--val-fraction", 1.5, "--out", env.tmp / "d"], 2, ["--val-fraction must be in [0, 1), got 1.5"]),
    Case("prepare-unknown-tokenizer", lambda env: ["prepare", "text", env.file("t.txt", "hello\n"), "--tokenizer", "nope", "--out", env.tmp / "d"], 2, ["tokenizer", "nope"]),
    Case("prepare-out-is-a-file", lambda env: ["prepare", "text", env.file("t.txt", "hello\n" * 50), "--out", env.file("taken", "x")], 1, ["taken", "not a folder"]),
    Case("prepare-disk-full-keeps-old-data", lambda env: ["prepare", "text", env.file("t.txt", "to be or not\n" * 300), "--out", env.data],
         1, ["no space left on the device", ".bin"], setup=disk_full_for(".bin")),
    # train: the data folder
    Case("train-data-missing", lambda env: TRAIN(env) + ["--data", env.tmp / "nowhere"], 1, ["data folder", "nowhere does not exist"]),
    Case("train-data-not-prepared", lambda env: TRAIN(env) + ["--data", env.tmp], 1, ["is not a gptkit data folder: it has no meta.json"]),
    Case("train-data-newer-version", TRAIN, 1, ["meta.json", "format version 9"], setup=edit_meta(format_version=9)),
    Case("train-data-truncated-shard", TRAIN, 1, ["train_000000.bin", "damaged"], setup=truncate_shard),
    Case("train-data-shard-version", TRAIN, 1, ["val_000000.bin", "shard format version 7"], setup=old_shard_version),
    Case("train-data-shards-disagree-with-meta", TRAIN, 1, ["val shards hold 100 tokens", "promises"], setup=short_val_shard),
    Case("train-data-shorter-than-context", lambda env: TRAIN(env, "--block-size", 10_000), 1, ["val split", "longer than the context"]),
    # train: the configuration
    Case("train-invalid-hyperparameters", lambda env: TRAIN(env, "--max-iters", 0, "--learning-rate", -1, "--n-head", 3), 2,
         ["invalid configuration: ", "train.max_iters must be at least 1 (got 0)", "train.learning_rate must be positive (got -1.0)",
          "model.n_embd (32) must be divisible by model.n_head (3)"]),
    Case("train-config-and-data-at-once", lambda env: TRAIN(env, "--max-iters", 0) + ["--data", env.tmp / "nowhere"], 2,  # usage first (issue 14)
         ["2 problems", "max_iters", "nowhere"]),
    Case("train-bad-robustness-options", lambda env: TRAIN(env, "--on-bad-loss", "ignore", "--keep-checkpoints", 0), 2,
         ["on_bad_loss must be skip or stop", "keep_checkpoints must be at least 1"]),
    Case("train-unknown-device", lambda env: TRAIN(env, "--device", "tpu"), 2, ["unknown device 'tpu'"]),
    Case("train-toml-unknown-and-mistyped", lambda env: ["train", "--config", env.file("c.toml", '[train]\nmax_iter = 5\nbatch_size = "big"\n'), "--data", env.data],
         2, ["unknown setting(s) max_iter", "batch_size should be a int"]),
    Case("train-toml-unknown-table", lambda env: ["train", "--config", env.file("c.toml", "[optimizer]\nlr = 1\n"), "--data", env.data],
         2, ["unknown table(s) optimizer"]),
    Case("train-toml-syntax", lambda env: ["train", "--config", env.file("c.toml", "[train\n"), "--data", env.data], 2, ["not valid TOML"]),
    Case("train-tensorboard-missing", lambda env: TRAIN(env, "--tensorboard"), 1, ["tensorboard package"], setup=hide_module("torch.utils.tensorboard")),
    # train: the run folder and resuming
    Case("train-over-an-existing-run", lambda env: TRAIN(env) + ["--out", env.run], 1, ["run already holds a training run"]),
    Case("resume-nothing-saved", lambda env: ["train", "--out", env.tmp / "empty", "--resume"], 1, ["cannot resume", "no saved training state"]),
    Case("resume-and-overwrite", lambda env: RESUME(env, "--overwrite"), 2, ["contradict"]),
    Case("resume-from-unsaved-step", lambda env: ["train", "--out", env.run, "--resume-from", 7], 1, ["step 7", "saved steps: 30, 25, 20"]),
    Case("resume-other-tokenizer", lambda env: RESUME(env, "--data", env.other), 1, ["tokenized differently"]),
    Case("resume-vocab-mismatch", lambda env: RESUME(env, "--data", env.data), 1, ["vocabulary of 70 tokens"], setup=edit_meta(vocab_size=70)),
    Case("resume-corrupted-checkpoint", RESUME, 1, ["step_000030.safetensors is corrupted"], setup=flip_byte(lambda env: step_paths(env.run, 30).checkpoint)),
    Case("resume-truncated-checkpoint", RESUME, 1, ["step_000030.safetensors is not a readable safetensors file (truncated or damaged"], setup=truncate_checkpoint),
    Case("resume-newer-checkpoint-format", RESUME, 1, ["format version 99, newer than this gptkit"], setup=newer_format(lambda env: step_paths(env.run, 30).checkpoint)),
    Case("resume-disk-full-during-save", lambda env: RESUME(env, "--data", env.data, "--max-iters", 35), 1,
         ["step_000035.safetensors", "no space left on the device", "nothing was half-written"], setup=disk_full_for("step_"),
         changes=lambda env: [env.run / "config.toml", env.run / "metrics.jsonl"], check=previous_checkpoint_intact),
    Case("train-nan-loss-stops", lambda env: TRAIN(env, "--on-bad-loss", "stop", "--max-iters", 10), 1, ["stopped at step 7", "the loss is nan"],
         setup=nan_loss_at(7), changes=lambda env: [env.tmp / "new"], check=stopped_run_kept_step_5),
    # eval
    Case("eval-missing-checkpoint", lambda env: ["eval", "--ckpt", env.tmp / "gone.safetensors", "--data", env.data], 1, ["gone.safetensors", "does not exist"]),
    Case("eval-checkpoint-is-a-folder", lambda env: ["eval", "--ckpt", env.data, "--data", env.data], 1, ["is a folder"]),  # a run folder is fine: its ckpt.safetensors
    Case("eval-resume-state-as-checkpoint", lambda env: ["eval", "--ckpt", step_paths(env.run, 30).state, "--data", env.data], 1, ["not a gptkit.checkpoint file"]),
    Case("eval-other-tokenizer", lambda env: EVAL(env) + ["--data", env.other], 1, ["was tokenized differently (char, 27 characters) from the model in", "ckpt.safetensors (char, 59 characters)"]),
    Case("eval-unknown-split", lambda env: EVAL(env, "--split", "test"), 1, ["data has no 'test' split"]),
    Case("eval-corrupted-checkpoint", EVAL, 1, ["ckpt.safetensors is corrupted"], setup=flip_byte(lambda env: env.run / CKPT_NAME)),
    # sample
    Case("sample-prompt-longer-than-context", lambda env: SAMPLE(env, "--prompt", "To be, or not to be: that is the question."), 1, ["the prompt is 42 tokens long, longer than the model's context of 16 tokens"]),
    Case("sample-prompt-outside-vocabulary", lambda env: SAMPLE(env, "--prompt", "Olá ☃"), 1, ["2 character(s) outside this char tokenizer's vocabulary: 'á', '☃'"]),
    Case("sample-prompt-file-not-utf8", lambda env: SAMPLE(env, "--prompt-file", env.file("p.txt", LATIN1)), 1, ["p.txt", "not valid UTF-8"]),
    Case("sample-prompt-and-prompt-file", lambda env: SAMPLE(env, "--prompt", "A", "--prompt-file", env.file("p.txt", "B")), 2, ["give --prompt or --prompt-file, not both"]),
    Case("sample-negative-temperature", lambda env: SAMPLE(env, "--temperature", -1), 2, ["Invalid value for '--temperature'"]),
    Case("sample-newer-checkpoint-format", lambda env: SAMPLE(env, "--prompt", "A"), 1, ["format version 99"], setup=newer_format(lambda env: env.run / CKPT_NAME)),
    # report
    Case("report-not-a-run", lambda env: ["report", env.data, "--no-plot"], 1, ["no metrics.jsonl"]),
    Case("report-every-bad-run-at-once", lambda env: ["report", env.data, env.tmp / "nowhere", "--no-plot"], 1, ["2 problems", "no metrics.jsonl", "nowhere"]),
    Case("report-without-matplotlib", lambda env: ["report", env.run, "--png", env.tmp / "curves.png"], 1, ["matplotlib"], setup=hide_module("matplotlib.figure")),
]


@pytest.fixture(scope="module")
def other_data(tmp_path_factory):
    """Data tokenized with another char vocabulary (only lowercase letters and spaces)."""
    from gptkit.prepare import prepare_text

    folder = tmp_path_factory.mktemp("other-data")
    (folder / "abc.txt").write_text("the quick brown fox jumps over the lazy dog " * 400)
    prepare_text([folder / "abc.txt"], folder / "data", "char", 0.2)
    return folder / "data"


def test_the_table_covers_at_least_25_mistakes():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_error(case, baseline, tiny_data, tiny_toml, other_data, tmp_path, monkeypatch, capsys):
    env = Env(tmp_path, tmp_path / "data", tmp_path / "run", other_data, tiny_toml)
    shutil.copytree(tiny_data, env.data)
    shutil.copytree(baseline, env.run)
    monkeypatch.delenv("GPTKIT_DEBUG", raising=False)
    argv = case.argv(env)  # builds the row's input files
    if case.setup:
        case.setup(env, monkeypatch)
    before = snapshot(tmp_path)
    others_before = snapshot(other_data)

    code, stdout, stderr = run_cli(argv, capsys)

    assert code == case.code, stderr
    assert "Traceback" not in stderr + stdout
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    tail = lines[errors[0] :]
    assert len(tail) == 1 or (len(tail) == 2 and tail[1].startswith("Hint:")), stderr
    for text in case.says:
        assert text in tail[0], f"{text!r} not in {tail[0]!r}"

    allowed = [str(p.relative_to(tmp_path)) for p in case.changes(env)]
    unchanged = lambda snap: {k: v for k, v in snap.items() if not any(k == a or k.startswith(a + "/") for a in allowed)}  # noqa: E731
    assert unchanged(snapshot(tmp_path)) == unchanged(before), "a file was changed, added or removed"
    assert snapshot(other_data) == others_before
    assert not leftovers(tmp_path)
    if case.check:
        case.check(env)
