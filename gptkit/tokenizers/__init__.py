"""Tokenizers: build one by name, or rebuild one from its spec.

    build_tokenizer("char", corpus_text)   # trains the vocabulary on the corpus
    build_tokenizer("gpt2")                # a pretrained tiktoken encoding
    tokenizer_from_spec(meta["tokenizer"]) # exactly the tokenizer some data/checkpoint was made with
"""

from __future__ import annotations

from gptkit.errors import GptkitError, UsageError
from gptkit.tokenizers.base import ENDOFTEXT, Tokenizer
from gptkit.tokenizers.char import CharTokenizer
from gptkit.tokenizers.pretrained import PRETRAINED, TiktokenTokenizer

__all__ = ["ENDOFTEXT", "Tokenizer", "CharTokenizer", "TiktokenTokenizer", "build_tokenizer", "tokenizer_from_spec"]

TOKENIZER_CHOICES = ("char",) + PRETRAINED


def build_tokenizer(name: str, corpus: str | None = None) -> Tokenizer:
    """Make the tokenizer `name` (see TOKENIZER_CHOICES); `corpus` trains those that learn a vocabulary."""
    if name == "char":
        if corpus is None:
            raise ValueError("the char tokenizer needs the corpus to build its vocabulary")
        return CharTokenizer.train(corpus)
    if name in PRETRAINED:
        return TiktokenTokenizer(name)
    raise UsageError(f"unknown tokenizer {name!r}", hint=f"choose one of {', '.join(TOKENIZER_CHOICES)}")


def tokenizer_from_spec(spec: dict) -> Tokenizer:
    """Rebuild a tokenizer from the spec stored in meta.json or a checkpoint."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "char" and isinstance(spec.get("chars"), str):
        return CharTokenizer(spec["chars"])
    if kind == "tiktoken" and isinstance(spec.get("encoding"), str):
        return TiktokenTokenizer(spec["encoding"])
    raise GptkitError(
        f"unrecognised tokenizer spec {str(spec)[:80]!r}",
        hint="the file was made by a newer gptkit or is damaged",
    )
