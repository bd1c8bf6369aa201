"""inference.load_model: the one way eval, sample and later commands load a checkpoint to run it."""

import shutil

import pytest
import torch

from gptkit.checkpoint import load_checkpoint, save_adapter
from gptkit.errors import GptkitError
from gptkit.evaluate import evaluate
from gptkit.generate import generate, sample_texts
from gptkit.inference import load_model


def test_load_model_is_ready_for_inference(tiny_run):
    loaded = load_model(tiny_run.ckpt, device="cpu")
    saved = load_checkpoint(tiny_run.ckpt)
    assert not loaded.model.training
    assert loaded.runtime.device == torch.device("cpu") and loaded.runtime.dtype == torch.float32  # auto on a CPU
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in loaded.model.parameters())
    for name, tensor in loaded.model.state_dict().items():
        if name in saved.state_dict:
            assert torch.equal(tensor, saved.state_dict[name]), name
    # the metadata without a second copy of the weights
    assert loaded.checkpoint.state_dict == {}
    assert (loaded.checkpoint.step, loaded.checkpoint.kind, loaded.checkpoint.checksum) == (30, "model", saved.checksum)
    assert loaded.tokenizer_spec == saved.tokenizer_spec and loaded.tokenizer().spec() == saved.tokenizer().spec()


def test_an_explicit_dtype_is_autocast_with_float32_weights(tiny_run):
    loaded = load_model(tiny_run.ckpt, device="cpu", dtype="bfloat16")
    assert loaded.runtime.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    with pytest.raises(GptkitError, match="unknown dtype 'float8'"):
        load_model(tiny_run.ckpt, device="cpu", dtype="float8")


def test_eval_and_sample_take_the_dtype(tiny_run):
    full = evaluate(tiny_run.ckpt, tiny_run.data, device="cpu", max_batches=4)
    assert full == evaluate(tiny_run.ckpt, tiny_run.data, device="cpu", max_batches=4, dtype="float32")
    low = evaluate(tiny_run.ckpt, tiny_run.data, device="cpu", max_batches=4, dtype="bfloat16")
    assert low["val_loss"] != full["val_loss"] and low["val_loss"] == pytest.approx(full["val_loss"], rel=0.02)
    [(_, text)] = [(p, "".join(pieces)) for p, pieces in sample_texts(tiny_run.ckpt, "the", 1, 20, 0.0, device="cpu", dtype="bfloat16")]
    assert len(text) == 20  # a char model: one character per token


def test_autocast_stays_inside_the_forward_passes(tiny_run):
    """generate() yields between forward passes: the caller's code there must not run under autocast."""
    loaded = load_model(tiny_run.ckpt, device="cpu", dtype="bfloat16")
    prompt = loaded.tokenizer().encode("the")
    seen = []
    for _ in generate(loaded.model, prompt, 40, temperature=0.0, precision=loaded.runtime.dtype):
        seen.append(torch.is_autocast_enabled("cpu"))
    assert len(seen) == 40 and not any(seen)


def test_a_damaged_checkpoint_names_the_last_good_one(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.out, run)
    (run / "ckpt.safetensors").unlink()  # a hard link in the original: write a file of its own
    shutil.copyfile(tiny_run.ckpt, run / "ckpt.safetensors")
    with open(run / "ckpt.safetensors", "r+b") as f:
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(GptkitError) as info:
        load_model(run / "ckpt.safetensors", device="cpu")
    assert "is corrupted" in info.value.message and info.value.hint.startswith("the last good checkpoint is ")


def test_an_adapter_is_not_a_model_to_load(tiny_run, tmp_path):
    base = load_checkpoint(tiny_run.ckpt)
    save_adapter(tmp_path / "adapter.safetensors", {"lora_a": torch.zeros(2, 2)}, base, step=1)
    with pytest.raises(GptkitError, match="is an adapter, not a full model") as info:
        load_model(tmp_path / "adapter.safetensors", device="cpu")
    assert base.checksum in info.value.message
