"""CPU speedrun: time for nanoGPT's CPU Shakespeare recipe and for gptkit's fastest preset to reach val loss 1.8857.

    python benchmarks/speedrun.py [--seeds 1337,1338,1339] [--threads 1] [--preset shakespeare-char-cpu-fast]
        [--gptkit-args '--muon-lr 0.03'] [--nanogpt-dir ~/nanoGPT] [--no-reference] [--quick] [--json]

1.8857 is the val loss nanoGPT's README reports for its 2000-iteration CPU example (4 layers, 128 wide,
context 64, batch 12). The script prepares tiny Shakespeare (char) once, then, for each seed, runs one after
the other: nanoGPT's recipe (restated in benchmarks/nanogpt_reference.py, or nanoGPT's own train.py with
--nanogpt-dir) and `gptkit train --preset PRESET`. Both evaluate on --eval-iters batches (nanoGPT's
estimate), gptkit every --eval-interval iterations and nanoGPT every --reference-eval-interval (it crosses
near its end), so the first iteration at which val loss <= target is seen to within that interval.

What it reports, and why (a shared machine makes wall time noisy):
  * iterations (and tokens) to the target, per seed: they do not depend on the machine's load;
  * ms/iteration of each recipe, measured interleaved: --bursts alternating short runs of the two
    (--burst-iters iterations each, first 10 dropped as warm-up), medians; evaluation time is not in it;
  * the time ratio = (nanoGPT's iterations / gptkit's) x (nanoGPT's ms/iter / gptkit's): training time
    to the target, evaluations excluded (both recipes evaluate, so counting them would measure the
    evaluation interval chosen here, not the recipes);
  * the raw wall-time ratio of the full runs (process start to the evaluation that crossed the target,
    evaluations and checkpoints included), marked noisy.
A recipe that ends above the target counts its last iteration, marked '>' (nanoGPT's recipe is 2000
iterations by definition of the target). With --nanogpt-dir the seed is nanoGPT's fixed 1337 for every row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGET = 1.8857  # nanoGPT's README: val loss of its CPU example after 2000 iterations
TOKENS_PER_ITER_REF = 12 * 64  # nanoGPT's CPU example: batch 12 x context 64
NANOGPT_CPU_ARGS = [
    "--device=cpu", "--compile=False", "--log_interval=1", "--block_size=64", "--batch_size=12",
    "--n_layer=4", "--n_head=4", "--n_embd=128", "--lr_decay_iters=2000", "--dropout=0.0",
]


def run(cmd: list[str], env: dict, cwd: str | None = None) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return done.stdout, time.perf_counter() - started


def first_crossing(evals: list[tuple[int, float, float]], target: float) -> dict:
    """The first evaluation at or below `target` (else the last one, marked not reached). evals: (iter, val, wall_s)."""
    for it, val, wall in evals:
        if it > 0 and val <= target:
            return {"iters": it, "val": val, "wall_s": wall, "reached": True}
    it, val, wall = evals[-1]
    return {"iters": it, "val": val, "wall_s": wall, "reached": False}


# --- nanoGPT's recipe: the restatement, or nanoGPT's own train.py --------------------------------------------

def reference_run(args, data: Path, seed: int, env: dict, max_iters: int, eval_interval: int, eval_iters: int) -> dict:
    """One run of the restated recipe: its final JSON line, whose evals are [iter, val, wall_s, train_s]."""
    cmd = [sys.executable, str(HERE / "nanogpt_reference.py"), "--data", str(data), "--max-iters", str(max_iters),
           "--seed", str(seed), "--eval-interval", str(eval_interval), "--eval-iters", str(eval_iters)]
    out, wall = run(cmd, env)
    result = json.loads(out.strip().splitlines()[-1])
    startup = wall - result["wall_s"]  # interpreter and torch import: counted in the raw wall time, as for gptkit
    result["evals"] = [(it, val, startup + w) for it, val, w, _ in result["evals"]]
    return result


def nanogpt_workdir(nanogpt_dir: Path, source: Path, tmp: Path) -> Path:
    """A copy of nanoGPT's scripts with its own char data prepared from our corpus (its checkout stays untouched)."""
    work = tmp / "nanogpt"
    work.mkdir()
    for name in ("train.py", "model.py", "configurator.py"):
        shutil.copy(nanogpt_dir / name, work / name)
    char = work / "data" / "shakespeare_char"
    char.mkdir(parents=True, exist_ok=True)
    shutil.copy(nanogpt_dir / "data" / "shakespeare_char" / "prepare.py", char / "prepare.py")
    shutil.copy(source, char / "input.txt")  # prepare.py only downloads when input.txt is missing
    run([sys.executable, "prepare.py"], dict(os.environ), cwd=str(char))
    return work


EVAL_LINE = re.compile(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)")
ITER_LINE = re.compile(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms")


def nanogpt_run(work: Path, env: dict, max_iters: int, eval_interval: int, eval_iters: int) -> dict:
    """nanoGPT's train.py, its stdout read as it comes so each evaluation line gets its wall-clock time."""
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", *NANOGPT_CPU_ARGS, f"--max_iters={max_iters}",
           f"--eval_interval={eval_interval}", f"--eval_iters={eval_iters}", f"--out_dir={work / 'out'}"]
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "train_shakespeare_char.py").write_text(
        "dataset = 'shakespeare_char'\ngradient_accumulation_steps = 1\nlearning_rate = 1e-3\nmin_lr = 1e-4\n"
        "beta2 = 0.99\nwarmup_iters = 100\nalways_save_checkpoint = False\nwandb_log = False\n"
    )  # the settings of nanoGPT's config/train_shakespeare_char.py that the CPU command line does not override
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(work), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    evals, step_ms, tail = [], [], []
    for line in proc.stdout:
        tail = (tail + [line])[-20:]
        if m := EVAL_LINE.search(line):
            evals.append((int(m[1]), float(m[2]), time.perf_counter() - started))
        elif m := ITER_LINE.search(line):
            step_ms.append(float(m[2]))
    if proc.wait() != 0 or not evals:
        sys.exit(f"nanoGPT's train.py failed: {' '.join(cmd)}\n{''.join(tail)}")
    return {"evals": evals, "step_ms": step_ms}


# --- gptkit ---------------------------------------------------------------------------------------------------

def gptkit_run(args, data: Path, out: Path, seed: int, env: dict, extra: list[str]) -> dict:
    """`gptkit train`; its metrics.jsonl gives each evaluation (step, val loss) and its wall-clock time."""
    cmd = [sys.executable, "-m", "gptkit", "train", "--preset", args.preset, "--data", str(data), "--out", str(out),
           "--overwrite", "--json", "--seed", str(seed), *extra]
    started = time.time()
    result, _ = run(cmd, env)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["val_loss"], r["time"] - started) for r in records if "val_loss" in r]
    ms = [r["ms_per_iter"] for r in records if "ms_per_iter" in r]
    return {"evals": evals, "ms_per_iter": ms, "result": json.loads(result)}


def tokens_per_iter(args, extra: list[str]) -> int:
    """Batch x context x grad_accum of the preset with `extra` on top (gptkit's own config resolution)."""
    from gptkit.config import PRESETS

    preset = PRESETS[args.preset]
    values = {**preset.model, **preset.train}
    for name in ("batch_size", "block_size", "grad_accum"):
        flag = "--" + name.replace("_", "-")
        if flag in extra:
            values[name] = int(extra[extra.index(flag) + 1])
    return values["batch_size"] * values["block_size"] * values.get("grad_accum", 1)


# --- the interleaved per-iteration timing ----------------------------------------------------------------------

def interleaved_ms(args, data: Path, tmp: Path, env: dict, extra: list[str], work: Path | None) -> dict:
    """Alternate short runs of the two recipes; the median ms/iter of each (first 10 iterations dropped)."""
    ref_ms, ours_ms = [], []
    n = args.burst_iters
    for _ in range(args.bursts):
        if not args.no_reference:
            if work is not None:
                step_ms = nanogpt_run(work, env, n, 10 * n, 1)["step_ms"][11:]  # iter 0 logs no time worth keeping
                ref_ms.append(statistics.median(step_ms))
            else:
                result = reference_run(args, data, 1337, env, n, 10 * n, 1)
                ref_ms.append(result["ms_per_iter"])  # median over windows of 10; the first is the warm-up
        # --eval-interval past the end: no evaluation in the burst (the final one is outside the timed steps)
        burst = gptkit_run(args, data, tmp / "burst", 1337, env,
                           [*extra, "--max-iters", str(n), "--eval-interval", str(n), "--eval-iters", "1", "--log-interval", "10"])
        ours_ms.append(statistics.median(burst["ms_per_iter"][1:] or burst["ms_per_iter"]))
    return {"reference": statistics.median(ref_ms) if ref_ms else None, "gptkit": statistics.median(ours_ms),
            "reference_bursts": ref_ms, "gptkit_bursts": ours_ms}


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=os.environ.get("GPTKIT_SHAKESPEARE") or str(DEFAULT_SOURCE))
    ap.add_argument("--seeds", default="1337,1338,1339", help="comma-separated; one full run of each recipe per seed")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both (1: steadiest on a shared machine)")
    ap.add_argument("--preset", default="shakespeare-char-cpu-fast")
    ap.add_argument("--gptkit-args", default="", help="options on top of the preset, e.g. '--muon-lr 0.03'")
    ap.add_argument("--nanogpt-dir", default=None, help="a nanoGPT checkout: run its own train.py instead of the restatement")
    ap.add_argument("--no-reference", action="store_true", help="gptkit only (for a candidate step; compare with a baseline run)")
    ap.add_argument("--target", type=float, default=TARGET)
    ap.add_argument("--max-iters", type=int, default=2000, help="nanoGPT's iterations")
    ap.add_argument("--eval-interval", type=int, default=25, help="gptkit evaluates this often")
    ap.add_argument("--reference-eval-interval", type=int, default=100,
                    help="nanoGPT evaluates this often (its own 250; it crosses near its end, so coarser costs little)")
    ap.add_argument("--eval-iters", type=int, default=20, help="batches per evaluation (nanoGPT's 20)")
    ap.add_argument("--bursts", type=int, default=3, help="alternating timing runs of each recipe")
    ap.add_argument("--burst-iters", type=int, default=60)
    ap.add_argument("--quick", action="store_true", help="smoke mode: a few iterations of everything (seconds)")
    ap.add_argument("--json", action="store_true", help="also print the whole report as one JSON line")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.max_iters, args.eval_interval, args.eval_iters = args.seeds.split(",")[0], 10, 5, 1
        args.reference_eval_interval = 5
        args.bursts, args.burst_iters = 1, 20
        args.gptkit_args += " --max-iters 10"
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = [*args.gptkit_args.split(), "--eval-interval", str(args.eval_interval), "--eval-iters", str(args.eval_iters),
             "--log-interval", "10"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    from gptkit.prepare import prepare_shakespeare

    with tempfile.TemporaryDirectory(prefix="gptkit-speedrun-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        prepare_shakespeare(data, "char", args.source)
        work = nanogpt_workdir(Path(args.nanogpt_dir).expanduser(), Path(args.source), tmp) if args.nanogpt_dir else None
        rows = []
        for seed in seeds:
            row = {"seed": seed}
            if not args.no_reference:
                if work is not None:
                    ref = nanogpt_run(work, env, args.max_iters, args.reference_eval_interval, args.eval_iters)
                else:
                    ref = reference_run(args, data, seed, env, args.max_iters, args.reference_eval_interval, args.eval_iters)
                row["reference"] = first_crossing(ref["evals"], args.target)
            ours = gptkit_run(args, data, tmp / "run", seed, env, extra)
            row["gptkit"] = first_crossing(ours["evals"], args.target)
            row["gptkit"]["final_val"] = ours["evals"][-1][1]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        ms = interleaved_ms(args, data, tmp, env, args.gptkit_args.split(), work)
    report = summarise(args, rows, ms, tokens_per_iter(args, extra))
    print_report(args, report)
    if args.json:
        print(json.dumps(report))


def summarise(args, rows: list[dict], ms: dict, our_tokens_per_iter: int) -> dict:
    report = {"target": args.target, "preset": args.preset, "gptkit_args": args.gptkit_args, "threads": args.threads,
              "seeds": [r["seed"] for r in rows], "rows": rows, "ms_per_iter": ms}
    names = ["gptkit"] if args.no_reference else ["reference", "gptkit"]
    for name in names:
        iters = [r[name]["iters"] for r in rows]
        mean, std = mean_std(iters)
        tpi = TOKENS_PER_ITER_REF if name == "reference" else our_tokens_per_iter
        report[name] = {"iters_mean": mean, "iters_std": std, "all_reached": all(r[name]["reached"] for r in rows),
                        "tokens_mean": mean * tpi, "val_at_crossing": [r[name]["val"] for r in rows],
                        "wall_s_mean": statistics.mean(r[name]["wall_s"] for r in rows),
                        "train_s_estimate": mean * ms[name] / 1000 if ms[name] else None}
    if not args.no_reference:
        ref, ours = report["reference"], report["gptkit"]
        report["iters_ratio"] = ref["iters_mean"] / ours["iters_mean"]
        report["ms_ratio"] = ms["reference"] / ms["gptkit"]
        report["time_ratio"] = report["iters_ratio"] * report["ms_ratio"]
        report["raw_wall_ratio"] = ref["wall_s_mean"] / ours["wall_s_mean"]
    return report


def print_report(args, report: dict) -> None:
    seeds = ",".join(map(str, report["seeds"]))
    print(f"\ntarget val loss <= {args.target} | seeds {seeds} | OMP_NUM_THREADS={args.threads} | "
          f"evaluation every {args.reference_eval_interval} (nanoGPT) / {args.eval_interval} (gptkit) iterations "
          f"on {args.eval_iters} batches (not counted in ms/iter)")
    print(f"{'':<30}{'iters to target':>18}{'tokens':>10}{'ms/iter':>10}{'train s':>10}{'wall s (noisy)':>16}")
    labels = {"reference": "nanoGPT (train.py)" if args.nanogpt_dir else "nanoGPT (restated)",
              "gptkit": f"gptkit {args.preset}"}
    for name in ("reference", "gptkit"):
        if name not in report:
            continue
        r, ms = report[name], report["ms_per_iter"][name]
        mark = "" if r["all_reached"] else ">"
        iters = f"{mark}{r['iters_mean']:.0f} ± {r['iters_std']:.0f}"
        print(f"{labels[name]:<30}{iters:>18}{r['tokens_mean']:>10.0f}{ms:>10.1f}{r['train_s_estimate']:>10.1f}"
              f"{r['wall_s_mean']:>16.1f}")
    if args.gptkit_args.strip():
        print(f"gptkit options on top of the preset: {args.gptkit_args.strip()}")
    if "time_ratio" in report:
        print(f"\ntime ratio (nanoGPT / gptkit) = iterations {report['iters_ratio']:.2f}x * ms/iter "
              f"{report['ms_ratio']:.2f}x = {report['time_ratio']:.2f}x")
        print(f"raw wall-time ratio of the full runs (process start to the crossing evaluation, evaluations "
              f"included; noisy): {report['raw_wall_ratio']:.2f}x")


if __name__ == "__main__":
    main()
