"""conftest's _global_torch_state_restored: what one test fakes or switches in torch, the next test
does not see.

The two tests run in file order: the first changes torch behind monkeypatch's back (as a failed
monkeypatch undo leaves it), the second checks that all of it was put back."""

import importlib.util

import torch

from gptkit.devices import allow_tf32, resolve_device

REAL = dict(
    is_available=torch.cuda.is_available, device_count=torch.cuda.device_count,
    hip=torch.version.hip, find_spec=importlib.util.find_spec,
)


def tf32_state():
    matmul = torch.backends.cuda.matmul
    return matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32


BEFORE = dict(tf32=tf32_state(), dtype=torch.get_default_dtype(), threads=torch.get_num_threads())


def test_1_a_test_fakes_a_gpu_and_changes_torch_settings_without_undoing_them():
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 4
    torch.version.hip = "6.0"
    importlib.util.find_spec = lambda name, *args: None
    allow_tf32()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(3)
    assert resolve_device("cuda:3") == torch.device("cuda", 3)  # the fake is in effect here
    assert tf32_state() != BEFORE["tf32"]


def test_2_the_next_test_sees_the_real_torch_again():
    assert torch.cuda.is_available is REAL["is_available"] and not torch.cuda.is_available()
    assert torch.cuda.device_count is REAL["device_count"]
    assert torch.version.hip == REAL["hip"] and importlib.util.find_spec is REAL["find_spec"]
    assert tf32_state() == BEFORE["tf32"]
    assert torch.get_default_dtype() == BEFORE["dtype"] == torch.float32
    assert torch.get_num_threads() == BEFORE["threads"] == 1


def test_3_the_restore_is_torn_down_after_monkeypatch(request, monkeypatch):
    """Set up first, torn down last: it also repairs what a failed monkeypatch undo leaves behind."""
    order = request.fixturenames
    assert order.index("_global_torch_state_restored") < order.index("monkeypatch")
