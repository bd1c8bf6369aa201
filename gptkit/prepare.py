"""Stage 1, `gptkit prepare`: raw text -> token shards + meta.json + tokenizer.json.

    prepare_shakespeare("data/shakespeare")                       # download (or --source) and tokenize
    prepare_text(["notes/", "book.txt"], "data/mine", "bpe:4096") # your own files

The text is split before tokenizing: the first (1 - val_fraction) of the characters are the training
split, the rest validation, exactly as nanoGPT splits tiny Shakespeare. Several documents (files) are
joined with the tokenizer's <|endoftext|> id so the model learns where one ends and the next begins.

The tokenizer is a name or a path (see gptkit.tokenizers.build_tokenizer). Those that learn a
vocabulary are trained here: char on all the text (every character needs an id), bpe and sp-* on
the training split only (its first TOKENIZER_TRAIN_CHARS characters), so validation text stays unseen.

prepare_text streams: files are read in blocks, cut into pieces that tokenize exactly like the whole
(see tokenizers/streaming.py), encoded on every core and written to the shards as they come, so
memory stays flat whatever the corpus size. A first pass over the files checks that they are UTF-8,
counts their characters (to place the train/val cut) and hashes them for meta.json.

JSONL and Parquet files (records.py) are read the same way, one row at a time: each row's text field
is a document, so rows are joined with <|endoftext|> as files are.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Callable

import numpy as np

from gptkit.errors import GptkitError, Problems, UsageError
from gptkit.folder_lock import FolderLock, sibling_lock_path
from gptkit.shards import SPLITS, ShardWriter, token_dtype_for, write_meta
from gptkit.records import DEFAULT_TEXT_FIELD, is_record_file, iter_record_texts, scan_record_file
from gptkit.sources import DATASETS, collect_text_files, fetch_dataset, read_text_blocks, read_text_file
from gptkit.tokenizers import Tokenizer, build_tokenizer, needs_corpus, tokenizer_from_spec
from gptkit.tokenizers.streaming import iter_pieces, map_in_processes

DEFAULT_SHARD_TOKENS = 100_000_000  # like llm.c: 100M tokens (200 MB of uint16) per shard
EMPTY_HINT = "the input holds no characters: give a file (or a folder of files) with some text in it"
TOKENIZER_TRAIN_CHARS = 50_000_000  # bpe/sp-* learn from at most this much text (time, not memory)


@dataclass
class Document:
    name: str
    text: str


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")


def train_val_cut(total_chars: int, val_fraction: float) -> int:
    """Where the corpus splits: its first `cut` characters train, the rest validate. The one place both
    paths (prepare_documents in memory, prepare_text streaming) place the cut."""
    check_val_fraction(val_fraction)
    return int(total_chars * (1.0 - val_fraction))


def cut_at(text: str, start: int, cut: int) -> Iterator[tuple[str, str]]:
    """(split, text) for a text that begins at character `start` of the corpus: all of it in "train",
    all in "val", or the two halves when it straddles the cut."""
    if start + len(text) <= cut:
        yield "train", text
    elif start >= cut:
        yield "val", text
    else:
        yield "train", text[: cut - start]
        yield "val", text[cut - start :]


def split_documents(docs: list[Document], val_fraction: float) -> dict[str, list[str]]:
    """Cut the documents' text at (1 - val_fraction) of all characters; the document that straddles the
    cut is split in two. Returns split name -> list of texts."""
    cut = train_val_cut(sum(len(d.text) for d in docs), val_fraction)
    texts, seen = {split: [] for split in SPLITS}, 0
    for doc in docs:
        for split, part in cut_at(doc.text, seen, cut):
            texts[split].append(part)
        seen += len(doc.text)
    return {split: [t for t in parts if t] for split, parts in texts.items()}


def encode_documents(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """Encode each text and join them with <|endoftext|> (when the tokenizer has one)."""
    dtype = token_dtype_for(tokenizer.vocab_size)
    pieces = []
    for i, text in enumerate(texts):
        if i > 0 and tokenizer.eot_id is not None:
            pieces.append(np.array([tokenizer.eot_id], dtype=dtype))
        pieces.append(np.asarray(tokenizer.encode(text), dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def prepare_documents(
    docs: list[Document],
    out: str | Path,
    tokenizer_name: str | Tokenizer,
    val_fraction: float = 0.1,
    source: dict | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Tokenize documents held in memory into a data folder. Returns the meta.json dict."""
    out = _check_out(out)
    if not any(d.text for d in docs):
        raise GptkitError("the input text is empty", hint=EMPTY_HINT)
    splits_text = split_documents(docs, val_fraction)
    tokenizer = get_tokenizer(tokenizer_name, lambda: [d.text for d in docs], lambda: splits_text["train"], log)

    with _staging(out) as staging:
        splits = {}
        for split in SPLITS:
            writer = ShardWriter(staging, split, token_dtype_for(tokenizer.vocab_size), shard_tokens)
            writer.write(encode_documents(tokenizer, splits_text[split]))
            num_bytes = sum(len(t.encode("utf-8")) for t in splits_text[split])
            splits[split] = _split_info(writer, num_bytes, log)
        return _finish(staging, out, tokenizer, splits, source or {})


def get_tokenizer(
    choice: str | Tokenizer,
    all_text: Callable[[], Iterable[str]],
    train_text: Callable[[], Iterable[str]],
    log: Callable[[str], None] = lambda msg: None,
) -> Tokenizer:
    """The tokenizer `choice` names, trained if it learns a vocabulary (char on all the text, the
    others on the training split, capped at TOKENIZER_TRAIN_CHARS)."""
    if isinstance(choice, Tokenizer):
        tokenizer = choice
    elif not needs_corpus(choice):
        tokenizer = build_tokenizer(choice)
    elif choice.startswith("char"):
        tokenizer = build_tokenizer(choice, all_text())
    else:
        started = time.perf_counter()
        tokenizer = build_tokenizer(choice, _first_chars(train_text(), TOKENIZER_TRAIN_CHARS))
        log(f"trained {tokenizer.name} on the training split in {time.perf_counter() - started:.1f} s")
    log(f"tokenizer: {tokenizer.name}, vocabulary of {tokenizer.vocab_size:,}")
    return tokenizer


def _first_chars(texts: Iterable[str], limit: int) -> Iterator[str]:
    for text in texts:
        yield text[:limit]
        limit -= len(text)
        if limit <= 0:
            return


def _check_out(out: str | Path) -> Path:
    """Refuse an --out that cannot become a data folder before any work is done, not after."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GptkitError(f"--out {out} exists and is not a folder")
    if out.is_dir():
        _refuse_foreign_files(out)
    return out


def _refuse_foreign_files(out: Path) -> None:
    """An existing data folder is replaced; a folder holding anything else (the user's text, say) is not ours."""
    existing = [p.name for p in out.iterdir()]
    # (.npy: instruction data's example index and loss mask, see instructions.py)
    if not all(n == "meta.json" or n == "tokenizer.json" or n.endswith((".bin", ".npy")) for n in existing):
        raise GptkitError(
            f"--out {out} already holds files that are not gptkit data ({', '.join(sorted(existing)[:3])} ...)",
            hint="choose an empty or new folder",
        )


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh temporary folder beside `out`, swapped in by _finish: a half-prepared folder never
    looks complete, and a failure leaves the old one untouched. One prepare at a time per folder: the
    lock beside it (folder_lock.py) refuses a second one before it touches the first one's staging."""
    staging = out.with_name(f".{out.name}.preparing")
    out.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(sibling_lock_path(out), out, "data folder"):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _split_info(writer: ShardWriter, num_bytes: int, log: Callable[[str], None]) -> dict:
    names = writer.close()
    log(f"{writer.split}: {writer.total:,} tokens from {num_bytes:,} bytes in {len(names)} shard(s)")
    return {"tokens": writer.total, "bytes": num_bytes, "shards": names, "checksums": writer.checksums}


def _finish(staging: Path, out: Path, tokenizer: Tokenizer, splits: dict, source: dict, extra: dict | None = None) -> dict:
    tokenizer.save(staging)
    meta = write_meta(staging, tokenizer.spec(), tokenizer.vocab_size, tokenizer.eot_id, splits, source, extra)
    if out.exists():
        _replace_data_folder(out, staging)
    else:
        os.replace(staging, out)
    return meta


def _replace_data_folder(out: Path, staging: Path) -> None:
    """Swap a newly prepared folder in for an old one, refusing to clobber a folder that isn't ours."""
    _refuse_foreign_files(out)  # again: the folder may have changed while the text was tokenized
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class TextFile:
    """A text file seen by the first pass: its size, hash and length in characters."""

    path: Path
    bytes: int
    sha256: str
    chars: int


class _HashingReader:
    """A binary file that hashes what is read from it, so checking and hashing take one pass."""

    def __init__(self, f):
        self.f, self.sha256, self.name = f, hashlib.sha256(), str(f.name)

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.sha256.update(data)
        return data


def scan_text_file(path: Path, text_field: str = DEFAULT_TEXT_FIELD) -> TextFile:
    """Check that a file is UTF-8 text, count its characters and hash it, reading it in blocks
    (a JSONL or Parquet file: the texts of its rows' `text_field`)."""
    if path.is_dir():
        raise GptkitError(f"{path} is a folder, not a text file")
    if is_record_file(path):
        return TextFile(path, *scan_record_file(path, text_field))
    with open(path, "rb") as f:
        reader = _HashingReader(f)
        chars = sum(len(block) for block in read_text_blocks(reader))
    return TextFile(path, path.stat().st_size, reader.sha256.hexdigest(), chars)


def _file_source(name: str, files: list[TextFile]) -> dict:
    entries = [{"path": str(f.path), "bytes": f.bytes, "sha256": f.sha256} for f in files]
    combined = hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest()
    return {"name": name, "sha256": entries[0]["sha256"] if len(entries) == 1 else combined, "files": entries}


def prepare_shakespeare(
    out: str | Path = "data/shakespeare",
    tokenizer: str | Tokenizer = "char",
    source: str | Path | None = None,
    val_fraction: float = 0.1,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Prepare tiny Shakespeare. Without `source` (or GPTKIT_SHAKESPEARE) it is downloaded once and cached."""
    dataset = DATASETS["shakespeare"]
    from_env = not source and os.environ.get("GPTKIT_SHAKESPEARE")
    source = source or os.environ.get("GPTKIT_SHAKESPEARE") or None
    if from_env and not Path(source).is_file():
        raise GptkitError(
            f"GPTKIT_SHAKESPEARE={source}: no such file",
            hint="point GPTKIT_SHAKESPEARE at a local copy of tinyshakespeare.txt, or unset it to download the corpus",
        )
    path = Path(source) if source else fetch_dataset(dataset)
    text = read_text_file(path)
    info = _file_source("shakespeare", [scan_text_file(path)])
    if info["sha256"] != dataset.sha256:
        log(f"warning: {path} differs from the standard tiny Shakespeare (sha256 {info['sha256'][:12]}...); using it anyway")
    log(f"source: {path} ({len(text):,} characters)")
    return prepare_documents([Document("shakespeare", text)], out, tokenizer, val_fraction, info, log=log)


def prepare_text(
    paths: list[str | Path],
    out: str | Path,
    tokenizer: str | Tokenizer = "char",
    val_fraction: float = 0.1,
    log: Callable[[str], None] = lambda msg: None,
    *,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    workers: int | None = None,
    text_field: str = DEFAULT_TEXT_FIELD,
) -> dict:
    """Prepare the user's own UTF-8 text files (folders are searched recursively); one document per
    file, or per row of a .jsonl / .parquet file (its `text_field`). Streams: memory does not grow
    with the size of the corpus.

    Encoding runs on `workers` processes (default: one per core; 1 keeps it in this process). Where
    Python starts processes by re-importing the caller (macOS, Windows), call this from a script under
    `if __name__ == "__main__":`, as with any multiprocessing code."""
    check_val_fraction(val_fraction)  # before the (slow) scan of the files
    out = _check_out(out)
    out_dir = Path(out).resolve()
    # A data folder inside an input folder (`prepare text notes/ --out notes/data`) is output, not input.
    inputs = [f for f in collect_text_files(paths) if out_dir not in f.resolve().parents]
    if not inputs:
        raise GptkitError("no input files left once the output folder is set aside")
    problems, files = Problems(), []
    for path in inputs:  # one error names every file that cannot be read
        with problems.check():
            files.append(scan_text_file(path, text_field))
    problems.raise_if_any()
    total = sum(f.chars for f in files)
    if total == 0:
        raise GptkitError("the input text is empty", hint=EMPTY_HINT)
    log(f"source: {len(files)} file(s), {total:,} characters")
    cut = train_val_cut(total, val_fraction)

    def train_text() -> Iterator[str]:
        return (piece for split, pieces in _document_parts(files, cut, text_field) if split == "train" for piece in pieces)

    tokenizer = get_tokenizer(tokenizer, lambda: _all_text(files, text_field), train_text, log)
    eot = tokenizer.eot_id

    def tasks() -> Iterator[tuple[str, str | None]]:
        """(split, piece of text to encode), with (split, None) for an <|endoftext|> between documents."""
        started = set()
        for split, pieces in _document_parts(files, cut, text_field):
            if split in started and eot is not None:
                yield split, None
            started.add(split)
            for piece in pieces:
                yield split, piece

    dtype = token_dtype_for(tokenizer.vocab_size)
    with _staging(out) as staging:
        writers = {split: ShardWriter(staging, split, dtype, shard_tokens) for split in SPLITS}
        num_bytes = dict.fromkeys(SPLITS, 0)
        started, next_report = time.perf_counter(), 100_000_000
        encoded = map_in_processes(_encode_task, tasks(), workers, _set_worker_tokenizer, (tokenizer.spec(),))
        for split, ids, piece_bytes in encoded:
            writers[split].write([eot] if ids is None else ids)
            num_bytes[split] += piece_bytes
            done = sum(num_bytes.values())
            if done >= next_report:
                seconds = time.perf_counter() - started
                log(f"encoded {done / 1e6:,.0f} MB, {done / 1e6 / max(seconds, 1e-9):.1f} MB/s")
                next_report = done + 100_000_000
        splits = {split: _split_info(writers[split], num_bytes[split], log) for split in SPLITS}
        return _finish(staging, out, tokenizer, splits, _file_source("text", files))


# Each encoding process holds its own copy of the tokenizer, rebuilt from its spec.
_worker_tokenizer: Tokenizer | None = None


def _set_worker_tokenizer(spec: dict) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer_from_spec(spec)


def _encode_task(task: tuple[str, str | None]):
    """(split, piece) -> (split, its ids, its UTF-8 bytes); a None piece stands for <|endoftext|>."""
    split, piece = task
    if piece is None:
        return split, None, 0
    return split, _worker_tokenizer.encode_to_array(piece), len(piece.encode("utf-8"))


def _document_blocks(path: Path, text_field: str) -> Iterator[tuple[int, str]]:
    """(document number in the file, block of its text): a text file is one document read in blocks,
    a JSONL or Parquet file one document per row."""
    if is_record_file(path):
        return enumerate(iter_record_texts(path, text_field))
    return ((0, block) for block in read_text_blocks(path))


def _all_text(files: list[TextFile], text_field: str = DEFAULT_TEXT_FIELD) -> Iterator[str]:
    for f in files:
        yield from (block for _, block in _document_blocks(f.path, text_field))


def _document_parts(files: list[TextFile], cut: int, text_field: str = DEFAULT_TEXT_FIELD) -> Iterator[tuple[str, Iterator[str]]]:
    """(split, its text in cleanly cut pieces) for each document's part in each split, in reading
    order. A document that straddles the train/val cut has a part in each."""
    for (split, _), blocks in groupby(_blocks_by_split(files, cut, text_field), key=lambda b: b[:2]):
        yield split, iter_pieces(block for _, _, block in blocks)


def _blocks_by_split(files: list[TextFile], cut: int, text_field: str = DEFAULT_TEXT_FIELD) -> Iterator[tuple[str, tuple, str]]:
    """(split, (file index, document number), block of text) in reading order: blocks before
    character `cut` are "train", the rest "val"; the block that straddles the cut is split in two."""
    seen = 0
    for index, f in enumerate(files):
        for document, block in _document_blocks(f.path, text_field):
            for split, part in cut_at(block, seen, cut):
                yield split, (index, document), part
            seen += len(block)
