"""Choosing a tokenizer by name, and finding the one a saved folder, data folder or checkpoint uses."""

from __future__ import annotations

import json

import pytest
from tokenizer_fixtures import TRICKY_TEXTS, small_bpe, small_sentencepiece, training_corpus

from gptkit.errors import GptkitError, UsageError
from gptkit.tokenizers import (
    ENDOFTEXT,
    CharTokenizer,
    build_tokenizer,
    load_tokenizer,
    needs_corpus,
    tokenizer_from_spec,
    train_tokenizer,
)
from gptkit.tokenizers.char import UNK


def test_names_parse_into_kinds_and_sizes():
    from gptkit.tokenizers import parse_tokenizer_name

    assert parse_tokenizer_name("bpe:4096") == ("bpe", {"vocab_size": 4096})
    assert parse_tokenizer_name("bpe") == ("bpe", {"vocab_size": 4096})
    assert parse_tokenizer_name("sp-unigram:512") == ("sp-unigram", {"vocab_size": 512})
    assert parse_tokenizer_name("char:unk") == ("char", {"unk": True})
    assert parse_tokenizer_name("gpt2") == ("tiktoken", {})
    assert parse_tokenizer_name("data/x") is None
    with pytest.raises(UsageError, match="positive number"):
        parse_tokenizer_name("bpe:lots")
    assert needs_corpus("sp-bpe:300") and needs_corpus("char") and not needs_corpus("gpt2") and not needs_corpus("tok/")


def test_build_trains_by_name():
    corpus = training_corpus()[:30_000]
    assert build_tokenizer("bpe:300", corpus).vocab_size == 300
    assert build_tokenizer("sp-bpe:400", corpus).name == "sp-bpe:400"
    assert build_tokenizer("char", "abc").vocab_size == 4


def test_char_unknown_characters_error_or_unk():
    strict = CharTokenizer.train("hello world")
    with pytest.raises(GptkitError, match="outside this char tokenizer's vocabulary: 'x'"):
        strict.encode("hex")
    tok = build_tokenizer("char:unk", "hello world")
    assert tok.name == "char:unk" and tok.vocab_size == len(set("hello world")) + 2
    assert tok.special_tokens == {ENDOFTEXT: tok.eot_id, UNK: tok.eot_id + 1}
    ids = tok.encode("hex")
    assert ids[2] == tok.eot_id + 1 and tok.decode(ids) == "he<unk>"
    assert tok.encode("he<unk>", allowed_special="all") == ids
    assert tokenizer_from_spec(json.loads(json.dumps(tok.spec()))).encode("hex") == ids


def test_char_spec_without_unk_is_unchanged():
    # data prepared before the <unk> option existed must keep comparing equal on `train --resume`
    assert CharTokenizer.train("ba").spec() == {"kind": "char", "chars": "ab"}


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(UsageError, match="<unk> is for the char tokenizer"):
        train_tokenizer("bpe", "abc", 300, unk=True)
    with pytest.raises(UsageError, match="one special token"):
        train_tokenizer("char", "abc", special_tokens=[ENDOFTEXT, "<|x|>"])
    with pytest.raises(UsageError, match="unknown tokenizer kind"):
        train_tokenizer("wordpiece", "abc")


def test_load_from_a_saved_folder_and_its_files(tmp_path):
    tok = small_bpe()
    tok.save(tmp_path)
    for ref in (tmp_path, tmp_path / "tokenizer.json", str(tmp_path)):
        assert load_tokenizer(ref).spec() == tok.spec()


def test_load_from_a_data_folder(tmp_path):
    from gptkit.prepare import Document, prepare_documents

    tok = small_sentencepiece("unigram")
    meta = prepare_documents([Document("d", TRICKY_TEXTS["mixed"] * 30)], tmp_path / "data", tok, 0.2)
    (tmp_path / "data" / "tokenizer.json").unlink()  # meta.json alone is enough
    for ref in (tmp_path / "data", tmp_path / "data" / "meta.json"):
        assert load_tokenizer(ref).spec() == meta["tokenizer"] == tok.spec()


def test_load_from_a_checkpoint_without_torch_loading_weights(tmp_path):
    torch = pytest.importorskip("torch")
    from gptkit.checkpoint import save_checkpoint
    from gptkit.model import GPT, ModelConfig

    tok = small_bpe("gpt2")
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    save_checkpoint(tmp_path / "ckpt.safetensors", model, tok.spec(), step=1)
    for ref in (tmp_path / "ckpt.safetensors", tmp_path):  # the file, or its run folder
        loaded = load_tokenizer(ref)
        assert loaded.spec() == tok.spec()
        assert loaded.encode(TRICKY_TEXTS["mixed"]) == tok.encode(TRICKY_TEXTS["mixed"])


def test_bad_references_are_clear_errors(tmp_path):
    with pytest.raises(UsageError, match="names a tokenizer to train"):
        load_tokenizer("bpe:4096")
    with pytest.raises(UsageError, match="neither a pretrained encoding nor an existing path"):
        load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(GptkitError, match="holds no tokenizer"):
        load_tokenizer(tmp_path)
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(GptkitError, match="not a readable safetensors file"):
        load_tokenizer(tmp_path / "x.safetensors")
    (tmp_path / "t.json").write_text('{"kind": "wordpiece"}')
    with pytest.raises(GptkitError, match="unrecognised tokenizer spec"):
        load_tokenizer(tmp_path / "t.json")
