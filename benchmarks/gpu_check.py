"""The GPU check: the whole pipeline on a GPU, then the speed figures docs/performance.md asks for.

    GPTKIT_SHAKESPEARE=tinyshakespeare.txt python benchmarks/gpu_check.py --out results/

Made for a short loan of a GPU machine: one command, about 5 minutes on an H100, that leaves every
result in --out (results.json, the commands' logs) and prints a markdown table to paste into
docs/performance.md. In order:

  1. the pipeline through the real CLI on the device: prepare tiny Shakespeare (char), train the
     `shakespeare-char` preset for --pipeline-steps steps, resume it for a few more, evaluate, sample,
     and a short run in float16 (the gradient scaler's path). Each command must exit 0, and the resumed
     run must have continued from the saved step;
  2. benchmarks/train.py for each speed configuration (--configs): ms/iter, tokens/s and MFU.

Any device works (`--device cpu` with tiny settings is how the test suite runs this script), but the
default configurations are sized for one large GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_TRAIN = Path(__file__).with_name("train.py")

# name -> benchmarks/train.py arguments. gpt2-124m trains on random GPT-2 tokens; warmup 5 covers
# torch.compile's first steps.
GPU_CONFIGS = {
    "shakespeare-char": ["--preset", "shakespeare-char", "--iters", "50", "--data", "{data}"],
    "gpt2-124m": ["--preset", "gpt2-124m", "--iters", "10", "--warmup", "5"],
    "gpt2-124m, no compile": ["--preset", "gpt2-124m", "--iters", "10", "--warmup", "5", "--compile", "false"],
    "gpt2-124m, vocabulary not padded": ["--preset", "gpt2-124m", "--iters", "10", "--warmup", "5",
                                         "--set", "vocab_multiple=1"],
}


def gptkit(args: list[str], log: Path, stdin: str | None = None) -> str:
    """Run one gptkit command; its stderr goes to `log`, its stdout is returned. Raises on failure."""
    with log.open("a") as err:
        err.write(f"$ gptkit {' '.join(args)}\n")
        err.flush()
        done = subprocess.run([sys.executable, "-m", "gptkit", *args], input=stdin, stdout=subprocess.PIPE,
                              stderr=err, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gptkit {' '.join(args)} exited {done.returncode}; see {log}")
    return done.stdout.strip()


def pipeline(out: Path, device: str, steps: int, extra: list[str]) -> dict:
    log = out / "pipeline.log"
    started = time.perf_counter()
    data = gptkit(["prepare", "shakespeare", "--out", str(out / "data")], log)
    run = out / "run"
    first = json.loads(gptkit(["train", "--data", data, "--out", str(run), "--preset", "shakespeare-char",
                               "--device", device, *extra, "--max-iters", str(steps), "--overwrite", "--json"], log))
    more = steps + max(1, steps // 4)  # the resumed run keeps its saved config, with a later end
    resumed = json.loads(gptkit(["train", "--out", str(run), "--resume", "--device", device,
                                 "--max-iters", str(more), "--json"], log))
    if resumed["step"] != more:
        raise SystemExit(f"resume ended at step {resumed['step']}, expected {more}")
    evaluation = json.loads(gptkit(["eval", "--ckpt", resumed["checkpoint"], "--device", device, "--json"], log))
    text = gptkit(["sample", "--ckpt", resumed["checkpoint"], "--device", device, "--max-new-tokens", "200",
                   "--seed", "1337"], log, stdin="ROMEO:")
    # The other precision path, briefly: float16 autocast with the gradient scaler (pre-Ampere GPUs').
    # (DDP and FSDP need two GPUs: NCCL refuses two ranks on one, and a single rank skips them.)
    short = max(2, steps // 4)
    fp16 = json.loads(gptkit(["train", "--data", data, "--out", str(out / "run-fp16"), "--preset", "shakespeare-char",
                              "--device", device, *extra, "--dtype", "float16", "--max-iters", str(short),
                              "--eval-interval", str(short), "--overwrite", "--json"], log))
    return {"data": data, "first": first, "resumed": resumed, "eval": evaluation, "sample": text, "float16": fp16,
            "seconds": time.perf_counter() - started}


def speed(name: str, argv: list[str], device: str, out: Path) -> dict:
    cmd = [sys.executable, str(BENCH_TRAIN), *argv, "--device", device, "--json"]
    with (out / "speed.log").open("a") as err:
        err.write(f"$ {' '.join(cmd)}\n")
        err.flush()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    if done.returncode != 0:
        return {"name": name, "error": f"exit {done.returncode}; see speed.log"}
    return {"name": name, **json.loads(done.stdout.strip().splitlines()[-1])}


def markdown(results: list[dict]) -> str:
    # The measured peak is the bf16 matmul's on a GPU, the run dtype's elsewhere (benchmarks/train.py).
    rows = ["| run | device | ms/iter | tokens/s | MFU (data sheet) | MFU (measured peak) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['name']} | failed: {r['error']} | | | | |")
            continue
        sheet = r.get("mfu_vs_datasheet_bf16_peak")
        measured = r.get("mfu_vs_measured_bf16_peak", r.get("mfu_vs_measured_peak"))
        rows.append(f"| {r['name']} | {r['device']} | {r['ms_per_iter']:.1f} | {r['tokens_per_sec']:,.0f} | "
                    f"{'' if sheet is None else f'{sheet:.1%}'} | {measured:.1%} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-check", help="folder for results.json, logs, data and checkpoints")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--pipeline-steps", type=int, default=200, help="training steps of the pipeline check")
    ap.add_argument("--pipeline-args", default="", help="extra `gptkit train` options for the pipeline check")
    ap.add_argument("--configs", default=",".join(GPU_CONFIGS), help="comma-separated names of GPU_CONFIGS")
    ap.add_argument("--bench-args", default="", help="extra benchmarks/train.py options for every configuration")
    args = ap.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in GPU_CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; known: {list(GPU_CONFIGS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": args.device,
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "GPTKIT_SHAKESPEARE": os.environ.get("GPTKIT_SHAKESPEARE")}
    print(f"environment: {env}", file=sys.stderr)
    checked = pipeline(out, args.device, args.pipeline_steps, args.pipeline_args.split())
    print(f"pipeline ok in {checked['seconds']:.0f} s: val loss {checked['eval']['val_loss']:.4f}, sample:\n"
          f"{checked['sample'][:300]}", file=sys.stderr)
    results = []
    for name in names:
        argv = [a.format(data=checked["data"]) for a in GPU_CONFIGS[name]] + args.bench_args.split()
        results.append(speed(name, argv, args.device, out))
        print(f"{name}: {results[-1]}", file=sys.stderr)
    (out / "results.json").write_text(json.dumps({"environment": env, "pipeline": checked, "speed": results}, indent=1))
    print(markdown(results))
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
