"""gptkit finetune from Hugging Face GPT-2 weights (a small random GPT2LMHeadModel in a folder): LoRA
starts exactly at the imported model, and the adapter belongs to the imported weights. No network."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from test_hf_import import MIXED, hf_folder  # noqa: E402, F401  (the fixture)

from gptkit.checkpoint import load_checkpoint  # noqa: E402
from gptkit.finetune import finetune  # noqa: E402
from gptkit.finetune_config import resolve_finetune_config  # noqa: E402
from gptkit.hf_import import load_init_checkpoint  # noqa: E402


def test_lora_finetune_from_a_hf_folder(hf_folder, tmp_path):  # noqa: F811
    from gptkit.prepare import prepare_text

    folder, _, _ = hf_folder
    (tmp_path / "a.txt").write_text(MIXED * 40, encoding="utf-8")
    prepare_text([tmp_path / "a.txt"], tmp_path / "data", str(folder), workers=1)
    train = dict(data=str(tmp_path / "data"), out=str(tmp_path / "lora"), device="cpu", dtype="float32", max_iters=2,
                 batch_size=2, eval_interval=2, eval_iters=1, log_interval=1)
    ft, cfg = resolve_finetune_config(None, {"lora_rank": 2}, train)
    result = finetune(folder, ft, cfg)
    base = load_init_checkpoint(folder)
    adapter = load_checkpoint(result.out / "adapter.safetensors")
    merged = load_checkpoint(result.out / "ckpt.safetensors")
    assert adapter.base_checksum == base.checksum
    assert merged.tokenizer_spec == base.tokenizer_spec and merged.model_config == base.model_config
    # only the adapted matrices moved away from the imported weights
    changed = {k for k in base.state_dict if not torch.equal(base.state_dict[k], merged.state_dict[k])}
    assert changed and all(k.endswith(("attn.qkv.weight", "attn.proj.weight", "mlp.fc.weight", "mlp.proj.weight")) for k in changed)


def test_eval_and_sample_take_a_hf_folder_as_the_adapters_base(hf_folder, tmp_path, run_cli):  # noqa: F811
    """--ckpt HF_FOLDER --adapter FILE: the folder is imported as finetune imported it (same checksum),
    the adapter applied unmerged gives the merged model's logits, and the commands run on it."""
    from gptkit.inference import load_model
    from gptkit.prepare import prepare_text

    folder, _, _ = hf_folder
    (tmp_path / "a.txt").write_text(MIXED * 40, encoding="utf-8")
    prepare_text([tmp_path / "a.txt"], tmp_path / "data", str(folder), workers=1)
    train = dict(data=str(tmp_path / "data"), out=str(tmp_path / "lora"), device="cpu", dtype="float32", max_iters=2,
                 batch_size=2, eval_interval=2, eval_iters=1, log_interval=1, learning_rate=1e-2)
    result = finetune(folder, *resolve_finetune_config(None, {"lora_rank": 2}, train))
    adapter = result.out / "adapter.safetensors"
    unmerged = load_model(folder, device="cpu", dtype="float32", adapter=adapter)
    merged = load_model(result.out / "ckpt.safetensors", device="cpu", dtype="float32")
    idx = torch.randint(0, merged.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (unmerged.model(idx)[0] - merged.model(idx)[0]).abs().max() <= 1e-5
    r = run_cli("eval", "--ckpt", folder, "--adapter", adapter, "--data", tmp_path / "data", "--device", "cpu", "--json")
    assert r.code == 0, r.output
    assert abs(json.loads(r.stdout)["val_loss"] - run_eval(run_cli, result.out / "ckpt.safetensors", tmp_path / "data")) < 1e-4
    r = run_cli("sample", "--ckpt", folder, "--adapter", adapter, "--prompt", "Hello", "--max-new-tokens", "5",
                "--temperature", "0", "--device", "cpu")
    assert r.code == 0 and r.stdout.startswith("Hello"), r.output
    # the adapter belongs to the folder's weights: on another base it is still refused
    assert load_init_checkpoint(folder).checksum == load_checkpoint(adapter).base_checksum
    r = run_cli("sample", "--ckpt", tiny_base(tmp_path, folder), "--adapter", adapter, "--prompt", "Hello", "--max-new-tokens", "2")
    assert r.code == 1 and "was trained on the base model" in r.stderr


def run_eval(run_cli, ckpt, data) -> float:
    r = run_cli("eval", "--ckpt", ckpt, "--data", data, "--device", "cpu", "--json")
    assert r.code == 0, r.output
    return json.loads(r.stdout)["val_loss"]


def tiny_base(tmp_path, folder):
    """The HF folder's model with one weight changed, saved as a gptkit checkpoint: another base."""
    from gptkit.checkpoint import save_checkpoint
    from gptkit.model import GPT

    base = load_init_checkpoint(folder)
    model = GPT.from_state_dict(base.model_config, {k: v.clone() for k, v in base.state_dict.items()})
    with torch.no_grad():
        model.final_norm.weight.add_(1.0)
    save_checkpoint(tmp_path / "other.safetensors", model, base.tokenizer_spec, step=0)
    return tmp_path / "other.safetensors"
