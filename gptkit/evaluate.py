"""Stage 3, `gptkit eval`: how well a checkpoint predicts a data split.

Unlike the quick estimate during training (a few random batches), this walks the whole split once,
in consecutive windows of the model's context, so the number is exact and repeatable. It reports:

    loss            mean cross-entropy per token, in nats
    perplexity      exp(loss): the model is as unsure as a uniform choice among this many tokens
    bits_per_byte   loss * tokens / (bytes * ln 2): comparable across tokenizers, because it
                    measures cost per byte of text rather than per (tokenizer-dependent) token

The model is loaded, and its precision chosen, by inference.load_model (dtype auto: float32 on a CPU,
bfloat16 or float16 autocast on a GPU, as in training).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from gptkit.inference import load_model
from gptkit.shards import Split, read_meta


def evaluate(
    ckpt: str | Path,
    data: str | Path,
    split: str = "val",
    device: str = "auto",
    batch_size: int = 16,
    max_batches: int | None = None,
    dtype: str = "auto",
) -> dict:
    loaded = load_model(ckpt, device, dtype)
    checkpoint, model, runtime = loaded.checkpoint, loaded.model, loaded.runtime
    meta = read_meta(data)
    checkpoint.check_data(meta, data, ckpt)
    data_split = Split.open(data, split, meta)
    block_size = checkpoint.model_config.block_size
    data_split.check_fits(block_size)

    total_loss, total_tokens = 0.0, 0
    with torch.no_grad():
        for x, y in data_split.iter_windows(block_size, batch_size, max_batches):
            with runtime.autocast:
                _, loss = model(x.to(runtime.device), y.to(runtime.device))
            total_loss += loss.item() * y.numel()
            total_tokens += y.numel()
    loss = total_loss / total_tokens
    split_info = meta["splits"][split]
    # The windows cover (nearly) the whole split, so its average bytes per token converts the loss.
    bytes_per_token = split_info["bytes"] / max(split_info["tokens"], 1)
    return {
        "checkpoint": str(ckpt),
        "data": str(data),
        "split": split,
        "step": checkpoint.step,
        "tokens": total_tokens,
        f"{split}_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": loss / (bytes_per_token * math.log(2)),
    }
