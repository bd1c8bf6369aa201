"""The functions behind `gptkit tokenize`: train a tokenizer, encode and decode streams, inspect one.

    tok = train_from_files("bpe", ["book.txt"], "tok/", vocab_size=4096)
    encode_stream("tok/", open("a.txt", "rb"), sys.stdout.buffer)          # ids, one line per line
    decode_stream("tok/", sys.stdin.buffer, sys.stdout.buffer)             # and back, byte for byte
    report = inspect_tokenizer("tok/", "Some text")                         # a dict, printed by the CLI

Wherever a tokenizer is expected, a Tokenizer or a reference (`gpt2`, `tok/`, a data folder, a
checkpoint; see tokenizers/loading.py) will do.

Id formats (`--format`):

    lines   one line of space-separated ids per input line. Each line's ids include its newline,
            so decoding is plain concatenation: blank lines, \\r\\n and a missing final newline survive.
    jsonl   the same, one JSON array per line.
    bin     the ids of the whole text as raw little-endian uint16 (vocabularies up to 65,536) or
            uint32: a shard's body. Streams both ways.
    npy     the ids of the whole text as one NumPy array (built in memory before it is written).

Byte-level tokenizers (bpe, tiktoken) reproduce any UTF-8 input byte for byte; see each tokenizer
for its exceptions (char: characters outside its vocabulary; SentencePiece: a literal "▁").
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from gptkit.errors import GptkitError, UsageError
from gptkit.shards import token_dtype_for
from gptkit.sources import collect_text_files, read_text_blocks
from gptkit.tokenizers import (
    DEFAULT_VOCAB_SIZE,
    ENDOFTEXT,
    BPETokenizer,
    SentencePieceTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    load_tokenizer,
    train_tokenizer,
)
from gptkit.tokenizers.bpe import DEFAULT_PATTERN
from gptkit.tokenizers.streaming import iter_pieces, map_in_order

FORMATS = ("lines", "jsonl", "bin", "npy")
LINE_BATCH_BYTES = 1 << 18  # lines are encoded in batches of about 256 kB, one batch per thread task


def _tokenizer(tokenizer: str | Path | Tokenizer) -> Tokenizer:
    return tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint=f"choose one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------------
# train


def train_from_files(
    kind: str,
    files: Sequence[str | Path],
    out: str | Path,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    pattern: str = DEFAULT_PATTERN,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    unk: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> Tokenizer:
    """Train a tokenizer of `kind` on UTF-8 files (read in pieces, never whole) and save it in `out`."""
    paths = collect_text_files(files)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GptkitError(f"--out {out} exists and is not a folder")

    def corpus() -> Iterator[str]:
        for path in paths:
            yield from iter_pieces(read_text_blocks(path))

    tokenizer = train_tokenizer(kind, corpus(), vocab_size, pattern=pattern, special_tokens=special_tokens, unk=unk)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out)
    log(f"trained {tokenizer.name} on {len(paths)} file(s): {tokenizer.vocab_size:,} ids -> {out / 'tokenizer.json'}")
    if kind != "char" and tokenizer.vocab_size < vocab_size:
        log(f"warning: asked for {vocab_size:,} ids, got {tokenizer.vocab_size:,}: {FEWER_IDS.get(kind, FEWER_IDS['bpe'])}")
    return tokenizer


# Why a small text gives fewer ids than --vocab-size asks for.
FEWER_IDS = {
    "bpe": "the text ran out of pairs to merge (a pair must occur at least twice); more text gives more ids",
    "sp-bpe": "SentencePiece found no more pieces worth adding in this text; more text gives more ids",
    "sp-unigram": "SentencePiece found no more pieces worth keeping in this text; more text gives more ids",
}


# ---------------------------------------------------------------------------------------------------
# encode


def _line_batches(source: BinaryIO) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines) in batches; each line keeps its b"\\n"."""
    batch: list[bytes] = []
    size, first = 0, 1
    for number, line in enumerate(source, start=1):
        batch.append(line)
        size += len(line)
        if size >= LINE_BATCH_BYTES:
            yield first, batch
            batch, size, first = [], 0, number + 1
    if batch:
        yield first, batch


def encode_stream(
    tokenizer: str | Path | Tokenizer,
    source: BinaryIO,
    sink: BinaryIO,
    fmt: str = "lines",
    allowed_special: Sequence[str] | str = (),
    workers: int | None = None,
) -> dict:
    """Encode UTF-8 text from `source` into ids written to `sink` in format `fmt` (see the module
    docstring). `allowed_special` ("all" or names) turns those special-token strings in the text into
    their ids; otherwise they are plain text. Returns {"bytes": ..., "tokens": ...}."""
    _check_format(fmt)
    tok = _tokenizer(tokenizer)
    tok.encode("", allowed_special)  # reject unknown special-token names before reading anything
    stats = {"bytes": 0, "tokens": 0}

    if fmt in ("lines", "jsonl"):
        def encode_batch(item: tuple[int, list[bytes]]) -> tuple[bytes, int, int]:
            first, lines = item
            out, num_tokens = [], 0
            for number, line in enumerate(lines, start=first):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    raise GptkitError(f"line {number} of the input is not valid UTF-8") from None
                ids = tok.encode(text, allowed_special)
                num_tokens += len(ids)
                out.append(json.dumps(ids, separators=(",", ":")) if fmt == "jsonl" else " ".join(map(str, ids)))
            return ("\n".join(out) + "\n").encode("ascii"), sum(map(len, lines)), num_tokens

        for data, num_bytes, num_tokens in map_in_order(encode_batch, _line_batches(source), workers):
            sink.write(data)
            stats["bytes"] += num_bytes
            stats["tokens"] += num_tokens
        return stats

    # bin / npy: the ids of the whole text, encoded in cleanly cut pieces (same ids as all at once)
    dtype = token_dtype_for(tok.vocab_size).newbyteorder("<")

    def encode_piece(piece: str) -> tuple[np.ndarray, int]:
        return np.asarray(tok.encode(piece, allowed_special), dtype=dtype), len(piece.encode("utf-8"))

    arrays = []
    for ids, num_bytes in map_in_order(encode_piece, iter_pieces(read_text_blocks(source)), workers):
        stats["bytes"] += num_bytes
        stats["tokens"] += len(ids)
        if fmt == "bin":
            sink.write(ids.tobytes())
        else:
            arrays.append(ids)
    if fmt == "npy":
        buffer = io.BytesIO()  # np.save needs a seekable file; stdout may be a pipe
        np.save(buffer, np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype), allow_pickle=False)
        sink.write(buffer.getvalue())
    return stats


# ---------------------------------------------------------------------------------------------------
# decode


def _parse_line(line: bytes, number: int, fmt: str) -> list[int]:
    try:
        if fmt == "jsonl":
            ids = json.loads(line) if line.strip() else []
            if not isinstance(ids, list) or not all(type(i) is int for i in ids):
                raise ValueError
            return ids
        return [int(word) for word in line.split()]
    except ValueError:
        expected = "a JSON array of ids" if fmt == "jsonl" else "space-separated ids"
        shown = line.decode("utf-8", errors="replace").rstrip("\r\n")
        raise GptkitError(
            f"line {number} of the input is not {expected}: “{shown[:60]}”" + ("..." if len(shown) > 60 else ""),
            hint="decode reads what `gptkit tokenize encode` writes; pass the same --format",
        ) from None


def decode_stream(tokenizer: str | Path | Tokenizer, source: BinaryIO, sink: BinaryIO, fmt: str = "lines") -> dict:
    """Decode ids read from `source` (in format `fmt`) and write the text's bytes to `sink`.
    Ids are decoded to bytes and concatenated, so a character split across tokens, lines or read
    blocks comes out whole. Returns {"tokens": ..., "bytes": ...}."""
    _check_format(fmt)
    tok = _tokenizer(tokenizer)
    stats = {"tokens": 0, "bytes": 0}

    def emit(ids: list[int]) -> None:
        data = tok.decode_bytes(ids)
        sink.write(data)
        stats["tokens"] += len(ids)
        stats["bytes"] += len(data)

    if fmt in ("lines", "jsonl"):
        for number, line in enumerate(source, start=1):
            emit(_parse_line(line, number, fmt))
    elif fmt == "bin":
        dtype = token_dtype_for(tok.vocab_size).newbyteorder("<")
        while block := source.read(dtype.itemsize << 20):
            if len(block) % dtype.itemsize:
                raise GptkitError(
                    f"the input ends in the middle of a token id (its length is not a multiple of {dtype.itemsize} bytes)",
                    hint=f"--format bin holds {dtype.name} ids for this tokenizer's vocabulary of {tok.vocab_size:,}",
                )
            emit(np.frombuffer(block, dtype=dtype).tolist())
    else:
        try:
            ids = np.load(io.BytesIO(source.read()), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise GptkitError(f"the input is not a .npy array ({e})") from None
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise GptkitError(f"expected a 1-D array of integer ids, got shape {ids.shape} of {ids.dtype}")
        emit(ids.tolist())
    return stats


# ---------------------------------------------------------------------------------------------------
# inspect


def show_bytes(data: bytes) -> str:
    """A token's bytes as readable text: UTF-8 where possible, \\xNN for bytes of an unfinished
    character, and \\n \\t \\r spelled out."""
    text = data.decode("utf-8", errors="backslashreplace")
    return text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _learned_order(tok: Tokenizer) -> str | None:
    """How `_learned_tokens` orders a tokenizer's tokens."""
    if isinstance(tok, BPETokenizer):
        return "merges, in the order learned"
    if isinstance(tok, TiktokenTokenizer):
        return "merged tokens, by rank"
    if isinstance(tok, SentencePieceTokenizer):
        return "pieces by id: " + ("merge order" if tok.model_type == "bpe" else "most probable first")
    return None


def _learned_tokens(tok: Tokenizer, count: int) -> list[dict]:
    """The first tokens the tokenizer learned, in order (the first merges, for BPE)."""
    if isinstance(tok, BPETokenizer):
        return [
            {"id": 256 + i, "token": show_bytes(tok.token_bytes[256 + i]),
             "merge": [show_bytes(tok.token_bytes[a]), show_bytes(tok.token_bytes[b])]}
            for i, (a, b) in enumerate(tok.merges[:count])
        ]
    if isinstance(tok, TiktokenTokenizer):  # ranks 0..255 are the bytes; merges follow in rank order
        ids = range(256, min(256 + count, tok.vocab_size))
    elif isinstance(tok, SentencePieceTokenizer):  # pieces after <unk>, the specials and the 256 bytes
        sp = tok.sp
        learned = (i for i in range(tok.vocab_size) if not (sp.is_control(i) or sp.is_byte(i) or sp.is_unknown(i)))
        ids = list(islice(learned, count))
    else:
        return []
    return [{"id": i, "token": show_bytes(tok.decode_bytes([i]))} for i in ids]


def _longest_tokens(tok: Tokenizer, count: int) -> list[dict]:
    specials = set(tok.special_tokens.values())
    tokens = []
    for i in range(tok.vocab_size):
        if i not in specials:
            try:
                tokens.append((tok.decode_bytes([i]), i))
            except GptkitError:  # a gap in the ids (cl100k_base has a few before its specials)
                pass
    longest = sorted(tokens, key=lambda t: (-len(t[0]), t[1]))[:count]
    return [{"id": i, "bytes": len(data), "token": show_bytes(data)} for data, i in longest]


def inspect_tokenizer(
    tokenizer: str | Path | Tokenizer,
    text: str | None = None,
    max_tokens: int = 200,
    top: int = 10,
) -> dict:
    """What a tokenizer is and what it does to `text`: vocabulary, special tokens, its first learned
    tokens and longest tokens, and on the text: compression and the first `max_tokens` tokens."""
    tok = _tokenizer(tokenizer)
    report = {
        "name": tok.name,
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "byte_level": tok.byte_level,
        "special_tokens": tok.special_tokens,
        "learned_order": _learned_order(tok),
        "learned": _learned_tokens(tok, top),
        "longest": _longest_tokens(tok, top),
    }
    if isinstance(tok, BPETokenizer):
        report["pattern"] = tok.pattern_name
    if text is not None:
        ids = tok.encode_ordinary(text)
        num_bytes = len(text.encode("utf-8"))
        report["text"] = {
            "chars": len(text),
            "bytes": num_bytes,
            "tokens": len(ids),
            "bytes_per_token": num_bytes / max(len(ids), 1),
            "chars_per_token": len(text) / max(len(ids), 1),
            "round_trip": tok.decode(ids) == text,
            "shown": [{"id": i, "token": tok.decode_bytes([i]).decode("utf-8", errors="backslashreplace")} for i in ids[:max_tokens]],
        }
    return report
