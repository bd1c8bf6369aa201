"""Properties every tokenizer must have, checked on random unicode text (hypothesis).

For byte-level tokenizers (gptkit's BPE, tiktoken's encodings): decode_bytes(encode(text)) is
exactly text's UTF-8, the reference encoder agrees with tiktoken, encoding cleanly cut pieces
equals encoding the whole, and decoding is concatenative (so chunked decoding is exact).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizer_fixtures import TRICKY_TEXTS, pretrained, shakespeare, small_bpe, small_sentencepiece

from gptkit.tokenizers import ENDOFTEXT, CharTokenizer, tokenizer_from_spec
from gptkit.tokenizers.streaming import iter_pieces, next_clean_cut

# Random text: any unicode (hypothesis leaves out lone surrogates, which UTF-8 cannot hold), plus
# text built from pieces that stress the pre-split regex: runs of spaces and newlines, \r\n, digits,
# contractions, accents, emoji with modifiers, CJK.
PIECES = [" ", "  ", "\n", "\n\n", "\r\n", "\t", "'s", "'LL", "123456", "ção", "Ünïcödé", "👍🏽", "👨‍👩‍👧", "日本語",
          "▁", "!?", ".\n", "the", " The", "camelCase", "e\u0301"]
texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=5)), max_size=40).map("".join),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


BYTE_LEVEL = ["bpe-gpt4", "bpe-gpt2", "bpe-gpt4o", "gpt2", "cl100k_base", "o200k_base"]  # bpe-*: gptkit's


def get(name: str):
    if name.startswith("bpe-"):
        return small_bpe(name.removeprefix("bpe-"))
    return pretrained(name)


@pytest.mark.parametrize("name", BYTE_LEVEL)
def test_byte_level_round_trip_is_exact(name):
    tok = get(name)
    assert tok.byte_level

    @SETTINGS
    @given(texts)
    def check(text):
        ids = tok.encode(text)
        assert tok.decode_bytes(ids) == text.encode("utf-8")
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.vocab_size for i in ids)

    check()


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2", "gpt4o"])
@SETTINGS
@given(text=texts)
def test_reference_encoder_equals_tiktoken(pattern, text):
    tok = small_bpe(pattern)
    assert tok.encode_reference(text) == tok.encode(text)


@pytest.mark.parametrize("name", ["bpe-gpt4", "bpe-gpt2", "bpe-gpt4o", "sp-bpe", "sp-unigram", "gpt2", "o200k_base"])
def test_clean_pieces_encode_like_the_whole(name):
    tok = small_sentencepiece(name.removeprefix("sp-")) if name.startswith("sp-") else get(name)

    @SETTINGS
    @given(st.lists(texts, min_size=1, max_size=8), st.integers(1, 50))
    def check(lines, piece_chars):
        text = "\n".join(lines)
        pieces = list(iter_pieces([text[i : i + 7] for i in range(0, len(text), 7)], piece_chars=piece_chars))
        assert "".join(pieces) == text
        assert [i for piece in pieces for i in tok.encode(piece)] == tok.encode(text)

    check()
    # and on a real corpus, cut often
    text = shakespeare()[:100_000] + TRICKY_TEXTS["mixed"]
    pieces = list(iter_pieces([text], piece_chars=500))
    assert len(pieces) > 100
    assert [i for piece in pieces for i in tok.encode(piece)] == tok.encode(text)


def test_clean_cuts_are_where_the_docstring_says():
    assert next_clean_cut("ab.\nCd", 0) == 4
    assert next_clean_cut("ab \nCd", 0) == 0  # space before the newline
    assert next_clean_cut("ab.\n Cd", 0) == 0  # no letter or digit after it
    assert next_clean_cut("ab!\n/x", 0) == 0  # o200k_base keeps "!\n/" together
    assert next_clean_cut("a\nb\nc", 3) == 4


@pytest.mark.parametrize("name", ["bpe-gpt4", "sp-bpe", "sp-unigram", "char"])
def test_decoding_is_concatenative(name):
    if name == "char":
        tok = CharTokenizer.train(shakespeare())
        strategy = st.text(alphabet=tok.chars, max_size=100)
    else:
        tok = small_sentencepiece(name.removeprefix("sp-")) if name.startswith("sp-") else small_bpe()
        strategy = texts

    @SETTINGS
    @given(strategy, st.integers(0, 100))
    def check(text, at):
        ids = tok.encode(text)
        assert tok.decode_bytes(ids[:at]) + tok.decode_bytes(ids[at:]) == tok.decode_bytes(ids)

    check()


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_round_trip_except_its_space_symbol(model_type):
    tok = small_sentencepiece(model_type)

    @SETTINGS
    @given(texts)
    def check(text):
        # SentencePiece writes spaces as "▁" (U+2581), so a "▁" in the text comes back as a space.
        assert tok.decode(tok.encode(text)) == text.replace("\u2581", " ")

    check()


@SETTINGS
@given(st.text(alphabet="abcdefgh \n\t\u00e7\U0001f44d", max_size=100))
def test_char_round_trip_and_spec(text):
    tok = CharTokenizer.train("abcdefgh \n\t\u00e7\U0001f44d")
    assert tok.decode(tok.encode(text)) == text
    assert tokenizer_from_spec(tok.spec()).encode(text) == tok.encode(text)


@pytest.mark.parametrize("name", ["bpe-gpt4", "sp-bpe", "sp-unigram"])
def test_specials_round_trip_when_allowed(name):
    tok = small_sentencepiece(name.removeprefix("sp-")) if name.startswith("sp-") else small_bpe()

    @SETTINGS
    @given(st.lists(texts, max_size=4))
    def check(documents):
        text = ENDOFTEXT.join(documents)
        ids = tok.encode(text, allowed_special="all")
        assert ids.count(tok.eot_id) == text.count(ENDOFTEXT)
        expected = text.replace("\u2581", " ") if tok.kind == "sentencepiece" else text
        assert tok.decode(ids) == expected

    check()
