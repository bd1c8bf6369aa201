"""Benchmark: full fine-tuning vs LoRA on a GPT-2-124M-shaped model (random weights), in one run.

    python benchmarks/finetune.py                                  # CPU: batch 1, context 128, 3 steps
    python benchmarks/finetune.py --device cuda --batch-size 8 --block-size 1024 --iters 10

For each mode it prints the trainable parameters, the optimizer state's bytes (AdamW's two moments
per trainable weight, measured after a step), the peak memory (the CUDA allocator's peak on a GPU,
the process's peak resident set on a CPU) and ms/iter (forward, backward, gradient clipping, AdamW
step; the first, warm-up step not timed). Each mode runs in a fresh child process, so one mode's
peak memory cannot hide the other's. It checks what LoRA is for: its optimizer state at most 2% of
full fine-tuning's, its peak memory and step time below full's (the exit code is 1 otherwise).

The model and the LoRA layers are gptkit's own (model.GPT, lora.apply_lora, optim.make_optimizer);
random weights train at the same speed as real ones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(mode: str, args) -> dict:
    import torch

    from gptkit.config import TrainConfig
    from gptkit.devices import peak_memory_bytes, resolve_runtime
    from gptkit.lora import apply_lora, count_parameters
    from gptkit.model import GPT, ModelConfig
    from gptkit.optim import make_optimizer

    runtime = resolve_runtime(args.device, args.dtype)
    device = runtime.device
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=50257, vocab_multiple=64, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd
    )
    model = GPT(config).to(device)
    if mode == "lora":
        apply_lora(model, args.targets, args.rank, alpha=2 * args.rank)
    cfg = TrainConfig(learning_rate=1e-3 if mode == "lora" else 1e-4, weight_decay=0.0 if mode == "lora" else 0.1)
    optimizer = make_optimizer(model, cfg, device)
    trainable, total = count_parameters(model)
    x = torch.randint(0, config.vocab_size, (args.batch_size, args.block_size), device=device)
    y = torch.randint(0, config.vocab_size, (args.batch_size, args.block_size), device=device)
    model.train()
    times = []
    for i in range(args.iters + 1):
        start = time.perf_counter()
        with runtime.autocast:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # the first step allocates the optimizer state and warms the kernels up
            times.append(time.perf_counter() - start)
    state_bytes = sum(
        t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim() > 0
    )
    return {
        "mode": mode,
        "trainable_params": trainable,
        "total_params": total,
        "optimizer_state_bytes": state_bytes,
        "peak_memory_bytes": peak_memory_bytes(device),
        "ms_per_iter": 1000 * sorted(times)[len(times) // 2],
        "device": runtime.describe(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3, help="Timed steps per mode (after one warm-up step).")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="q,k,v,o,mlp")
    parser.add_argument("--n-layer", type=int, default=12, help="The shape (GPT-2 124M's by default; smaller for the tests).")
    parser.add_argument("--n-head", type=int, default=12)
    parser.add_argument("--n-embd", type=int, default=768)
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    parser.add_argument("--child", choices=("full", "lora"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return 0

    own = [a for a in sys.argv[1:] if a != "--json"]
    results = {}
    for mode in ("full", "lora"):
        done = subprocess.run([sys.executable, __file__, *own, "--child", mode], capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            return 1
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    full, lora = results["full"], results["lora"]
    checks = {
        "optimizer state <= 2% of full's": lora["optimizer_state_bytes"] <= 0.02 * full["optimizer_state_bytes"],
        "peak memory below full's": (lora["peak_memory_bytes"] or 0) < (full["peak_memory_bytes"] or 1),
        "ms/iter below full's": lora["ms_per_iter"] < full["ms_per_iter"],
    }
    if args.json:
        print(json.dumps({"results": results, "checks": checks}))
    else:
        shape = "GPT-2 124M shape" if (args.n_layer, args.n_embd) == (12, 768) else f"{args.n_layer} layers x {args.n_embd}"
        print(f"{shape}, batch {args.batch_size} x {args.block_size} tokens, {full['device']}, LoRA rank {args.rank} on {args.targets}")
        print("| mode | trainable params | optimizer state | peak memory | ms/iter |")
        print("|---|---:|---:|---:|---:|")
        for r in (full, lora):
            peak = f"{r['peak_memory_bytes'] / 2**20:,.0f} MiB" if r["peak_memory_bytes"] else "n/a"
            print(f"| {r['mode']} | {r['trainable_params']:,} | {r['optimizer_state_bytes'] / 2**20:,.1f} MiB | {peak} | {r['ms_per_iter']:.0f} |")
        ratio = lora["optimizer_state_bytes"] / full["optimizer_state_bytes"]
        print(f"LoRA optimizer state = {100 * ratio:.2f}% of full fine-tuning's")
        for name, ok in checks.items():
            print(f"{'ok ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
