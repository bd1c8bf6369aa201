"""Hugging Face GPT-2 in: a small random GPT2LMHeadModel and a byte-level BPE trained with `tokenizers`,
saved both ways, imported, and compared (logits, greedy tokens, token ids). No network."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from gptkit.errors import GptkitError  # noqa: E402
from gptkit.hf_import import convert, load_init_weights  # noqa: E402
from gptkit.tokenizers import load_tokenizer, tokenizer_from_spec  # noqa: E402

MIXED = "Hello world, it's 2024!\r\nAção, coração e pão — não?  🙂🚀 東京は晴れ。\n\n  tabs\tand  spaces  \n"
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's a test, isn't it? 12345 67890",
    "Ação e coração, maçã e pão. Não há problema! São Paulo é grande.",
    "東京は晴れです。日本語のテキスト。🙂🚀🎉 emoji here.\r\nWindows lines\r\n",
] * 20


def train_bpe(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(folder / "tokenizer.json"))
    tok.model.save(str(folder))  # vocab.json + merges.txt
    return tok


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-gpt2")
    tok = train_bpe(folder)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(str(folder))
    return folder, model, tok


def bin_folder(tmp_path, hf_folder, hub_names: bool = False):
    """The same model with its weights as pytorch_model.bin (no safetensors). hub_names: the tensor
    names of the hub's original gpt2 files (no "transformer." prefix, causal-mask buffers included)."""
    folder, model, _ = hf_folder
    other = tmp_path / "bin"
    other.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt"):
        (other / name).write_bytes((folder / name).read_bytes())
    state = model.state_dict()
    if hub_names:
        state = {k.removeprefix("transformer."): v for k, v in state.items() if k != "lm_head.weight"}
        state.update({f"h.{i}.attn.bias": torch.tril(torch.ones(1, 1, 64, 64)) for i in range(2)})
    torch.save(state, other / "pytorch_model.bin")
    return other


def test_token_ids_match_the_folders_tokenizer(hf_folder, tmp_path):
    folder, _, tok = hf_folder
    ours = load_tokenizer(folder)  # tokenizer.json
    assert ours.encode(MIXED) == tok.encode(MIXED).ids
    assert ours.decode(ours.encode(MIXED)) == MIXED
    assert ours.eot_id == tok.token_to_id("<|endoftext|>") and ours.vocab_size == tok.get_vocab_size()
    # vocab.json + merges.txt alone give the same ids, and the spec is self-contained JSON
    classic = load_tokenizer(bin_folder(tmp_path, hf_folder))
    assert classic.encode(MIXED) == tok.encode(MIXED).ids
    rebuilt = tokenizer_from_spec(json.loads(json.dumps(ours.spec())))
    assert rebuilt.encode(MIXED) == tok.encode(MIXED).ids


@pytest.mark.parametrize("layout", ["safetensors", "bin", "bin-hub-names"])
def test_imported_logits_and_greedy_tokens_match(hf_folder, tmp_path, layout):
    from gptkit.model import GPT

    folder, hf_model, tok = hf_folder
    source = folder if layout == "safetensors" else bin_folder(tmp_path, hf_folder, hub_names=layout == "bin-hub-names")
    config, state, spec = load_init_weights(source)
    assert config.mlp == "gelu" and config.gelu_approximate == "tanh" and config.position == "learned" and config.block_size == 64
    model = GPT(config).eval()
    model.load_state_dict(state, strict=True)
    ids = torch.tensor([tok.encode(MIXED).ids[:40]])
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf_model(ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-4
    # 50 greedy tokens from a short prompt
    seq, ref = ids[:, :5], ids[:, :5]
    with torch.no_grad():
        for _ in range(50):
            seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
        ref = hf_model.generate(ref, max_new_tokens=50, do_sample=False, attention_mask=torch.ones_like(ref), pad_token_id=0)
    assert seq.tolist() == ref.tolist()


def test_convert_writes_a_checkpoint_that_loads_and_is_accepted_as_init_from(hf_folder, tmp_path):
    from gptkit.checkpoint import load_checkpoint

    folder, hf_model, tok = hf_folder
    path = convert(folder, tmp_path / "out")
    ckpt = load_checkpoint(path)
    assert ckpt.tokenizer_spec["kind"] == "hf-bpe" and ckpt.train_config["init_from"] == str(folder)
    ids = torch.tensor([tok.encode("Hello world").ids])
    with torch.no_grad():
        assert (ckpt.build_model()(ids)[0] - hf_model(ids).logits).abs().max().item() <= 1e-4
    config, state, spec = load_init_weights(tmp_path / "out")  # a gptkit checkpoint (run folder) works too
    assert spec == ckpt.tokenizer_spec and config == ckpt.model_config
    assert load_tokenizer(tmp_path / "out").encode(MIXED) == tok.encode(MIXED).ids


def test_prepare_text_accepts_a_hf_folder_as_tokenizer(hf_folder, tmp_path):
    from gptkit.prepare import prepare_text
    from gptkit.shards import Split

    folder, _, tok = hf_folder
    (tmp_path / "a.txt").write_text(MIXED * 3, encoding="utf-8")
    meta = prepare_text([tmp_path / "a.txt"], tmp_path / "data", str(folder), val_fraction=0.0, workers=1)
    assert meta["tokenizer"]["kind"] == "hf-bpe"
    assert Split.open(tmp_path / "data", "train").shards[0].tolist() == tok.encode(MIXED * 3).ids


def test_tokenize_encode_accepts_a_hf_folder(hf_folder):
    import io

    from gptkit.tokenization import encode_stream

    folder, _, tok = hf_folder
    sink = io.BytesIO()
    encode_stream(str(folder), io.BytesIO("Ação 🙂 東京\n".encode()), sink, "lines", ())
    assert [int(i) for i in sink.getvalue().split()] == tok.encode("Ação 🙂 東京\n").ids


def test_a_pickled_object_in_pytorch_model_bin_is_refused(hf_folder, tmp_path):
    other = bin_folder(tmp_path, hf_folder)
    torch.save({"weights": object()}, other / "pytorch_model.bin")  # needs real unpickling: refused
    with pytest.raises(GptkitError, match="cannot be read as plain tensors"):
        load_init_weights(other)


def test_other_tokenizer_kinds_are_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(GptkitError, match="WordPiece tokenizer, not a GPT-2-style byte-level BPE"):
        load_tokenizer(tmp_path)


def test_unsupported_model_config_is_refused(hf_folder, tmp_path):
    folder, _, _ = hf_folder
    other = bin_folder(tmp_path, hf_folder)
    config = json.loads((other / "config.json").read_text())
    config["activation_function"] = "relu"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(GptkitError, match="activation_function 'relu'"):
        load_init_weights(other)


def test_a_hub_name_offline_names_the_cache(monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("GPTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GptkitError) as e:
        load_init_weights("gpt2")
    assert str(tmp_path / "cache" / "hf") in e.value.message and "hf download" in e.value.hint


def test_an_unknown_reference_is_refused(tmp_path):
    with pytest.raises(GptkitError, match="not a hub model"):
        load_init_weights(tmp_path / "nothing")


def test_prepare_instructions_with_a_hf_folder_fits_its_context(hf_folder, tmp_path):
    from gptkit.instruction_data import InstructionSplit
    from gptkit.instructions import prepare_instructions

    folder, _, tok = hf_folder
    (tmp_path / "ex.jsonl").write_text(json.dumps({"prompt": "Ação?", "completion": "Sim 🙂"}) + "\n", encoding="utf-8")
    meta = prepare_instructions(tmp_path / "ex.jsonl", tmp_path / "data", str(folder), val_fraction=0.0)
    assert meta["block_size"] == 64 and meta["tokenizer"]["kind"] == "hf-bpe"
    x, y = InstructionSplit.open(tmp_path / "data", "train").rows([0], 64)
    completion = tok.encode("Sim 🙂\n").ids + [tok.token_to_id("<|endoftext|>")]
    assert [t for t in y[0].tolist() if t != -100] == completion


def test_train_init_from_a_hf_folder(hf_folder, tmp_path):
    """train(init_from=FOLDER) runs from the imported weights; its checkpoint keeps their tokenizer and tanh GELU."""
    from gptkit.config import TrainConfig
    from gptkit.prepare import prepare_text
    from gptkit.train import train

    folder, hf_model, tok = hf_folder
    (tmp_path / "a.txt").write_text(MIXED * 40, encoding="utf-8")
    prepare_text([tmp_path / "a.txt"], tmp_path / "data", str(folder), workers=1)
    config, _, _ = load_init_weights(folder)
    cfg = TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), device="cpu", dtype="float32", max_iters=2,
                      batch_size=2, eval_interval=1, eval_iters=1, log_interval=1, warmup_iters=1, learning_rate=1e-4, min_lr=1e-5)
    from gptkit.checkpoint import load_checkpoint

    result = train(config, cfg, init_from=str(folder))
    ckpt = load_checkpoint(tmp_path / "run" / "ckpt.safetensors")
    assert ckpt.tokenizer_spec["kind"] == "hf-bpe" and ckpt.model_config.gelu_approximate == "tanh"
    assert result is not None


def test_train_cli_init_from_converts_with_max_iters_0_and_trains_otherwise(hf_folder, tmp_path, run_cli):
    """`gptkit train --init-from FOLDER --max-iters 0 --out DIR` converts; without it the run starts there."""
    from gptkit.checkpoint import load_checkpoint
    from gptkit.prepare import prepare_text

    folder, hf_model, tok = hf_folder
    converted = run_cli("train", "--init-from", folder, "--max-iters", "0", "--out", tmp_path / "conv")
    assert converted.code == 0, converted.stderr
    assert converted.stdout.strip() == str(tmp_path / "conv" / "ckpt.safetensors")
    ids = torch.tensor([tok.encode("Hello world").ids])
    with torch.no_grad():
        logits = load_checkpoint(tmp_path / "conv" / "ckpt.safetensors").build_model()(ids)[0]
        assert (logits - hf_model(ids).logits).abs().max().item() <= 1e-4

    (tmp_path / "a.txt").write_text(MIXED * 40, encoding="utf-8")
    prepare_text([tmp_path / "a.txt"], tmp_path / "data", str(folder), workers=1)
    trained = run_cli(
        "train", "--init-from", tmp_path / "conv", "--data", tmp_path / "data", "--out", tmp_path / "run", "--device", "cpu",
        "--max-iters", "2", "--batch-size", "2", "--eval-interval", "1", "--eval-iters", "1", "--warmup-iters", "1",
    )
    assert trained.code == 0, trained.stderr
    assert "starting from the weights of" in trained.stderr
    assert load_checkpoint(tmp_path / "run" / "ckpt.safetensors").model_config == load_checkpoint(tmp_path / "conv" / "ckpt.safetensors").model_config
