"""A closed stdout is a normal end in a pipeline: `gptkit ... | head` exits 0, with no traceback, so a
`set -o pipefail` script goes on (README: exit codes)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import subprocess_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")


@pytest.fixture(scope="module")
def long_text(tmp_path_factory, tiny_run):
    """Text in the tiny model's own characters, long enough that its ids outrun any pipe buffer."""
    from gptkit.shards import Split
    from gptkit.tokenizers import load_tokenizer

    tokens = Split.open(tiny_run.data, "train").shards[0][:20_000].tolist()
    path = tmp_path_factory.mktemp("pipes") / "many.txt"
    path.write_text(load_tokenizer(tiny_run.data).decode(tokens) * 10, encoding="utf-8")
    return path


def _pipeline(command: str, cwd) -> subprocess.CompletedProcess:
    """Run `COMMAND | head -c 20` under bash with pipefail; its status is gptkit's if head's is 0."""
    script = f"set -o pipefail; {command} | head -c 20 > /dev/null"
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command",
    [
        "{gptkit} sample --ckpt {ckpt} --max-new-tokens 5000 --device cpu",
        "{gptkit} tokenize encode --tokenizer {ckpt} {text}",
        "{gptkit} tokenize encode --tokenizer {ckpt} {text} | {gptkit} tokenize decode --tokenizer {ckpt}",
        "{gptkit} eval --ckpt {ckpt} --device cpu --json --max-batches 2",
    ],
    ids=["sample", "tokenize-encode", "tokenize-decode", "eval-json"],
)
def test_a_reader_that_leaves_early_is_a_normal_end(command, tiny_run, long_text, tmp_path):
    gptkit = f"{sys.executable} -m gptkit"
    done = _pipeline(command.format(gptkit=gptkit, ckpt=tiny_run.out / "ckpt.safetensors", text=long_text), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Error" not in done.stderr
