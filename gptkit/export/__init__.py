"""`gptkit export`: take a trained model out to the runtimes people already use.

    export(ckpt, "hf", "out/hf")          a Hugging Face folder (transformers, AutoTokenizer)      hf.py
    export(ckpt, "onnx", "model.onnx")    an ONNX graph (onnxruntime), with and without a KV cache  onnx.py
    export(ckpt, "gguf", "model.gguf")    a GGUF file (llama.cpp)                                   gguf.py

Which architecture a model becomes is decided by its components (source.py): GPT-2's (learned positions,
LayerNorm, GELU) export as GPT-2, the modern block (rotary, RMSNorm, SwiGLU, no bias) as Llama; anything
else is refused with the reason. Each format is tested against its real runtime (tests/test_export_*.py)
and docs/export.md shows how to load it.
"""

from __future__ import annotations

from pathlib import Path

from gptkit.errors import GptkitError, UsageError

FORMATS = ("hf", "onnx", "gguf")
DTYPES = ("float32", "float16", "bfloat16")
# What each format stores. GGUF has no bfloat16 writer in the gguf package's simple path, and
# onnxruntime's CPU kernels cover float32 only for this graph.
FORMAT_DTYPES = {"hf": DTYPES, "onnx": ("float32",), "gguf": ("float32", "float16")}


def check_options(format: str, dtype: str) -> None:
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}", hint=f"choose one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}", hint=f"choose one of {', '.join(DTYPES)}")
    if dtype not in FORMAT_DTYPES[format]:
        raise UsageError(
            f"--format {format} does not take --dtype {dtype}",
            hint=f"{format} exports {' or '.join(FORMAT_DTYPES[format])}",
        )


def export(ckpt: str | Path, format: str, out: str | Path, dtype: str = "float32", **options) -> Path:
    """Export the checkpoint `ckpt` to `out` in `format`; returns the path written (a folder for hf).

    `options` go to the format's writer (onnx: `kv_cache=True` for the variant with cache inputs)."""
    import torch

    from gptkit.export.source import read_source

    check_options(format, dtype)
    source = read_source(ckpt)
    out = Path(out)
    torch_dtype = getattr(torch, dtype)
    if format == "hf":
        from gptkit.export.hf import export_hf

        return export_hf(source, out, torch_dtype)
    if format == "onnx":
        from gptkit.export.onnx import export_onnx

        return export_onnx(source, out, **options)
    from gptkit.export.gguf import export_gguf

    return export_gguf(source, out, torch_dtype)


__all__ = ["export", "FORMATS", "DTYPES", "check_options", "GptkitError"]
