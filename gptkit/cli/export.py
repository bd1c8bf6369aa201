"""`gptkit export`: a checkpoint to Hugging Face, ONNX or GGUF (the library, gptkit/export/, does the work)."""

from __future__ import annotations

from pathlib import Path

import typer

from gptkit.cli.app import app
from gptkit.console import emit_json, log


@app.command(
    "export",
    epilog="Examples:\n\n"
    "  gptkit export --ckpt out/ckpt.safetensors --format hf --out out/hf\n\n"
    "  gptkit export --ckpt out/ckpt.safetensors --format onnx --out out/model.onnx\n\n"
    "  gptkit export --ckpt out/ckpt.safetensors --format gguf --out out/model.gguf --dtype float16",
)
def export_cmd(
    ckpt: Path = typer.Option(Path("out"), "--ckpt", help="Checkpoint to export: a .safetensors file or a run folder (its ckpt.safetensors)."),
    format: str = typer.Option(..., "--format", "-f", help="hf (a transformers folder) | onnx | gguf (llama.cpp)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write: a folder for hf, a file for onnx and gguf."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | float16 | bfloat16 (hf all three, gguf float32/16, onnx float32)."),
    kv_cache: bool = typer.Option(
        True, "--kv-cache/--no-kv-cache", help="onnx: also write MODEL.kv.onnx, the graph with key/value-cache inputs."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print {format, path, architecture, dtype} as JSON."),
) -> None:
    """Export a checkpoint to Hugging Face, ONNX or GGUF; prints the path written.

    GPT-2-style models (learned positions, LayerNorm, GELU) export as GPT-2, the modern block (rotary, RMSNorm, SwiGLU, no bias) as Llama; docs/export.md shows how to load each.
    """
    from gptkit.checkpoint import peek_checkpoint
    from gptkit.export import check_options, export
    from gptkit.export.source import architecture_of

    check_options(format, dtype)  # bad usage first, before reading any weights
    architecture = architecture_of(peek_checkpoint(ckpt).model_config)
    options = {"kv_cache": kv_cache} if format == "onnx" else {}
    path = export(ckpt, format, out, dtype, **options)
    log(f"exported {ckpt} as {architecture} to {path}")
    if as_json:
        emit_json({"format": format, "path": str(path), "architecture": architecture, "dtype": dtype})
    else:
        print(path)
