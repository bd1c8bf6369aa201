"""`gptkit eval`: loss, perplexity and bits per byte of a checkpoint over a whole split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gptkit.cli.app import app
from gptkit.console import emit_json as _emit_json


@app.command(
    "eval",
    epilog="Examples:\n\n"
    "  gptkit eval --ckpt out/ckpt.safetensors\n\n"
    "  gptkit eval --ckpt out/best.safetensors --split train --json | jq .perplexity\n\n"
    "  gptkit eval --ckpt out/ckpt.safetensors --adapter out/lora/adapter.safetensors --data data/new",
)
def eval_cmd(
    ckpt: Path = typer.Option(Path("out"), "--ckpt", help="Checkpoint to evaluate: a .safetensors file or a run folder (its ckpt.safetensors)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="An adapter (gptkit finetune --lora-rank) of --ckpt, applied unmerged."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Data folder.  [default: the one the model trained on]"),
    split: str = typer.Option("val", "--split", help="Which split: val or train."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Windows per forward pass."),
    max_batches: Optional[int] = typer.Option(None, "--max-batches", min=1, help="Stop after this many batches."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Loss, perplexity and bits per byte of a checkpoint over a whole data split."""
    from gptkit.evaluate import evaluate
    from gptkit.launch import data_folder_of

    if data is None:  # the header says where the model (or the adapter) trained; evaluate() verifies the weights
        data = data_folder_of(adapter or ckpt)
    result = evaluate(ckpt, data, split, device, batch_size, max_batches, adapter=adapter)
    if as_json:
        _emit_json(result)
    else:
        for key in (f"{split}_loss", "perplexity", "bits_per_byte", "tokens", "step"):
            value = result[key]
            print(f"{key}\t{value:.4f}" if isinstance(value, float) else f"{key}\t{value}")
