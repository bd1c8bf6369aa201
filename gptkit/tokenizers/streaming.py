"""Tokenizing text too large for memory: cut it into pieces, encode them on all cores.

The cut is the delicate part. Tokenizers first split text into chunks (BPE's regex; SentencePiece's
lines) and never merge across chunks, so cutting the text *between* two chunks changes nothing: the
pieces' ids, concatenated, are exactly the ids of the whole text. We cut only after a newline that
has a non-space character on its left and a letter or digit on its right ("...end.\nNext..."):
no pattern of gpt2, cl100k_base, o200k_base, gptkit's BPE or SentencePiece puts such a newline in
the same chunk as the letter after it, and the chunk that ends with it ends there whatever follows.
(A line longer than MAX_PIECE_CHARS is cut where it is: the only place ids may differ from encoding
the whole text at once.)

Text comes in as blocks from sources.read_text_blocks. `prepare` encodes the pieces on a pool of
processes (map_in_processes), one tokenizer per process; results come back in order. Threads would
share one tokenizer, and although tiktoken's Rust core releases Python's GIL while it encodes, two
threads of a fresh process were measured to slow each other down (docs/tokenization.md), while two
processes encode twice as fast as one. The `tokenize` commands, which stream stdin, use threads.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

PIECE_CHARS = 1 << 20  # encode about 1M characters per task
MAX_PIECE_CHARS = 16 << 20  # give up looking for a clean cut past this

T = TypeVar("T")
R = TypeVar("R")


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
        yield from _bounded_map(pool, fn, items, workers)


def map_in_processes(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[R]:
    """map_in_order on `workers` processes, each set up once by initializer(*initargs). `fn` and
    `initializer` must be module-level functions (they are sent to the processes by name). With one
    worker everything runs here, in this process."""
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(workers, initializer=initializer, initargs=initargs) as pool:
        yield from _bounded_map(pool, fn, items, workers)


def _bounded_map(pool: Executor, fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= 2 * workers:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
