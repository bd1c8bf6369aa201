"""Tokenizing text too large for memory: read it in blocks, cut it into pieces, encode on all cores.

The cut is the delicate part. Tokenizers first split text into chunks (BPE's regex; SentencePiece's
lines) and never merge across chunks, so cutting the text *between* two chunks changes nothing: the
pieces' ids, concatenated, are exactly the ids of the whole text. We cut only after a newline that
has a non-space character on its left and a letter or digit on its right ("...end.\nNext..."):
no pattern of gpt2, cl100k_base, o200k_base, gptkit's BPE or SentencePiece puts such a newline in
the same chunk as the letter after it, and the chunk that ends with it ends there whatever follows.
(A line longer than MAX_PIECE_CHARS is cut where it is: the only place ids may differ from encoding
the whole text at once.)

Encoding runs on a thread pool. tiktoken's Rust core releases Python's GIL while it encodes, so its
tokenizers (gptkit's BPE, gpt2, ...) really use every core; results come back in order.
"""

from __future__ import annotations

import codecs
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

from gptkit.errors import GptkitError

BLOCK_BYTES = 1 << 20  # read 1 MiB at a time
PIECE_CHARS = 1 << 20  # encode about 1M characters per task
MAX_PIECE_CHARS = 16 << 20  # give up looking for a clean cut past this

T = TypeVar("T")
R = TypeVar("R")


def read_text_blocks(source: str | Path | BinaryIO, name: str | None = None, block_bytes: int | None = None) -> Iterator[str]:
    """Decode a UTF-8 file (a path or a binary stream, e.g. stdin) block by block, never holding
    more than one block (BLOCK_BYTES by default). A character split between two blocks is completed
    by the next one."""
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
            raise GptkitError(f"{name} looks like a binary file (it contains NUL bytes)", hint="gptkit tokenizes UTF-8 text")
        carried = len(decoder.getstate()[0])  # bytes of a character the last block left unfinished
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
            raise GptkitError(
                f"{name} is not valid UTF-8 (byte {offset - carried + e.start:,})",
                hint="convert it first, e.g. `iconv -f latin1 -t utf-8 FILE`",
            ) from None
        if text:
            yield text
        if not block:
            return
        offset += len(block)


def next_clean_cut(text: str, start: int) -> int:
    """The first index i >= start where text[:i] and text[i:] tokenize like the whole (see the module
    docstring): text[i-1] is a newline, text[i-2] is not whitespace, text[i] is a letter or digit.
    0 when there is none yet."""
    i = text.find("\n", max(start - 1, 1))
    while 0 < i < len(text) - 1:
        if not text[i - 1].isspace() and text[i + 1].isalnum():
            return i + 1
        i = text.find("\n", i + 1)
    return 0


def iter_pieces(blocks: Iterable[str], piece_chars: int | None = None, max_chars: int | None = None) -> Iterator[str]:
    """Regroup text blocks (of any size) into pieces of at least `piece_chars` characters (PIECE_CHARS
    by default; the last piece may be shorter), each ending at a clean cut."""
    piece_chars, max_chars = piece_chars or PIECE_CHARS, max_chars or MAX_PIECE_CHARS
    buffer = ""
    for block in blocks:
        buffer += block
        start = 0
        while len(buffer) - start >= piece_chars:
            cut = next_clean_cut(buffer, start + piece_chars)
            if cut == 0:
                if len(buffer) - start < max_chars:
                    break  # wait for more text
                cut = start + max_chars  # a gigantic line: cut it anyway, memory matters more
            yield buffer[start:cut]
            start = cut
        buffer = buffer[start:]
    if buffer:
        yield buffer


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """fn(item) for each item, computed on `workers` threads, yielded in the items' order. At most
    2 x workers items are in flight, so memory stays flat however many items there are."""
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
