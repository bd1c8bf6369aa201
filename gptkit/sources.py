"""Where raw text comes from: named datasets (downloaded once into a cache) and the user's own files.

The cache lives in ~/.cache/gptkit, or wherever GPTKIT_CACHE points. Downloads are verified against a
known sha256, so a half-downloaded or tampered file is never used. Offline, `--source FILE` (or the
GPTKIT_SHAKESPEARE environment variable) points at a local copy instead.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gptkit.errors import GptkitError
from gptkit.fileio import atomic_write_bytes


@dataclass(frozen=True)
class Dataset:
    name: str
    url: str
    sha256: str
    num_bytes: int
    description: str


DATASETS = {
    "shakespeare": Dataset(
        name="shakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        num_bytes=1_115_394,
        description="tiny Shakespeare: 40,000 lines of his plays, 1.1 MB (Karpathy's char-rnn corpus)",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("GPTKIT_CACHE") or Path.home() / ".cache" / "gptkit")


def fetch_dataset(dataset: Dataset, timeout: float = 30.0) -> Path:
    """Return the cached file of `dataset`, downloading and verifying it first if needed."""
    path = cache_dir() / "datasets" / f"{dataset.name}.txt"
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == dataset.sha256:
        return path
    try:
        with urllib.request.urlopen(dataset.url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise GptkitError(
            f"could not download {dataset.name} from {dataset.url} ({reason})",
            hint=f"offline? pass a local copy with --source FILE (or set GPTKIT_{dataset.name.upper()}=FILE)",
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != dataset.sha256:
        raise GptkitError(
            f"the downloaded {dataset.name} has sha256 {digest[:16]}..., expected {dataset.sha256[:16]}... "
            f"({len(data):,} bytes, expected {dataset.num_bytes:,})",
            hint="the download was cut short or altered; try again, or pass a local copy with --source FILE",
        )
    atomic_write_bytes(path, data)
    return path


BLOCK_BYTES = 1 << 20  # text files are read 1 MiB at a time


def read_text_blocks(source: str | Path | BinaryIO, name: str | None = None, block_bytes: int | None = None) -> Iterator[str]:
    """Decode a UTF-8 file (a path or a binary stream, e.g. stdin) block by block, never holding
    more than one block (BLOCK_BYTES by default); a character split between two blocks is completed
    by the next one. Refuses binary and non-UTF-8 input with a message that names it."""
    block_bytes = block_bytes or BLOCK_BYTES
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            yield from read_text_blocks(f, str(source), block_bytes)
        return
    name = name or getattr(source, "name", "the input")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    while True:
        block = source.read(block_bytes)
        if offset == 0 and b"\x00" in block[:65536]:
            raise GptkitError(f"{name} looks like a binary file (it contains NUL bytes)", hint="gptkit trains on UTF-8 text")
        carried = decoder.getstate()[0]  # bytes of a character the previous block left unfinished
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
            raise GptkitError(
                f"{name} is not valid UTF-8 (byte {offset - len(carried) + e.start:,}: {(carried + block)[e.start:e.start + 4]!r})",
                hint="convert it first, e.g. `iconv -f latin1 -t utf-8 FILE`",
            ) from None
        if text:
            yield text
        if not block:
            return
        offset += len(block)


def missing_file_hint(path: Path) -> str:
    where = "" if path.is_absolute() else f"; a relative path starts in the current folder, {Path.cwd()}"
    return f"check the name and the folder{where}"


def read_text_file(path: str | Path) -> str:
    """Read a whole UTF-8 text file, refusing binary or non-UTF-8 files with a message that names them."""
    path = Path(path)
    if not path.exists():
        raise GptkitError(f"{path} does not exist", hint=missing_file_hint(path))
    if path.is_dir():
        raise GptkitError(f"{path} is a folder, not a text file")
    return "".join(read_text_blocks(path))


def collect_text_files(paths: list[str | Path]) -> list[Path]:
    """Expand folders into the files below them (sorted, hidden files skipped); keep files as given."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise GptkitError(f"folder {p} holds no files")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise GptkitError(f"{p} does not exist", hint=missing_file_hint(p))
    if not files:
        raise GptkitError("no input files given")
    return files
