"""Loading a checkpoint to run it: the one way `gptkit eval`, `gptkit sample` and later commands do it.

    loaded = load_model("out/ckpt.safetensors", device="auto", dtype="auto")
    loaded = load_model("base.safetensors", adapter="ft/adapter.safetensors")   # LoRA on its base, unmerged
    with loaded.runtime.autocast:
        logits, _ = loaded.model(idx)            # idx: (B, T) token ids on loaded.runtime.device

The precision rule is devices.resolve_runtime's, the same as training's, so a model is evaluated in
the precision it was trained in:

    dtype auto   float32 on a CPU and on Apple's MPS; bfloat16 on GPUs with native bf16 (CUDA compute
                 capability 8.0+, ROCm); float16 on older GPUs (T4, V100), which only emulate bf16
    float32 | bfloat16 | float16    as asked

The weights stay float32, as saved; the lower precision is autocast's, for the matmuls (on a GPU,
autocast keeps softmax and the loss in float32). No grad scaler: nothing is trained.

An adapter (a checkpoint of kind "adapter", e.g. `gptkit finetune --lora-rank 8`'s adapter.safetensors)
is applied on top of its base without merging (lora.apply_adapter); one trained on another base is
refused (its recorded base checksum differs). The base may be a gptkit checkpoint or a
Hugging Face GPT-2 folder, read by hf_import as `finetune --ckpt HF_FOLDER` read it.

`loaded.chat_template` is the prompt template a fine-tuned model (or its adapter) recorded, or None:
`sample --chat` and a server render a conversation with it (chat_template.apply_template).
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
    adapter: Checkpoint | None = None  # the adapter applied on top (its metadata only), if any

    @property
    def tokenizer_spec(self) -> dict:
        return self.checkpoint.tokenizer_spec

    @property
    def chat_template(self) -> dict | None:
        """The prompt template the model was fine-tuned with (chat_template.py; render a question with
        chat_template.apply_template), or None for a model that was not trained on instruction data.
        An adapter's own template comes first: it is the adapter that learned to answer."""
        if self.adapter is not None and self.adapter.chat_template is not None:
            return self.adapter.chat_template
        return self.checkpoint.chat_template

    def tokenizer(self):
        return self.checkpoint.tokenizer()


def load_model(ckpt: str | Path, device: str = "auto", dtype: str = "auto", adapter: str | Path | None = None) -> LoadedModel:
    """Load and verify the checkpoint `ckpt` (a damaged file's error names the run's last good one),
    build its model on `device` and choose the precision to run it in (see the module docstring).
    `adapter`: an adapter checkpoint of this base, applied unmerged. `ckpt` may also be a Hugging
    Face GPT-2 folder, imported as hf_import reads it (the base of `finetune --ckpt HF_FOLDER --lora-rank R`)."""
    checkpoint = _load_base(Path(ckpt))
    if checkpoint.kind != MODEL:
        raise GptkitError(
            f"{ckpt} is an {checkpoint.kind}, not a full model: it belongs to the base model {checkpoint.base_checksum}",
            hint="load the base model's checkpoint, then apply the adapter to it",
        )
    runtime = resolve_runtime(device, dtype)
    model = checkpoint.build_model(runtime.device)
    saved = None
    if adapter is not None:
        from gptkit.lora import apply_adapter

        saved = load_run_checkpoint(adapter)
        saved.check_base(checkpoint, adapter)
        model = apply_adapter(model, saved).to(runtime.device)
    model = model.eval()
    # The model now holds the weights; keeping the loaded copy too would double the memory.
    return LoadedModel(model, runtime, replace(checkpoint, state_dict={}), replace(saved, state_dict={}) if saved else None)


def _load_base(path: Path) -> Checkpoint:
    """A checkpoint file, or a Hugging Face GPT-2 folder's weights (a run folder is refused by name)."""
    from gptkit.hf_import import HUB_MODELS, is_hf_model_folder

    if str(path) in HUB_MODELS and not path.exists():  # eval and sample download nothing
        raise GptkitError(
            f"{path} is a Hugging Face hub name: eval and sample need the model on disk",
            hint=f"convert it once: `gptkit train --init-from {path} --max-iters 0 --out DIR`, then pass --ckpt DIR/ckpt.safetensors",
        )
    if is_hf_model_folder(path):
        from gptkit.hf_import import load_init_checkpoint

        return load_init_checkpoint(path)  # step 0, its checksum that of the imported weights (an adapter's base_checksum)
    return load_run_checkpoint(path)
