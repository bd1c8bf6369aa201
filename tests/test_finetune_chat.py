"""The chat template travels from instruction data into the fine-tuned checkpoint (and adapter), and
`sample --chat` asks a question in it and prints the answer alone; --adapter on a Hugging Face base."""

from __future__ import annotations

import json

import pytest

from gptkit.chat_template import apply_template
from gptkit.checkpoint import load_checkpoint, peek_checkpoint
from gptkit.errors import GptkitError
from gptkit.finetune import finetune
from gptkit.finetune_config import resolve_finetune_config
from gptkit.generate import chat_prompt, generate
from gptkit.inference import load_model

# The tiny corpus has no ':' (the default template's), so its own: the answer ends with ".\n".
TEMPLATE = {"system": "{content}\n", "user": "say {content}\n", "assistant": "{content}.\n"}
WORDS = "the a art my and say you now".split()
FT = dict(device="cpu", dtype="float32", max_iters=4, batch_size=4, eval_interval=4, eval_iters=1, log_interval=2, seed=7)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, tiny_run):
    from gptkit.instructions import prepare_instructions

    root = tmp_path_factory.mktemp("chat")
    src = root / "ex.jsonl"
    src.write_text("".join(json.dumps({"prompt": a, "completion": b}) + "\n" for a in WORDS for b in WORDS), encoding="utf-8")
    prepare_instructions(src, root / "tasks", str(tiny_run.ckpt), TEMPLATE, val_fraction=0.1)
    return root / "tasks"


def run_finetune(base, data, out, **finetune_settings):
    ft, cfg = resolve_finetune_config(None, finetune_settings, {**FT, "data": str(data), "out": str(out)})
    return finetune(base, ft, cfg)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_run, tasks):
    return run_finetune(tiny_run.ckpt, tasks, tmp_path_factory.mktemp("lora") / "run", lora_rank=2)


def test_full_finetune_on_instructions_records_the_template(tmp_path, tiny_run, tasks):
    assert peek_checkpoint(tiny_run.ckpt).chat_template is None  # pretrained on text: no template
    result = run_finetune(tiny_run.ckpt, tasks, tmp_path / "full")
    for name in ("ckpt.safetensors", "best.safetensors"):
        assert load_checkpoint(result.out / name).chat_template == TEMPLATE
    assert load_model(result.out / "ckpt.safetensors", device="cpu").chat_template == TEMPLATE
    # Training further on plain text keeps the template the weights came with.
    again = run_finetune(result.out / "ckpt.safetensors", tiny_run.data, tmp_path / "text")
    assert peek_checkpoint(again.out / "ckpt.safetensors").chat_template == TEMPLATE


def test_lora_records_the_template_in_the_merged_model_and_the_adapter(tiny_run, lora_run):
    assert peek_checkpoint(lora_run.out / "ckpt.safetensors").chat_template == TEMPLATE
    assert peek_checkpoint(lora_run.out / "adapter.safetensors").chat_template == TEMPLATE
    loaded = load_model(tiny_run.ckpt, device="cpu", adapter=lora_run.out / "adapter.safetensors")
    assert loaded.checkpoint.chat_template is None and loaded.chat_template == TEMPLATE  # the adapter's
    assert chat_prompt(loaded, "my") == ("say my\n", ".\n")


def test_sample_chat_prints_only_the_greedy_answer(run_cli, tiny_run, lora_run):
    ckpt = lora_run.out / "ckpt.safetensors"
    loaded = load_model(ckpt, device="cpu")
    tokenizer = loaded.tokenizer()
    prompt = apply_template(TEMPLATE, "you")
    continuation = tokenizer.decode(list(generate(loaded.model, tokenizer.encode(prompt), 40, temperature=0)))
    answer = continuation.split(".\n")[0]
    r = run_cli("sample", "--ckpt", ckpt, "--chat", "you", "--temperature", "0", "--max-new-tokens", "40", "--device", "cpu")
    assert r.code == 0, r.output
    assert r.stdout == answer + "\n"
    # the same answer from the base and the unmerged adapter, whose template it is
    adapter = lora_run.out / "adapter.safetensors"
    r = run_cli("sample", "--ckpt", tiny_run.ckpt, "--adapter", adapter, "--chat", "you", "--temperature", "0", "--max-new-tokens", "40")
    assert r.code == 0 and r.stdout == answer + "\n", r.output
    r = run_cli("sample", "--ckpt", ckpt, "--chat", "you", "--prompt", "x")
    assert r.code == 2 and "--chat is the prompt" in r.output


def test_sample_chat_without_a_template_says_why(run_cli, tiny_run):
    r = run_cli("sample", "--ckpt", tiny_run.ckpt, "--chat", "you", "--device", "cpu")
    assert r.code == 1
    assert "has no chat template" in r.stderr and "gptkit prepare instructions" in r.stderr
    with pytest.raises(GptkitError, match="no chat template"):
        chat_prompt(load_model(tiny_run.ckpt, device="cpu"), "hi")


def test_a_damaged_template_is_damaged_metadata(tmp_path, tiny_run):
    from safetensors.torch import load_file, save_file

    from gptkit.checkpoint_format import DamagedFile, read_header

    meta = read_header(tiny_run.ckpt, "checkpoint").metadata
    path = tmp_path / "bad.safetensors"
    save_file(load_file(tiny_run.ckpt), path, metadata={**meta, "chat_template": json.dumps(["user", "no slot"])})
    with pytest.raises(DamagedFile, match="chat_template"):
        load_checkpoint(path)
    save_file(load_file(tiny_run.ckpt), path, metadata={**meta, "chat_template": json.dumps({"user": "no slot"})})
    with pytest.raises(GptkitError, match="exactly one {content} slot"):  # refused where it is used
        chat_prompt(load_model(path, device="cpu"), "hi")


def test_a_hub_name_as_ckpt_says_to_convert_first(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder named gpt2 here
    r = run_cli("sample", "--ckpt", "gpt2", "--prompt", "hi")
    assert r.code == 1 and "hub name" in r.stderr and "gptkit train --init-from gpt2 --max-iters 0 --out DIR" in r.stderr
