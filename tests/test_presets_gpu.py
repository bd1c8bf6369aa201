"""The GPU-side settings, tested as far as a CPU-only machine allows: presets resolve, the GPT-2
model builds and runs, torch.compile's `auto`, the MFU peak table (devices.GPU_PEAK_FLOPS), and
`--dtype auto` on old and new GPUs."""

import pytest
import torch

from gptkit.config import PRESETS, resolve_config, to_toml
from gptkit.devices import Runtime, compile_enabled, peak_flops, resolve_runtime
from gptkit.model import GPT


def test_gpt2_124m_preset_is_nanogpts_reproduction():
    model, train = resolve_config("gpt2-124m")
    assert (model.n_layer, model.n_head, model.n_embd, model.block_size) == (12, 12, 768, 1024)
    assert model.dropout == 0.0 and model.bias is False
    assert train.batch_size * model.block_size * train.grad_accum == 491_520  # ~0.5M tokens per step
    assert (train.learning_rate, train.min_lr, train.warmup_iters) == (6e-4, 6e-5, 2000)
    assert train.max_iters == train.lr_decay_iters == 600_000
    assert (train.beta1, train.beta2, train.weight_decay, train.grad_clip) == (0.9, 0.95, 0.1, 1.0)
    assert train.compile == "auto" and train.lr_schedule == "cosine"
    assert "nanoGPT" in PRESETS["gpt2-124m"].description and "train_gpt2.py" in PRESETS["gpt2-124m"].description
    assert 'compile = "auto"' in to_toml(model, train)


def test_gpt2_124m_builds_with_124m_parameters_and_runs_forward():
    from dataclasses import replace

    model_config, _ = resolve_config("gpt2-124m")
    torch.manual_seed(0)
    model = GPT(replace(model_config, vocab_size=50257))
    assert model.token_embedding.weight.shape == (50304, 768)  # padded to a multiple of 64, as nanoGPT
    assert model.num_params() == pytest.approx(124.4e6, rel=0.01)  # GPT-2 small's count, embeddings tied
    idx, targets = torch.randint(50257, (2, 1, 8))
    with torch.no_grad():
        logits, loss = model(idx, targets)
    assert logits.shape == (1, 8, 50304) and 10.0 < loss.item() < 11.5  # ~ln(50304) = 10.8 at init
    # nanoGPT's estimate: 6N + 12 L C T FLOPs per token; about 0.85 GFLOP for GPT-2 small at T = 1024
    assert model.flops_per_token() == pytest.approx(6 * model.num_params(False) + 12 * 12 * 768 * 1024)


@pytest.mark.parametrize(
    "setting, device, expected",
    [("auto", "cuda", True), ("auto", "cpu", False), ("auto", "mps", False), ("true", "cpu", True), ("false", "cuda", False)],
)
def test_compile_auto_means_cuda_only(setting, device, expected, monkeypatch):
    pretend_gpu(monkeypatch, capability=(8, 0), triton=True)
    assert compile_enabled(setting, torch.device(device)) is expected


@pytest.mark.parametrize(
    "capability, triton, expected",
    [((7, 0), True, True), ((9, 0), True, True), ((6, 0), True, False), ((8, 9), False, False)],
)
def test_compile_auto_is_off_where_triton_cannot_run(monkeypatch, capability, triton, expected):
    """A P100 (6.0) is too old for Triton, and torch's Windows wheels come without it: there `auto`
    trains uncompiled instead of failing at the first step. `true` still asks for it."""
    pretend_gpu(monkeypatch, capability, triton)
    assert compile_enabled("auto", torch.device("cuda")) is expected
    assert compile_enabled("true", torch.device("cuda")) is True


def pretend_gpu(monkeypatch, capability: tuple[int, int], triton: bool) -> None:
    """A CPU-only torch pretends to have one CUDA GPU of this compute capability, with or without triton."""
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "triton":
            return object() if triton else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("flag, stored", [(True, "true"), (False, "false")])
def test_compile_still_takes_a_boolean(flag, stored, tmp_path):
    """--compile/--no-compile, `compile = true` in TOML and configs saved before `auto` existed."""
    _, train = resolve_config(None, None, None, {"compile": flag})
    assert train.compile == stored
    (tmp_path / "c.toml").write_text("[train]\ncompile = \"auto\"\n")
    assert resolve_config(None, tmp_path / "c.toml")[1].compile == "auto"


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L40", 181.0),  # not L4's 121: the name contains "L4"
        ("NVIDIA L4", 121.0),
        ("Some Future GPU", None),
    ],
)
def test_the_mfu_peak_is_found_by_device_name(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    peak = peak_flops(Runtime(torch.device("cuda", 0), torch.bfloat16))
    assert peak == (tflops * 1e12 if tflops else None)


def test_no_peak_and_no_mfu_on_the_cpu(tmp_path, tiny_data):
    from conftest import tiny_configs
    from gptkit.train import train

    assert peak_flops(Runtime(torch.device("cpu"), torch.bfloat16)) is None
    train(*tiny_configs(tiny_data, tmp_path / "run", max_iters=4, eval_interval=4))
    assert all("mfu" not in line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())


@pytest.mark.parametrize(
    "capability, expected",
    [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_dtype_auto_is_float16_on_gpus_that_only_emulate_bf16(monkeypatch, capability, expected):
    """A T4 (7.5) or V100 (7.0) gets float16 with the grad scaler: torch.cuda.is_bf16_supported() says
    yes there too (bf16 by emulation, many times slower), so it must not decide. A CPU-only torch
    pretends to have one GPU of the given compute capability."""
    pretend_gpu(monkeypatch, capability, triton=True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    # resolve_runtime turns TF32 on; conftest's _global_torch_state_restored turns it back after the test
    runtime = resolve_runtime("cuda", "auto")
    assert runtime.dtype == expected and runtime.needs_grad_scaler == (expected == torch.float16)


def tf32_enabled() -> bool:
    """Whether float32 matmuls may run in TF32, asked the way the running torch wants to be asked."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        return matmul.fp32_precision == "tf32"
    return matmul.allow_tf32


def test_a_cuda_runtime_turns_tf32_on_and_a_cpu_one_leaves_it(monkeypatch):
    """Through `fp32_precision` where torch has it: torch >= 2.9 refuses reads of the legacy flag
    after the new API was used, so setting the legacy one would break code that asks the new way."""
    assert not tf32_enabled()  # torch's default, put back after every test by conftest
    resolve_runtime("cpu", "auto")
    assert not tf32_enabled()
    pretend_gpu(monkeypatch, (8, 0), triton=True)
    resolve_runtime("cuda", "auto")
    assert tf32_enabled()


def test_tf32_falls_back_to_the_legacy_flags_on_a_torch_without_fp32_precision(monkeypatch):
    """torch < 2.9 has only `allow_tf32` (on cuBLAS and on cuDNN); stand-ins without `fp32_precision`
    play that torch."""
    from types import SimpleNamespace

    from gptkit.devices import allow_tf32

    legacy_matmul, legacy_cudnn = SimpleNamespace(allow_tf32=False), SimpleNamespace(allow_tf32=False)
    monkeypatch.setattr(torch.backends.cuda, "matmul", legacy_matmul)
    monkeypatch.setattr(torch.backends, "cudnn", legacy_cudnn)
    allow_tf32()
    assert legacy_matmul.allow_tf32 is True and legacy_cudnn.allow_tf32 is True
