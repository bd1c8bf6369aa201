"""Int8 weights for CPU inference: dynamic quantization of the Linear layers.

Dynamic quantization (torch.ao.quantization.quantize_dynamic) stores each nn.Linear's weight as int8
with one scale per tensor and quantizes the activations on the fly, per batch: the matmuls run on
int8 kernels (fbgemm / onednn) and the weights take a quarter of the memory. Nothing is calibrated or
trained. The embedding (and so a tied output layer, which multiplies by the embedding matrix) stays
float32: only the blocks' projections and an untied lm_head become int8.

What it buys is memory: the weights in a quarter of the space. Speed it no longer buys on the development
machine: its int8 kernels work on one core, while the float32 engine spreads a large model's decode
products over all cores (cpu_decode.py), so at the 124M shape int8 decodes at 0.89x the float32 engine;
a tiny model is bound by per-token overhead and gets slower. benchmarks/generate.py --quantize measures
both the speed and the change in validation loss. CPU only: torch has no int8 dynamic kernels for CUDA or MPS.

torch 2.10+ marks torch.ao.quantization as deprecated in favour of the separate torchao package; the
eager dynamic path still works in torch 2.13, so gptkit uses it (no new dependency) and silences the
notice. (torchao's Int8DynamicActivationInt8WeightConfig is the successor, for a later change.)
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from gptkit.errors import GptkitError

KINDS = ("int8",)


def quantize_model(model: nn.Module, kind: str, device: torch.device | str = "cpu") -> nn.Module:
    """A copy of `model` (in eval mode) whose nn.Linear layers are dynamically quantized to int8."""
    if kind not in KINDS:
        raise GptkitError(f"unknown quantization {kind!r}", hint="--quantize int8")
    if torch.device(device).type != "cpu":
        raise GptkitError(f"--quantize int8 runs on the CPU only (the model is on {device})", hint="add --device cpu")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notices of torch.ao (see the module docstring)
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=False)
