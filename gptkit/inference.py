"""Loading a checkpoint to run it: the one way `gptkit eval`, `gptkit sample` and later commands do it.

    loaded = load_model("out/ckpt.safetensors", device="auto", dtype="auto")
    with loaded.runtime.autocast:
        logits, _ = loaded.model(idx)            # idx: (B, T) token ids on loaded.runtime.device

The precision rule is devices.resolve_runtime's, the same as training's, so a model is evaluated in
the precision it was trained in:

    dtype auto   float32 on a CPU and on Apple's MPS; bfloat16 on GPUs with native bf16 (CUDA compute
                 capability 8.0+, ROCm); float16 on older GPUs (T4, V100), which only emulate bf16
    float32 | bfloat16 | float16    as asked

The weights stay float32, as saved; the lower precision is autocast's, for the matmuls (on a GPU,
autocast keeps softmax and the loss in float32). No grad scaler: nothing is trained.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from gptkit.checkpoint import Checkpoint
from gptkit.checkpoint_format import MODEL
from gptkit.devices import Runtime, resolve_runtime
from gptkit.errors import GptkitError
from gptkit.model import GPT
from gptkit.run_folder import load_run_checkpoint


@dataclass
class LoadedModel:
    model: GPT  # in eval mode, on runtime.device, weights float32
    runtime: Runtime  # the device, and the autocast precision to run the model under
    checkpoint: Checkpoint  # its metadata (step, losses, configs, kind); state_dict emptied, the model holds the weights

    @property
    def tokenizer_spec(self) -> dict:
        return self.checkpoint.tokenizer_spec

    def tokenizer(self):
        return self.checkpoint.tokenizer()


def load_model(ckpt: str | Path, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load and verify the checkpoint `ckpt` (a damaged file's error names the run's last good one),
    build its model on `device` and choose the precision to run it in (see the module docstring)."""
    checkpoint = load_run_checkpoint(ckpt)
    if checkpoint.kind != MODEL:
        raise GptkitError(
            f"{ckpt} is an {checkpoint.kind}, not a full model: it belongs to the base model {checkpoint.base_checksum}",
            hint="load the base model's checkpoint, then apply the adapter to it",
        )
    runtime = resolve_runtime(device, dtype)
    model = checkpoint.build_model(runtime.device).eval()
    # The model now holds the weights; keeping the loaded copy too would double the memory.
    return LoadedModel(model, runtime, replace(checkpoint, state_dict={}))
