"""Smoke test of the Shakespeare benchmark: a few iterations of every variant, so the script that
records the README's figures keeps working. (Timings are printed, never asserted.)"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_shakespeare_cpu_benchmark_runs_every_variant(shakespeare_file):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTKIT_SHAKESPEARE": str(shakespeare_file)}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "shakespeare_cpu.py"), "--max-iters", "10",
         "--gptkit-args", "--max-iters 10 --eval-interval 10 --eval-iters 1 --log-interval 5"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout
    for row in ("nanogpt-reference", "shakespeare-char-cpu ", "cpu+gpt2-block", "shakespeare-char-cpu-fast"):
        assert row in table
    assert table.count("per-iteration speed-up over the reference") == 3
