"""Smoke test of the Shakespeare benchmark: a few iterations of every variant, so the script that
records the README's figures keeps working. (Timings are printed, never asserted.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT, subprocess_env


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


def test_gpu_check_runs_the_pipeline_and_a_speed_configuration(shakespeare_file, tmp_path):
    """The GPU check, run on the CPU with tiny settings: every command of the pipeline and the speed
    benchmark must work, so that a short GPU loan is not spent finding a typo."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTKIT_SHAKESPEARE": str(shakespeare_file)}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path), "--device", "cpu",
         "--pipeline-steps", "8",
         "--pipeline-args", "--n-layer 1 --n-embd 32 --n-head 2 --block-size 32 --batch-size 4 --eval-iters 1",
         "--configs", "shakespeare-char", "--bench-args", "--iters 2 --warmup 1 --batch-size 1"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["pipeline"]["resumed"]["step"] == 10
    assert results["pipeline"]["sample"].startswith("ROMEO:")
    assert results["pipeline"]["float16"]["step"] == 2
    [speed] = results["speed"]
    assert speed["name"] == "shakespeare-char" and speed["tokens_per_sec"] > 0
    assert "| shakespeare-char | cpu, float32 |" in done.stdout


def test_finetune_benchmark_compares_full_and_lora():
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "finetune.py"), "--n-layer", "2", "--n-embd", "64", "--n-head", "2",
         "--block-size", "32", "--iters", "1", "--json"],
        capture_output=True, text=True, timeout=300, env=subprocess_env(),
    )
    report = json.loads(done.stdout)
    full, lora = report["results"]["full"], report["results"]["lora"]
    assert lora["trainable_params"] < full["trainable_params"] == full["total_params"]
    assert report["checks"]["optimizer state <= 2% of full's"]
    assert lora["optimizer_state_bytes"] == 8 * lora["trainable_params"]  # AdamW: two float32 moments each


def test_generation_benchmark_runs_every_method_in_its_quickest_mode():
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "generate.py"), "--quick", "--models", "small", "--batches", "1,8",
         "--quantize", "--json"],
        capture_output=True, text=True, timeout=300, env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    small = report["results"]["small"]
    for batch in ("1", "8"):
        assert set(small[batch]) == {"gptkit engine", "engine on one core", "engine nn.Linear layout", "gptkit no cache", "transformers", "nanoGPT loop"}
        assert all(rate > 0 for rate in small[batch].values())
    assert small["engine_b8_vs_transformers_b1"] > 0 and report["int8"]["small"]["speedup"] > 0
    assert "| small | 8 | 12 | transformers |" in done.stdout


def test_speedrun_quick_mode_reports_iterations_ms_and_ratios(shakespeare_file):
    """The speedrun's smoke mode: both recipes, the crossing found (a target any run reaches), the ratios printed."""
    env = {**os.environ, "GPTKIT_SHAKESPEARE": str(shakespeare_file)}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "speedrun.py"), "--quick", "--threads", "1", "--target", "9.0", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    # Every evaluation after the first is below 9.0 (a fresh char model starts near ln 65 = 4.2): crossed at 5.
    assert report["reference"]["iters_mean"] == 5 and report["gptkit"]["iters_mean"] == 5
    assert report["reference"]["all_reached"] and report["gptkit"]["all_reached"]
    ms = report["ms_per_iter"]
    assert ms["reference"] > 0 and ms["gptkit"] > 0
    assert abs(report["time_ratio"] - report["iters_ratio"] * ms["reference"] / ms["gptkit"]) < 1e-9
    assert "time ratio (nanoGPT / gptkit)" in done.stdout and "nanoGPT (restated)" in done.stdout


STAND_IN_TRAIN_PY = '''
import sys, time
from pathlib import Path
args = dict(a[2:].split("=", 1) for a in sys.argv[2:] if a.startswith("--"))
exec(Path(sys.argv[1]).read_text())  # nanoGPT's configurator runs the config file the same way
assert Path("data/shakespeare_char/train.bin").read_bytes() == Path("data/shakespeare_char/input.txt").read_bytes()
assert dataset == "shakespeare_char" and args["device"] == "cpu" and args["block_size"] == "64"
for it in range(int(args["max_iters"]) + 1):
    if it % int(args["eval_interval"]) == 0:
        print(f"step {it}: train loss 4.2000, val loss {4.2 - it / 100:.4f}", flush=True)
    print(f"iter {it}: loss 4.1000, time {10 + it % 3:.2f}ms, mfu -100.00%", flush=True)
'''


def test_speedrun_runs_a_nanogpt_checkout_and_reads_its_log(tmp_path, shakespeare_file):
    """--nanogpt-dir: the checkout's scripts are copied beside its data, prepare.py is run on our corpus, and
    train.py's own log lines (nanoGPT's format) give the evaluations and ms/iter. The checkout here is a
    stand-in that prints that format (no network for nanoGPT itself)."""
    checkout = tmp_path / "nanoGPT"
    (checkout / "data" / "shakespeare_char").mkdir(parents=True)
    (checkout / "train.py").write_text(STAND_IN_TRAIN_PY)
    (checkout / "model.py").write_text("")
    (checkout / "configurator.py").write_text("")
    (checkout / "data" / "shakespeare_char" / "prepare.py").write_text(
        "from pathlib import Path\nPath('train.bin').write_bytes(Path('input.txt').read_bytes())\n"
    )
    env = {**os.environ, "GPTKIT_SHAKESPEARE": str(shakespeare_file)}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "speedrun.py"), "--quick", "--threads", "1", "--target", "9.0",
         "--nanogpt-dir", str(checkout), "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["reference"]["iters_mean"] == 5 and report["reference"]["all_reached"]
    assert 10 <= report["ms_per_iter"]["reference"] <= 12  # the medians of its "time ...ms" lines
    assert "nanoGPT (train.py)" in done.stdout
    assert not (checkout / "data" / "shakespeare_char" / "input.txt").exists()  # the checkout stays untouched
