"""OpenAI's pretrained BPE encodings (gpt2, cl100k_base, o200k_base) through tiktoken.

tiktoken downloads an encoding's files the first time it is used and caches them (in
TIKTOKEN_CACHE_DIR, or a temp folder). Offline, a clear error says how to provide them.
"""

from __future__ import annotations

from gptkit.errors import GptkitError
from gptkit.tokenizers.base import ENDOFTEXT, Tokenizer

PRETRAINED = ("gpt2", "r50k_base", "p50k_base", "cl100k_base", "o200k_base")


def load_tiktoken_encoding(name: str):
    import tiktoken

    if name not in PRETRAINED:
        raise GptkitError(f"unknown tiktoken encoding {name!r}", hint=f"choose one of {', '.join(PRETRAINED)}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # network errors come from requests/urllib, whose types vary by version
        raise GptkitError(
            f"could not load tiktoken's {name!r} encoding: its files are not cached and downloading (or "
            f"verifying) them failed ({type(e).__name__}: {str(e)[:80]})",
            hint="connect once so tiktoken can cache them, or point TIKTOKEN_CACHE_DIR at a folder holding "
            "them, or use --tokenizer char",
        ) from e


class TiktokenTokenizer(Tokenizer):
    kind = "tiktoken"

    def __init__(self, encoding_name: str):
        self.encoding_name = encoding_name
        self.encoding = load_tiktoken_encoding(encoding_name)
        self._eot = self.encoding._special_tokens.get(ENDOFTEXT)

    @property
    def name(self) -> str:
        return self.encoding_name

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def eot_id(self) -> int | None:
        return self._eot

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(ids, errors="replace")

    def spec(self) -> dict:
        return {"kind": self.kind, "encoding": self.encoding_name}
