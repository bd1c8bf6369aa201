"""Choosing where and in what precision the model runs.

`--device auto` picks CUDA, then Apple's MPS, then the CPU. `--dtype auto` picks bfloat16 autocast on
GPUs that support it (same range as float32, half the memory traffic, no loss scaling needed), float16
with a gradient scaler on older GPUs, and float32 elsewhere. Weights always stay float32; autocast runs
the matmuls in the lower precision.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from dataclasses import dataclass

import torch

from gptkit.errors import GptkitError, UsageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype  # autocast precision; float32 means no autocast

    @property
    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        # float16 overflows easily; the scaler multiplies the loss up and the gradients back down.
        return self.dtype == torch.float16

    def describe(self) -> str:
        name = str(self.device)
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        return f"{name}, {str(self.dtype).removeprefix('torch.')}"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}", hint="use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GptkitError("--device cuda was asked for, but this torch sees no CUDA GPU", hint="use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise GptkitError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GptkitError("--device mps was asked for, but MPS is not available here", hint="use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {name!r}", hint="use auto, cpu, cuda or mps")
    return device


def resolve_runtime(device_name: str = "auto", dtype_name: str = "auto") -> Runtime:
    device = resolve_device(device_name)
    if dtype_name == "auto":
        if device.type == "cuda":
            # Not torch.cuda.is_bf16_supported(): it says yes on pre-Ampere GPUs (T4, V100) that only
            # emulate bf16, slowly. Native bf16 is compute capability 8.0+ (ROCm GPUs have it too).
            native_bf16 = bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (8, 0)
            dtype = torch.bfloat16 if native_bf16 else torch.float16
        else:
            dtype = torch.float32
    elif dtype_name in DTYPES:
        dtype = DTYPES[dtype_name]
    else:
        raise UsageError(f"unknown dtype {dtype_name!r}", hint="use auto, float32, bfloat16 or float16")
    if device.type == "cuda":
        allow_tf32()
    return Runtime(device, dtype)


def allow_tf32() -> None:
    """TF32 for float32 matmuls and convolutions: ~8x the float32 throughput on Ampere+, with float32's
    range (10 mantissa bits instead of 23). torch >= 2.9 sets it per backend through `fp32_precision` and
    rejects mixing that with the legacy `allow_tf32` flags, so the legacy flags serve only older torch."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "tf32"
        cudnn.conv.fp32_precision = cudnn.rnn.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
        cudnn.allow_tf32 = True


# Dense bf16/fp16 tensor-core peaks in FLOP/s, from the vendors' data sheets, for MFU (model FLOPs
# utilisation: the share of the chip's peak that the model's own arithmetic uses). First match wins,
# so "H100 PCIe" precedes "H100", "A100" precedes "A10" and "L40S", "L40" precede "L4".
GPU_PEAK_FLOPS = (
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12),
    ("L40", 181e12), ("L4", 121e12), ("A10", 125e12), ("4090", 165e12), ("3090", 71e12), ("V100", 125e12),
    ("T4", 65e12),
)


def peak_flops(runtime: Runtime) -> float | None:
    """The device's peak FLOP/s for the run's precision, when known (a listed GPU under autocast)."""
    if runtime.device.type != "cuda" or runtime.dtype == torch.float32:
        return None
    name = torch.cuda.get_device_name(runtime.device)
    return next((flops for key, flops in GPU_PEAK_FLOPS if key in name), None)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak memory so far: the CUDA allocator's peak on a GPU, the process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    if device.type == "mps":
        return torch.mps.current_allocated_memory()
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def compile_enabled(setting: str, device: torch.device) -> bool:
    """`compile = auto` turns torch.compile on for CUDA only: there it fuses the many small
    element-wise kernels of a step into few; on a CPU, at gptkit's model sizes, the step is bound by
    per-op overhead that compilation did not reliably remove, and the compile time itself is long.
    Only on GPUs its Triton kernels run on, though: elsewhere auto would fail at the first step."""
    if setting == "auto":
        return device.type == "cuda" and triton_runs_on(device)
    return setting == "true"


def triton_runs_on(device: torch.device) -> bool:
    """torch.compile's GPU kernels are Triton's: its package must be there (torch's Linux wheels bring
    it, its Windows wheels have not) and the GPU of compute capability 7.0+ (not a P100 or GTX 10xx)."""
    if importlib.util.find_spec("triton") is None:
        return False
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (7, 0)
