"""OpenAI's pretrained BPE encodings (gpt2, cl100k_base, o200k_base) through tiktoken.

tiktoken downloads an encoding's files the first time it is used and caches them (in
TIKTOKEN_CACHE_DIR, or a temp folder). Offline, a clear error says how to provide them.
"""

from __future__ import annotations

import textwrap

from gptkit.errors import GptkitError
from gptkit.tokenizers.tiktoken_backed import TiktokenBackedTokenizer

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
            f"verifying) them failed ({type(e).__name__}: {textwrap.shorten(str(e), 160, placeholder=' ...')})",
            hint="connect to the network once so that tiktoken caches them, or point TIKTOKEN_CACHE_DIR at a "
            "folder that holds them",
        ) from e


class TiktokenTokenizer(TiktokenBackedTokenizer):
    kind = "tiktoken"

    def __init__(self, encoding_name: str):
        self.encoding_name = encoding_name
        self.encoding = load_tiktoken_encoding(encoding_name)

    @property
    def name(self) -> str:
        return self.encoding_name

    def spec(self) -> dict:
        return {"kind": self.kind, "encoding": self.encoding_name}
