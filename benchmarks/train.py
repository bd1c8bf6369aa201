"""Benchmark: training speed of a preset, as ms/iter, tokens/s and MFU against a peak measured in the same run.

    python benchmarks/train.py --preset shakespeare-char-cpu --iters 50 --device cpu --dtype float32
    python benchmarks/train.py --preset gpt2-124m --iters 20 --device cuda --dtype bfloat16

What it does, in order:
  1. writes a throwaway data folder of random tokens (the preset's vocabulary: 66 for the char
     presets, 50257 for GPT-2), unless --data points at a real one: the speed of a step does not
     depend on what the tokens say;
  2. measures the machine's matmul throughput in the run's dtype: the median time of a large square
     matmul (1024 on a CPU, 8192 on a GPU), 2 n^3 FLOPs each. On CUDA the bf16 matmul is measured
     too, and the data-sheet bf16 peak is used when the GPU is in devices.GPU_PEAK_FLOPS;
  3. runs the real `gptkit.train.train()` for warmup + iters optimizer steps (evaluation and
     checkpoints happen only after the last one) and times the steps after the warmup, between two
     progress reports, so the timing includes everything a training run does per step;
  4. prints ms/iter, tokens/s, and MFU = model FLOPs per token (6N + attention, see
     model.flops_per_token) x tokens/s / peak.

This machine is shared and noisy: compare numbers printed by one run, or medians of several runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import numpy as np
import torch

from gptkit.config import resolve_config
from gptkit.devices import Runtime, peak_flops, resolve_runtime
from gptkit.model import GPT, ModelConfig
from gptkit.monitor import Monitor
from gptkit.shards import token_dtype_for, write_meta, write_shard
from gptkit.train import train


def synthetic_data(folder: Path, vocab_size: int, train_tokens: int = 1_000_000, val_tokens: int = 100_000) -> Path:
    rng = np.random.default_rng(0)
    dtype = token_dtype_for(vocab_size)
    splits = {}
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        write_shard(folder / f"{split}_000000.bin", rng.integers(vocab_size - 1, size=n).astype(dtype))
        splits[split] = {"tokens": n, "bytes": n, "shards": [f"{split}_000000.bin"]}
    spec = {"type": "synthetic", "vocab_size": vocab_size}
    write_meta(folder, spec, vocab_size, vocab_size - 1, splits, {"name": "random tokens (benchmark)"})
    return folder


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 20) -> float:
    """Median FLOP/s of an n x n x n matmul in `dtype`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


class Timer(Monitor):
    """Notes when each progress report (every `log_interval` steps) arrives."""

    def __init__(self):
        self.reports: list[tuple[int, float]] = []

    def step(self, record: dict) -> None:
        self.reports.append((record["step"], time.perf_counter()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="shakespeare-char-cpu")
    ap.add_argument("--iters", type=int, default=50, help="timed optimizer steps (after the warmup)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (torch.compile, allocator, caches)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--compile", choices=("auto", "true", "false"), default=None, help="[default: the preset's]")
    ap.add_argument("--batch-size", type=int, default=None, help="[default: the preset's]")
    ap.add_argument("--grad-accum", type=int, default=None, help="[default: the preset's]")
    ap.add_argument("--data", default=None, help="a prepared data folder instead of random tokens")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any train or model setting, e.g. optimizer=muon, vocab_multiple=1 (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args()
    if args.warmup < 1 or args.iters < 1:
        ap.error("--warmup and --iters must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    runtime = resolve_runtime(args.device, args.dtype)
    overrides = {k: v for k, v in dict(batch_size=args.batch_size, grad_accum=args.grad_accum, compile=args.compile).items() if v is not None}
    for setting in args.set:  # KEY=VALUE, the value read as in a TOML file (a bare word is a string)
        key, _, value = setting.partition("=")
        try:
            overrides[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = value
    iters = -(-args.iters // args.warmup) * args.warmup  # a whole number of report intervals
    # A model setting (e.g. vocab_multiple=1, to measure the padding) goes to the model, the rest to train.
    model_fields = {f.name for f in fields(ModelConfig)}
    model_overrides = {k: v for k, v in overrides.items() if k in model_fields}
    train_overrides = {k: v for k, v in overrides.items() if k not in model_fields}
    model_config, cfg = resolve_config(
        args.preset, None, model_overrides,
        {**train_overrides, "device": str(runtime.device), "dtype": args.dtype, "max_iters": args.warmup + iters,
         "log_interval": args.warmup, "eval_interval": 10**9, "eval_iters": 1},
    )

    # 2. the peak, measured here and now
    n = 8192 if runtime.device.type == "cuda" else 1024
    peak = matmul_flops(runtime.device, runtime.dtype, n)
    peak_bf16 = matmul_flops(runtime.device, torch.bfloat16, n) if runtime.device.type == "cuda" else None

    with tempfile.TemporaryDirectory(prefix="gptkit-bench-") as tmp:
        if args.data:
            data = Path(args.data)
        else:
            vocab = 66 if "char" in args.preset else 50257
            data = synthetic_data(Path(tmp) / "data", vocab)
        from dataclasses import replace

        from gptkit.shards import read_meta

        cfg = replace(cfg, data=str(data), out=str(Path(tmp) / "run"))
        model_config = replace(model_config, vocab_size=read_meta(data)["vocab_size"])
        timer = Timer()
        train(model_config, cfg, overwrite=True, monitor=timer)

    # 3. the timed window: from the report at the end of the warmup to the last one
    (first_step, first_time), (last_step, last_time) = timer.reports[0], timer.reports[-1]
    steps = last_step - first_step
    seconds = last_time - first_time
    with torch.device("meta"):  # only to count FLOPs: no memory, no init
        flops_per_token = GPT(model_config).flops_per_token()
    tokens_per_step = cfg.batch_size * model_config.block_size * cfg.grad_accum
    tokens_per_sec = tokens_per_step * steps / seconds
    model_flops = flops_per_token * tokens_per_sec
    table_peak = peak_flops(Runtime(runtime.device, torch.bfloat16))
    result = {
        "preset": args.preset,
        "settings": overrides,
        "device": runtime.describe(),
        "torch_threads": torch.get_num_threads(),
        "compile": cfg.compile,
        "tokens_per_step": tokens_per_step,
        "timed_steps": steps,
        "ms_per_iter": 1000 * seconds / steps,
        "tokens_per_sec": tokens_per_sec,
        "model_gflops_per_sec": model_flops / 1e9,
        f"peak_matmul_{str(runtime.dtype).removeprefix('torch.')}_gflops": peak / 1e9,
        "mfu_vs_measured_peak": model_flops / peak,
    }
    if peak_bf16 is not None:
        result["peak_matmul_bfloat16_gflops"] = peak_bf16 / 1e9
        result["mfu_vs_measured_bf16_peak"] = model_flops / peak_bf16
    if table_peak is not None:
        result["mfu_vs_datasheet_bf16_peak"] = model_flops / table_peak
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.preset} {' '.join(args.set)} on {result['device']} ({result['torch_threads']} threads, "
          f"compile {cfg.compile}), {steps} timed steps of {tokens_per_step:,} tokens")
    for key, value in result.items():
        if key not in ("preset", "settings", "device", "torch_threads", "compile"):
            print(f"  {key:<32}{value:>14,.3f}" if isinstance(value, float) else f"  {key:<32}{value:>14,}")


if __name__ == "__main__":
    sys.exit(main())
