"""Tokenizers: build one by name, or rebuild one from its spec.

    build_tokenizer("char", corpus_text)      # trains the vocabulary on the corpus
    build_tokenizer("bpe:4096", corpus_text)  # gptkit's byte-level BPE, 4096 ids
    build_tokenizer("sp-unigram:4096", text)  # SentencePiece, unigram model
    build_tokenizer("gpt2")                   # a pretrained tiktoken encoding
    build_tokenizer("data/shakespeare")       # the one a data folder, saved tokenizer or checkpoint uses
    tokenizer_from_spec(meta["tokenizer"])    # exactly the tokenizer some data/checkpoint was made with
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gptkit.errors import UsageError
from gptkit.tokenizers.base import ENDOFTEXT, Tokenizer
from gptkit.tokenizers.bpe import DEFAULT_PATTERN, BPETokenizer
from gptkit.tokenizers.char import CharTokenizer
from gptkit.tokenizers.loading import TRAINABLE, load_tokenizer, tokenizer_from_spec
from gptkit.tokenizers.pretrained import PRETRAINED, TiktokenTokenizer
from gptkit.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer

__all__ = [
    "ENDOFTEXT", "Tokenizer", "CharTokenizer", "BPETokenizer", "SentencePieceTokenizer", "TiktokenTokenizer",
    "build_tokenizer", "train_tokenizer", "tokenizer_from_spec", "load_tokenizer", "needs_corpus",
]

DEFAULT_VOCAB_SIZE = 4096


def train_tokenizer(
    kind: str,
    corpus: str | Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    pattern: str = DEFAULT_PATTERN,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    unk: bool = False,
) -> Tokenizer:
    """Learn a tokenizer of `kind` (char, bpe, sp-bpe, sp-unigram; `sentencepiece` means sp-unigram,
    the library's default) from a corpus: a string, or an iterable of cleanly cut pieces of it
    (see streaming.iter_pieces).

    `vocab_size` does not apply to char (its vocabulary is the corpus's characters); `pattern` (gpt2,
    gpt4, gpt4o or a regex) only to bpe; `unk` only to char; `special_tokens` to bpe and sp-*.
    """
    kind = "sp-unigram" if kind == "sentencepiece" else kind
    if kind == "char":
        if tuple(special_tokens) != (ENDOFTEXT,):
            raise UsageError("the char tokenizer has one special token, <|endoftext|>", hint="drop --special")
        return CharTokenizer.train(corpus, unk=unk)
    if unk:
        raise UsageError("<unk> is for the char tokenizer", hint=f"{kind} never meets an unknown character: drop --unk")
    if kind == "bpe":
        return BPETokenizer.train(corpus, vocab_size, pattern, special_tokens)
    if kind in ("sp-bpe", "sp-unigram"):
        return SentencePieceTokenizer.train(corpus, vocab_size, kind.removeprefix("sp-"), special_tokens)
    raise UsageError(f"unknown tokenizer kind {kind!r}", hint=f"choose one of {', '.join(TRAINABLE)}, sentencepiece")


def parse_tokenizer_name(name: str) -> tuple[str, dict] | None:
    """`bpe:4096` -> ("bpe", {"vocab_size": 4096}); `char:unk` -> ("char", {"unk": True}); a pretrained
    name -> ("tiktoken", {}); None when `name` is not a tokenizer name (then it may be a path)."""
    if name in PRETRAINED:
        return "tiktoken", {}
    if name in ("char", "char:unk"):
        return "char", {"unk": name == "char:unk"}
    kind, _, size = name.partition(":")
    if kind in ("bpe", "sp-bpe", "sp-unigram"):
        if not size:
            return kind, {"vocab_size": DEFAULT_VOCAB_SIZE}
        if size.isdigit() and int(size) > 0:
            return kind, {"vocab_size": int(size)}
        raise UsageError(f"tokenizer {name!r}: the vocabulary size must be a positive number", hint=f"e.g. {kind}:4096")
    return None


def needs_corpus(name: str) -> bool:
    """Whether `build_tokenizer(name, ...)` trains on the corpus (so `prepare` must read it first)."""
    parsed = parse_tokenizer_name(name)
    return parsed is not None and parsed[0] in TRAINABLE


def build_tokenizer(name: str, corpus: str | Iterable[str] | None = None) -> Tokenizer:
    """Make the tokenizer `name`: trained on `corpus` (char, char:unk, bpe:N, sp-bpe:N, sp-unigram:N),
    pretrained (gpt2, cl100k_base, o200k_base), or loaded from a path (a saved tokenizer, a data
    folder, a checkpoint)."""
    parsed = parse_tokenizer_name(name)
    if parsed is None:
        return load_tokenizer(name)
    kind, options = parsed
    if kind == "tiktoken":
        return TiktokenTokenizer(name)
    if corpus is None:
        raise ValueError(f"the {name} tokenizer needs the corpus to learn its vocabulary")
    return train_tokenizer(kind, corpus, **options)
