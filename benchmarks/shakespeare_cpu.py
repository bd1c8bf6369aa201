"""Benchmark: gptkit's CPU presets against nanoGPT's recipe, side by side in one run.

    python benchmarks/shakespeare_cpu.py [--source tinyshakespeare.txt] [--repeats 1]
        [--variants shakespeare-char-cpu,cpu+gpt2-block,shakespeare-char-cpu-fast]

Prepares tiny Shakespeare (char) once, then for each repeat runs, one after the other on the same
machine: the nanoGPT reference (benchmarks/nanogpt_reference.py, 2000 iterations) and `gptkit train`
in each variant (see VARIANTS). Prints, for each, the final val loss (nanoGPT's 20-batch estimate and the exact
loss over the whole val split), the process's wall time and the median ms per training iteration,
then the ratios to the reference. The machine is noisy: trust ratios within one run, not absolutes,
and run it on an otherwise idle machine (a busy core slows torch's threads many times over).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent.parent / "shared" / "data" / "tinyshakespeare.txt"


def run(cmd: list[str]) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return done.stdout, wall


def bench_reference(data: Path, max_iters: int) -> dict:
    out, wall = run([sys.executable, str(HERE / "nanogpt_reference.py"), "--data", str(data), "--max-iters", str(max_iters)])
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "wall_s": wall}


# What runs beside the reference: (label, preset, extra options). The second row is the first with
# nanoGPT's own GPT-2 block, so the reference and gptkit are timed on identical models too.
GPT2_BLOCK = ["--position", "learned", "--norm", "layernorm", "--mlp", "gelu"]
VARIANTS = {
    "shakespeare-char-cpu": ("shakespeare-char-cpu", []),
    "cpu+gpt2-block": ("shakespeare-char-cpu", GPT2_BLOCK),
    "shakespeare-char-cpu-fast": ("shakespeare-char-cpu-fast", []),
}


def bench_gptkit(label: str, data: Path, run_dir: Path, extra: list[str]) -> dict:
    preset, variant_args = VARIANTS[label]
    gptkit = [sys.executable, "-m", "gptkit"]
    out, wall = run(
        gptkit + ["train", "--preset", preset, "--data", str(data), "--out", str(run_dir), "--overwrite", "--json",
                  *variant_args, *extra]
    )
    result = json.loads(out)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ms = [r["ms_per_iter"] for r in records if "ms_per_iter" in r]
    full, _ = run(gptkit + ["eval", "--ckpt", str(run_dir / "ckpt.safetensors"), "--data", str(data), "--json"])
    return {
        "name": label,
        "val_loss": result["val_loss"],
        "full_val_loss": json.loads(full)["val_loss"],
        "ms_per_iter": statistics.median(ms),
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=os.environ.get("GPTKIT_SHAKESPEARE") or str(DEFAULT_SOURCE))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from: {', '.join(VARIANTS)}")
    ap.add_argument("--max-iters", type=int, default=2000, help="the reference's iterations")
    ap.add_argument("--gptkit-args", default="", help="extra options for gptkit train, e.g. '--max-iters 100'")
    args = ap.parse_args()

    from gptkit.prepare import prepare_shakespeare

    with tempfile.TemporaryDirectory(prefix="gptkit-bench-") as tmp:
        data = Path(tmp) / "data"
        prepare_shakespeare(data, "char", args.source)
        rows = []
        variants = args.variants.split(",")
        for r in range(args.repeats):
            results = [bench_reference(data, args.max_iters)]
            results += [bench_gptkit(p, data, Path(tmp) / p, args.gptkit_args.split()) for p in variants]
            for result in results:
                result["repeat"] = r
                rows.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)

    print(f"\n{args.repeats} repeat(s), reference {args.max_iters} iterations, torch threads: "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'':<28}{'val loss':>10}{'full val':>10}{'wall s':>10}{'ms/iter':>10}")
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    med = {}
    for name, runs in by_name.items():
        med[name] = {k: statistics.median(r[k] for r in runs) for k in ("val_loss", "full_val_loss", "wall_s", "ms_per_iter")}
        m = med[name]
        print(f"{name:<28}{m['val_loss']:>10.4f}{m['full_val_loss']:>10.4f}{m['wall_s']:>10.1f}{m['ms_per_iter']:>10.1f}")
    ref = med["nanogpt-reference"]
    for label in variants:
        ours = med[label]
        speed = [a["ms_per_iter"] / b["ms_per_iter"] for a, b in zip(by_name["nanogpt-reference"], by_name[label])]
        walls = [a["wall_s"] / b["wall_s"] for a, b in zip(by_name["nanogpt-reference"], by_name[label])]
        print(f"\n{label}: per-iteration speed-up over the reference {statistics.median(speed):.2f}x, "
              f"wall-time ratio {statistics.median(walls):.2f}x, val loss {ours['val_loss']:.4f} "
              f"(reference {ref['val_loss']:.4f}; nanoGPT's published run here: 1.8857)")


if __name__ == "__main__":
    main()
