"""gptkit finetune from Hugging Face GPT-2 weights (a small random GPT2LMHeadModel in a folder): LoRA
starts exactly at the imported model, and the adapter belongs to the imported weights. No network."""

from __future__ import annotations

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
