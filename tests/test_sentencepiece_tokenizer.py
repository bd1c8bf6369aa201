"""SentencePiece (BPE and unigram) through the sentencepiece library: lossless settings, specs."""

from __future__ import annotations

import base64
import json

import pytest
from tokenizer_fixtures import TRICKY_TEXTS, shakespeare, small_sentencepiece, training_corpus

from gptkit.errors import GptkitError
from gptkit.tokenizers import ENDOFTEXT, SentencePieceTokenizer, build_tokenizer, tokenizer_from_spec


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_trains_the_asked_vocabulary(model_type):
    tok = small_sentencepiece(model_type)
    assert tok.vocab_size == 600
    assert tok.name == f"sp-{model_type}:600"
    assert tok.eot_id == 1 and tok.special_tokens == {ENDOFTEXT: 1}  # <unk> is 0
    assert not tok.byte_level
    pieces = [tok.piece(i) for i in range(tok.vocab_size)]
    assert "▁the" in pieces and "<0x0A>" in pieces  # words with their space; byte fallback


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
@pytest.mark.parametrize("name", sorted(TRICKY_TEXTS))
def test_tricky_texts_round_trip(model_type, name):
    tok = small_sentencepiece(model_type)
    text = TRICKY_TEXTS[name]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")


def test_the_space_symbol_is_the_one_exception():
    tok = small_sentencepiece("bpe")
    assert tok.decode(tok.encode("a\u2581b")) == "a b"


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_line_by_line_encoding_equals_sentencepiece_on_the_whole_text(model_type):
    tok = small_sentencepiece(model_type)
    text = shakespeare()[300_000:400_000] + TRICKY_TEXTS["mixed"]
    assert tok.encode(text) == tok.sp.encode(text)
    assert tok.decode(tok.encode(text)) == tok.sp.decode(tok.sp.encode(text)) == text


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_spec_rebuilds_the_same_model(model_type, tmp_path):
    tok = small_sentencepiece(model_type)
    spec = json.loads(json.dumps(tok.spec()))
    assert spec["kind"] == "sentencepiece" and spec["model_type"] == model_type
    assert base64.b64decode(spec["model"]) == tok.model
    again = tokenizer_from_spec(spec)
    assert again.spec() == spec
    text = shakespeare()[:20_000] + TRICKY_TEXTS["mixed"]
    assert again.encode(text) == tok.encode(text)
    tok.save(tmp_path)
    assert build_tokenizer(str(tmp_path)).encode(text) == tok.encode(text)


def test_special_tokens_are_control_symbols():
    tok = SentencePieceTokenizer.train(training_corpus()[:50_000], 400, "bpe", [ENDOFTEXT, "<|user|>"])
    assert tok.special_tokens == {ENDOFTEXT: 1, "<|user|>": 2}
    assert 2 not in tok.encode("<|user|> hello")  # spelled out, it is text
    ids = tok.encode("<|user|> hello", allowed_special="all")
    assert ids[0] == 2 and tok.decode(ids) == "<|user|> hello"


def test_sentencepiece_named_kind_means_unigram():
    from gptkit.tokenizers import train_tokenizer

    tok = train_tokenizer("sentencepiece", training_corpus()[:50_000], 400)
    assert tok.model_type == "unigram"


def test_too_small_a_vocabulary_is_a_clear_error():
    with pytest.raises(GptkitError, match="SentencePiece could not train"):
        SentencePieceTokenizer.train(TRICKY_TEXTS["mixed"] * 3, 100, "bpe")


def test_damaged_model_is_refused():
    spec = json.loads(json.dumps(small_sentencepiece("bpe").spec()))
    spec["model"] = base64.b64encode(b"not a model").decode()
    with pytest.raises(GptkitError, match="not a valid SentencePiece model"):
        tokenizer_from_spec(spec)
    spec["model"] = "%%%"
    with pytest.raises(GptkitError, match="not valid base64"):
        tokenizer_from_spec(spec)
