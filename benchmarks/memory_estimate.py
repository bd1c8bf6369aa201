"""The memory of a training step, estimated (simulated on FakeTensors) against measured (a real step on
the CPU, torch.profiler's allocator count): the table of docs/inspect.md.

    python benchmarks/memory_estimate.py            # a few minutes on 2 busy cores; sizes in MiB

Both come from gptkit/memory_estimate.py; the estimate allocates nothing, the measurement allocates the
whole step (the shakespeare-char row needs about 0.7 GiB).
"""

from __future__ import annotations

import time
from dataclasses import replace

from gptkit.config import ModelConfig, resolve_config
from gptkit.memory_estimate import estimate_training_memory, measure_training_memory


def preset_model(name: str, vocab_size: int) -> ModelConfig:
    model, _ = resolve_config(name, check=False)
    return replace(model, vocab_size=vocab_size)


CASES = [  # (name, model, batch, context, dtype, optimizer)
    ("`shakespeare-char-cpu` (vocab 65)", preset_model("shakespeare-char-cpu", 65), 12, 64, "float32", "adamw"),
    ("`shakespeare-char-cpu`", preset_model("shakespeare-char-cpu", 65), 12, 64, "float32", "muon"),
    ("`shakespeare-char-cpu`", preset_model("shakespeare-char-cpu", 65), 12, 64, "bfloat16", "adamw"),
    ("`shakespeare-char` (vocab 65)", preset_model("shakespeare-char", 65), 8, 256, "float32", "adamw"),
    ("GPT-2 block, 4 layers x 256, vocab 512", ModelConfig(vocab_size=512, block_size=128, n_layer=4, n_head=4, n_embd=256),
     4, 128, "float32", "adamw"),
]


def main() -> None:
    mib = 2**20
    print("| model | batch x context | dtype | optimizer | weights | optimizer state | activations | sum | peak, estimated "
          "| peak, measured | ratio | seconds (estimate / measure) |")
    print("|" + "---|" * 12)
    for name, config, batch, context, dtype, optimizer in CASES:
        start = time.perf_counter()
        e = estimate_training_memory(config, batch, context, dtype, optimizer)
        middle = time.perf_counter()
        measured = measure_training_memory(config, batch, context, dtype, optimizer)
        end = time.perf_counter()
        print(f"| {name} | {batch} x {context} | {dtype} | {optimizer} | {e.weights_bytes / mib:.1f} | "
              f"{e.optimizer_bytes / mib:.1f} | {e.activation_bytes / mib:.1f} | {e.sum_bytes / mib:.1f} | "
              f"{e.peak_bytes / mib:.1f} | {measured / mib:.1f} | {e.peak_bytes / measured:.3f} | "
              f"{middle - start:.1f} / {end - middle:.1f} |", flush=True)


if __name__ == "__main__":
    main()
