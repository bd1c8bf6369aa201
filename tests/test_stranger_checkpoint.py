"""A stranger's checkpoint cannot exhaust memory: the model config in its metadata is checked against
the tensors the file really holds before anything is built, and models are built without fresh weights."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from gptkit.checkpoint import load_checkpoint, save_checkpoint, weights_checksum
from gptkit.config import ModelConfig
from gptkit.errors import GptkitError
from gptkit.model import GPT

SPEC = {"kind": "char", "chars": "\n !abcdefghijklmnopqrstuvwxyz"}
CONFIG = ModelConfig(vocab_size=len(SPEC["chars"]), block_size=16, n_layer=2, n_head=2, n_embd=32, position="rope", mlp="swiglu")


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, GPT(CONFIG), SPEC, step=1)
    return path


def _rewrite(src, dst, tensors=None, **config_changes):
    """Copy a checkpoint with its tensors changed and its model_config edited; the checksum is made to
    match, as a stranger who edits a file would do."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        metadata, original = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    tensors = tensors(original) if tensors else original
    metadata["model_config"] = json.dumps({**json.loads(metadata["model_config"]), **config_changes})
    metadata["checksum"] = "sha256:" + weights_checksum(tensors)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def test_an_edited_config_of_20000_layers_is_refused_at_once_with_memory_flat(saved, tmp_path):
    evil = _rewrite(saved, tmp_path / "evil.safetensors", n_layer=20000, n_embd=4096, n_head=32)
    script = (
        "import resource, sys, time\n"
        "from gptkit.inference import load_model\n"
        "from gptkit.errors import GptkitError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; t = time.monotonic()\n"
        "try:\n    load_model(sys.argv[1], 'cpu')\nexcept GptkitError as e:\n    print(e.message)\n"
        "print(time.monotonic() - t, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(evil)], capture_output=True, text=True, timeout=120)
    message, figures = done.stdout.strip().splitlines()
    seconds, grown_mb = map(float, figures.split())
    assert "checkpoint weights do not fit its model config (n_layer 20000, n_embd 4096, n_head 32)" in message, done.stderr
    assert "token_embedding.weight is (29, 32) in the file, but the config needs (29, 4096)" in message
    assert seconds < 1.0 and grown_mb < 100  # refused within a second; memory stays flat


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda t: {**t, "blocks.9.attn.extra": torch.zeros(3)}, "the file holds the tensor blocks.9.attn.extra"),
        (lambda t: {k: v for k, v in t.items() if k != "blocks.1.mlp.proj.weight"}, "the tensor blocks.1.mlp.proj.weight is missing"),
        (lambda t: {**t, "blocks.0.attn.qkv.weight": t["blocks.0.attn.qkv.weight"][:48]},
         "blocks.0.attn.qkv.weight is (48, 32) in the file, but the config needs (96, 32)"),
    ],
    ids=["extra", "missing", "reshaped"],
)
def test_extra_missing_and_reshaped_tensors_each_get_their_own_error(saved, tmp_path, change, expected):
    bad = _rewrite(saved, tmp_path / "bad.safetensors", tensors=change)
    with pytest.raises(GptkitError, match="checkpoint weights do not fit its model config") as info:
        load_checkpoint(bad).build_model()
    assert expected in info.value.message


def test_a_model_is_built_from_the_files_tensors_without_fresh_weights(saved):
    checkpoint = load_checkpoint(saved)
    model = checkpoint.build_model()
    # the very tensors that were read, not copies of them (so memory is what the file holds)
    assert model.token_embedding.weight.data_ptr() == checkpoint.state_dict["token_embedding.weight"].data_ptr()
    reference = GPT(CONFIG)
    reference.load_state_dict(checkpoint.state_dict)
    x = torch.randint(0, CONFIG.vocab_size, (2, 12))
    assert torch.equal(model(x)[0], reference(x)[0])  # the tables no file saves (rotary) are rebuilt


def test_a_refused_resume_or_init_from_builds_nothing(saved, tmp_path):
    from gptkit.preflight import plan_run
    from gptkit.config import TrainConfig

    evil = _rewrite(saved, tmp_path / "evil.safetensors", n_layer=20000)
    started = time.monotonic()
    with pytest.raises(GptkitError, match="the tensor blocks.2.attn_norm.weight is missing"):
        plan_run(CONFIG, TrainConfig(data=str(tmp_path / "none"), out=str(tmp_path / "run")), init_from=evil)
    assert time.monotonic() - started < 5


def test_a_rope_context_the_weights_cannot_justify_is_refused(saved, tmp_path):
    huge = _rewrite(saved, tmp_path / "huge.safetensors", block_size=2**30)  # 128 GB of cos/sin tables (head size 16)
    with pytest.raises(GptkitError, match=r"block_size 1,073,741,824\) needs 131,072 MB of rotary tables"):
        load_checkpoint(huge).build_model()


def test_a_resume_state_shaped_for_another_model_is_refused():
    from gptkit.distributed import load_optimizer_state

    torch.manual_seed(0)
    model = GPT(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randint(0, CONFIG.vocab_size, (1, 8)), torch.randint(0, CONFIG.vocab_size, (1, 8)))[1].backward()
    optimizer.step()
    state = optimizer.state_dict()
    state["state"][0]["exp_avg"] = torch.zeros(7, 7)
    with pytest.raises(GptkitError, match=r"exp_avg for token_embedding.weight is \(7, 7\), but the parameter is \(29, 32\)"):
        load_optimizer_state(model, torch.optim.AdamW(model.parameters()), state)


def test_an_adapter_whose_recorded_rank_disagrees_with_its_tensors_is_refused():
    from gptkit.checkpoint import Checkpoint
    from gptkit.lora import apply_adapter, apply_lora, lora_state_dict

    torch.manual_seed(0)
    trained = apply_lora(GPT(CONFIG), ["q", "v"], 2, 4.0, 0.0)
    settings = {"rank": 2, "alpha": 4.0, "targets": ["q", "v"]}
    adapter = Checkpoint(CONFIG, SPEC, dict(lora_state_dict(trained)), kind="adapter", train_config={"lora": settings})
    apply_adapter(GPT(CONFIG), adapter)  # as written: fine
    adapter.train_config = {"lora": {**settings, "rank": 10**9}}  # edited: would allocate 10^9-row matrices
    started = time.monotonic()
    with pytest.raises(GptkitError, match="rank 1000000000 recorded, 2 in its tensors"):
        apply_adapter(GPT(CONFIG), adapter)
    assert time.monotonic() - started < 1
