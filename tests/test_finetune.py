"""gptkit finetune: LoRA (step 0 is the base, merge is exact, only LoRA trains), the adapter's checks,
full fine-tuning with freezing, resume bitwise, and the command line end to end."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from gptkit.checkpoint import load_checkpoint, save_checkpoint
from gptkit.checkpoint_format import ADAPTER
from gptkit.errors import GptkitError
from gptkit.finetune import adapter_step_path, finetune
from gptkit.finetune_config import FULL_DEFAULTS, LORA_DEFAULTS, resolve_finetune_config
from gptkit.inference import load_model
from gptkit.lora import LoRALinear, apply_adapter, apply_lora, count_parameters, freeze, lora_layers, lora_state_dict, merge_lora
from gptkit.model import GPT, ModelConfig

TINY = ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
FT_TRAIN = dict(device="cpu", dtype="float32", max_iters=8, batch_size=4, eval_interval=4, eval_iters=2, log_interval=2, seed=7)


def tokens(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY.vocab_size, (2, TINY.block_size), generator=g)


def randomize_lora(model):
    torch.manual_seed(3)
    for layer in lora_layers(model).values():
        torch.nn.init.normal_(layer.lora_B, std=0.5)


@pytest.mark.parametrize("targets", ["q,k,v,o,mlp", "q,v", "k", "o,mlp_fc", "mlp_proj"])
def test_step_zero_is_exactly_the_base(targets):
    torch.manual_seed(0)
    model = GPT(TINY)
    x = tokens()
    with torch.no_grad():
        base = model(x)[0]
        apply_lora(model, targets, rank=4, alpha=8)
        assert torch.equal(model(x)[0], base)  # B = 0: not close, equal


@pytest.mark.parametrize("targets", ["q,k,v,o,mlp", "q,v", "k,mlp"])
def test_merged_logits_equal_base_plus_adapter(targets):
    torch.manual_seed(0)
    model = apply_lora(GPT(TINY), targets, rank=4, alpha=8)
    randomize_lora(model)
    merged = GPT(TINY)
    merged.load_state_dict(merge_lora(model))  # strict: a plain GPT state dict
    x = tokens(1)
    with torch.no_grad():
        diff = (model(x)[0] - merged(x)[0]).abs().max().item()
        assert diff <= 1e-5
        assert (model(x)[0] - GPT(TINY)(x)[0]).abs().max() > 1e-2  # the adapter does change the model


def test_qkv_parts_touch_only_their_slice():
    torch.manual_seed(0)
    model = apply_lora(GPT(TINY), "v", rank=2, alpha=2)
    layer = model.blocks[0].attn.qkv
    assert isinstance(layer, LoRALinear) and layer.parts == [(64, 96)]
    randomize_lora(model)
    delta = layer.delta_weight()
    assert delta[:64].abs().max() == 0 and delta[64:].abs().max() > 0


def test_only_lora_trains_and_the_base_is_unchanged():
    torch.manual_seed(0)
    model = apply_lora(GPT(TINY), "q,k,v,o,mlp", rank=4, alpha=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for seed in range(3):
        _, loss = model(tokens(seed), tokens(seed + 10))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    for name, value in after.items():
        if not name.endswith(("lora_A", "lora_B")):
            assert torch.equal(value, before[name]), name  # the base: bit for bit as it was
    assert all(not torch.equal(after[n], before[n]) for n in after if n.endswith(("lora_A", "lora_B")))
    trainable_count, total = count_parameters(model)
    assert trainable_count == sum(v.numel() for v in lora_state_dict(model).values()) < total / 5


def test_freeze_embeddings_and_first_blocks():
    model = freeze(GPT(TINY), embeddings=True, blocks=1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "token_embedding.weight" in frozen and "position_embedding.weight" in frozen
    assert all(n in frozen for n, _ in model.blocks[0].named_parameters(prefix="blocks.0"))
    assert not any(n.startswith("blocks.1.") for n in frozen)
    with pytest.raises(GptkitError, match="cannot freeze 3 blocks"):
        freeze(GPT(TINY), blocks=3)


def test_fine_tuning_defaults_depend_on_the_mode():
    ft, cfg = resolve_finetune_config(None, {}, {})
    assert not ft.lora and cfg.learning_rate == FULL_DEFAULTS["learning_rate"] == 1e-4
    ft, cfg = resolve_finetune_config(None, {"lora_rank": 8}, {"learning_rate": 5e-4})
    assert ft.lora and LORA_DEFAULTS["learning_rate"] == 1e-3 and cfg.learning_rate == 5e-4 and cfg.warmup_iters == 20


def configs(tiny_run, out, finetune=None, **train):
    return resolve_finetune_config(None, finetune or {}, {**FT_TRAIN, "data": str(tiny_run.data), "out": str(out), **train})


def test_lora_finetune_writes_merged_checkpoint_and_adapter(tmp_path, tiny_run):
    ft, cfg = configs(tiny_run, tmp_path / "lora", {"lora_rank": 4, "lora_targets": "q,v,o"})
    result = finetune(tiny_run.ckpt, ft, cfg)
    base = load_checkpoint(tiny_run.ckpt)
    merged = load_checkpoint(result.out / "ckpt.safetensors")
    adapter = load_checkpoint(result.out / "adapter.safetensors")
    assert merged.kind == "model" and merged.step == 8
    assert adapter.kind == ADAPTER and adapter.base_checksum == base.checksum and adapter.step == 8
    assert adapter.train_config["data"] == str(tiny_run.data)
    assert adapter.train_config["lora"] == {"rank": 4, "alpha": 16.0, "dropout": 0.0, "targets": "q,v,o"}
    assert set(adapter.state_dict) == {f"blocks.{i}.{m}.{p}" for i in range(2) for m in ("attn.qkv", "attn.proj") for p in ("lora_A", "lora_B")}
    # only the LoRA weights trained: the merged model differs from the base only in the adapted matrices
    changed = {k for k in base.state_dict if not torch.equal(base.state_dict[k], merged.state_dict[k])}
    assert changed == {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj")}
    # the base + adapter, unmerged, gives the merged model's logits
    unmerged = load_model(tiny_run.ckpt, "cpu", "float32", adapter=result.out / "adapter.safetensors").model
    plain = load_model(result.out / "ckpt.safetensors", "cpu", "float32").model
    x = tokens(2) % base.model_config.vocab_size
    with torch.no_grad():
        assert (unmerged(x)[0] - plain(x)[0]).abs().max().item() <= 1e-5
    assert (result.out / "finetune.toml").is_file() and adapter_step_path(result.out, 4).is_file()


def test_adapter_on_the_wrong_base_is_refused(tmp_path, tiny_run):
    ft, cfg = configs(tiny_run, tmp_path / "lora", {"lora_rank": 2}, max_iters=2, eval_interval=2)
    finetune(tiny_run.ckpt, ft, cfg)
    base = load_checkpoint(tiny_run.ckpt)
    other = GPT(base.model_config)
    other_path = tmp_path / "other.safetensors"
    save_checkpoint(other_path, other, base.tokenizer_spec, step=0)
    with pytest.raises(GptkitError, match="was trained on the base model"):
        load_model(other_path, "cpu", adapter=tmp_path / "lora" / "adapter.safetensors")
    with pytest.raises(GptkitError, match="full model, not an adapter"):
        load_model(tiny_run.ckpt, "cpu", adapter=tiny_run.ckpt)
    # and the adapter applies where it belongs
    apply_adapter(base.build_model(), load_checkpoint(tmp_path / "lora" / "adapter.safetensors"))


def test_data_with_another_tokenizer_is_refused_with_the_fix(tmp_path, tiny_run, small_corpus):
    from gptkit.prepare import prepare_text

    (tmp_path / "t.txt").write_text(small_corpus.upper() + "0123456789", encoding="utf-8")
    prepare_text([tmp_path / "t.txt"], tmp_path / "other", "char", val_fraction=0.1)
    ft, cfg = configs(tiny_run, tmp_path / "ft", data=str(tmp_path / "other"))
    with pytest.raises(GptkitError) as e:
        finetune(tiny_run.ckpt, ft, cfg)
    assert "char" in e.value.message and str(tiny_run.ckpt) in e.value.message
    assert f"gptkit prepare text NEW --tokenizer {tiny_run.ckpt}" in e.value.hint


def metrics(out):
    return [
        {k: v for k, v in json.loads(line).items() if k not in ("tokens_per_sec", "ms_per_iter", "elapsed_s", "mfu", "time", "peak_memory_mb")}
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]


def test_lora_resume_is_bitwise(tmp_path, tiny_run):
    lora = {"lora_rank": 4, "lora_dropout": 0.1}
    one_go = finetune(tiny_run.ckpt, *configs(tiny_run, tmp_path / "one", lora, max_iters=8))
    finetune(tiny_run.ckpt, *configs(tiny_run, tmp_path / "two", lora, max_iters=4))
    resumed = finetune(tiny_run.ckpt, *configs(tiny_run, tmp_path / "two", lora, max_iters=8), resume=True)
    assert resumed.step == one_go.step == 8
    for name in ("ckpt.safetensors", "adapter.safetensors"):
        a, b = load_checkpoint(one_go.out / name), load_checkpoint(resumed.out / name)
        assert a.checksum == b.checksum, name
    assert [r for r in metrics(resumed.out) if r.get("event") != "resumed"] == metrics(one_go.out)


def test_resume_on_another_base_is_refused(tmp_path, tiny_run):
    out = tmp_path / "ft"
    finetune(tiny_run.ckpt, *configs(tiny_run, out, {"lora_rank": 2}, max_iters=2, eval_interval=2))
    other = tmp_path / "other.safetensors"
    shutil.copy(tiny_run.out / "checkpoints" / "step_000015.safetensors", other)
    with pytest.raises(GptkitError, match="fine-tunes the model"):
        finetune(other, *configs(tiny_run, out, {"lora_rank": 2}, max_iters=4), resume=True)


def test_full_finetune_with_freezing(tmp_path, tiny_run):
    ft, cfg = configs(tiny_run, tmp_path / "full", {"freeze_embeddings": True, "freeze_blocks": 1}, learning_rate=1e-3)
    result = finetune(tiny_run.ckpt, ft, cfg)
    base, tuned = load_checkpoint(tiny_run.ckpt), load_checkpoint(result.out / "ckpt.safetensors")
    for name, value in base.state_dict.items():
        frozen = name.startswith(("token_embedding", "position_embedding", "blocks.0."))
        assert torch.equal(value, tuned.state_dict[name]) == frozen, name
    assert not (result.out / "adapter.safetensors").exists()
    # and it resumes bitwise like train
    finetune(tiny_run.ckpt, *configs(tiny_run, tmp_path / "half", {"freeze_embeddings": True, "freeze_blocks": 1}, learning_rate=1e-3, max_iters=4))
    again = finetune(
        tiny_run.ckpt, *configs(tiny_run, tmp_path / "half", {"freeze_embeddings": True, "freeze_blocks": 1}, learning_rate=1e-3), resume=True
    )
    assert load_checkpoint(again.out / "ckpt.safetensors").checksum == tuned.checksum


def test_finetune_cli_end_to_end(tmp_path, tiny_run, run_cli):
    out = tmp_path / "lora"
    common = ["--data", tiny_run.data, "--device", "cpu", "--dtype", "float32", "--batch-size", "4", "--eval-iters", "2"]
    printed = run_cli("finetune", "--ckpt", tiny_run.ckpt, "--out", out, "--lora-rank", "4", "--print-config", *common)
    assert printed.code == 0, printed.output
    assert "[finetune]" in printed.stdout and "lora_rank = 4" in printed.stdout and "learning_rate = 0.001" in printed.stdout
    done = run_cli("finetune", "--ckpt", tiny_run.ckpt, "--out", out, "--lora-rank", "4", "--max-iters", "6", "--eval-interval", "3", *common)
    assert done.code == 0, done.output
    assert done.stdout.strip() == str(out / "ckpt.safetensors")
    assert "parameters train" in done.stderr
    merged = run_cli("eval", "--ckpt", out / "ckpt.safetensors", "--json", "--max-batches", "2", "--device", "cpu")
    unmerged = run_cli("eval", "--ckpt", tiny_run.ckpt, "--adapter", out / "adapter.safetensors", "--json", "--max-batches", "2", "--device", "cpu")
    assert merged.code == unmerged.code == 0, merged.output + unmerged.output
    assert abs(json.loads(merged.stdout)["val_loss"] - json.loads(unmerged.stdout)["val_loss"]) < 1e-5
    sampled = [
        run_cli("sample", "--ckpt", *ckpt, "--prompt", "a", "--max-new-tokens", "20", "--temperature", "0", "--device", "cpu", "--seed", "1")
        for ckpt in ([out / "ckpt.safetensors"], [tiny_run.ckpt, "--adapter", out / "adapter.safetensors"])
    ]
    assert sampled[0].code == sampled[1].code == 0 and sampled[0].stdout == sampled[1].stdout
    # resume with the same command line, or without --ckpt (the run's finetune.toml names it), training further
    same = run_cli("finetune", "--ckpt", tiny_run.ckpt, "--out", out, "--lora-rank", "4", "--max-iters", "6", "--eval-interval", "3", "--resume", *common)
    assert same.code == 0 and "nothing to do" in same.stderr, same.output
    more = run_cli("finetune", "--out", out, "--max-iters", "9", "--resume", *common)
    assert more.code == 0, more.output
    assert load_checkpoint(out / "adapter.safetensors").step == 9
    conflict = run_cli("finetune", "--out", out, "--lora-rank", "8", "--resume", *common)
    assert conflict.code == 2 and "finetune.lora_rank 8 (saved 4)" in conflict.output
    report = run_cli("report", tiny_run.out, out, "--no-plot")
    assert report.code == 0 and "lora" in report.stdout, report.output
    help_text = run_cli("finetune", "--help").stdout
    assert "--lora-rank" in help_text and "--freeze-blocks" in help_text and "--learning-rate" in help_text


def test_sigint_saves_a_lora_run_that_resumes_bitwise(tmp_path, tiny_run):
    import os
    import signal

    from gptkit.fit import TrainingInterrupted
    from gptkit.monitor import Monitor

    class InterruptAtStep4(Monitor):
        def step(self, record):
            if record["step"] == 4:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does; the loop finishes the step and saves

    lora = {"lora_rank": 4}
    out = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted) as e:
        finetune(tiny_run.ckpt, *configs(tiny_run, out, lora, eval_interval=100), monitor=InterruptAtStep4())
    assert f"gptkit finetune --out {out} --resume" in e.value.hint
    assert load_checkpoint(out / "adapter.safetensors").step == 4
    resumed = finetune(tiny_run.ckpt, *configs(tiny_run, out, lora, eval_interval=100), resume=True)
    one_go = finetune(tiny_run.ckpt, *configs(tiny_run, tmp_path / "one", lora, eval_interval=100))
    assert resumed.step == 8
    assert load_checkpoint(resumed.out / "adapter.safetensors").checksum == load_checkpoint(one_go.out / "adapter.safetensors").checksum


def test_every_finetune_setting_has_its_option_and_bad_values_stop_before_any_file(tmp_path, tiny_run, run_cli):
    from dataclasses import fields

    from gptkit.finetune_config import FinetuneConfig
    from gptkit.options import flag_declarations

    help_text = run_cli("finetune", "--help").stdout
    for f in fields(FinetuneConfig):
        assert flag_declarations(f)[0].split("/")[0] in help_text, f.name
    out = tmp_path / "never"
    bad = run_cli("finetune", "--ckpt", tiny_run.ckpt, "--data", tiny_run.data, "--out", out, "--lora-rank", "2", "--lora-targets", "q,nope")
    assert bad.code == 2 and "unknown LoRA target(s) nope" in bad.output
    both = run_cli("finetune", "--ckpt", tiny_run.ckpt, "--data", tiny_run.data, "--out", out, "--lora-rank", "2", "--freeze-blocks", "1")
    assert both.code == 2 and "freeze_embeddings and freeze_blocks are for full fine-tuning" in both.output
    assert not out.exists()


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_lora_on_two_processes_matches_one(tmp_path, tiny_run, parallel):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("needs torch.distributed with gloo")
    from test_distributed import assert_same_weights, torchrun

    from gptkit.finetune_config import finetune_toml

    lora = {"lora_rank": 4}
    single = finetune(tiny_run.ckpt, *configs(tiny_run, tmp_path / "single", lora, max_iters=4, batch_size=8))
    config = tmp_path / "double.toml"
    config.write_text(finetune_toml(*configs(tiny_run, tmp_path / "double", lora, max_iters=4, batch_size=4, parallel=parallel)))
    run = torchrun(["finetune", "--ckpt", str(tiny_run.ckpt), "--config", str(config)])
    assert run.stdout.strip() == str(tmp_path / "double" / "ckpt.safetensors")
    assert_same_weights(single.out / "adapter.safetensors", tmp_path / "double" / "adapter.safetensors")
    assert_same_weights(single.out / "ckpt.safetensors", tmp_path / "double" / "ckpt.safetensors")


def test_lora_on_instruction_data_trains_on_completions_and_resumes_bitwise(tmp_path, tiny_run):
    from gptkit.instructions import prepare_instructions

    words = "the a art my and say you now".split()
    examples = [{"prompt": a, "completion": b} for a in words for b in words]  # "say you\nnow.\n"
    src = tmp_path / "ex.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    template = {"system": "{content}\n", "user": "say {content}\n", "assistant": "{content}.\n"}
    meta = prepare_instructions(src, tmp_path / "tasks", str(tiny_run.ckpt), template, val_fraction=0.1)
    assert meta["kind"] == "instructions" and all(info["examples"] for info in meta["splits"].values()), meta
    lora = {"lora_rank": 4}
    settings = dict(data=str(tmp_path / "tasks"), learning_rate=1e-2)
    one_go = finetune(tiny_run.ckpt, *configs(tiny_run, tmp_path / "one", lora, **settings))
    assert one_go.val_loss is not None and one_go.val_loss < load_checkpoint(tiny_run.ckpt).val_loss + 5
    finetune(tiny_run.ckpt, *configs(tiny_run, tmp_path / "two", lora, **settings, max_iters=4))
    resumed = finetune(tiny_run.ckpt, *configs(tiny_run, tmp_path / "two", lora, **settings), resume=True)
    assert load_checkpoint(resumed.out / "adapter.safetensors").checksum == load_checkpoint(one_go.out / "adapter.safetensors").checksum
    assert [r for r in metrics(resumed.out) if r.get("event") != "resumed"] == metrics(one_go.out)
