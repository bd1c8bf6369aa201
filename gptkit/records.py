"""Corpora stored as records: JSONL and Parquet files whose every row is one document.

    iter_record_texts("fineweb/000_00000.parquet", "text")   # one string per row, streamed
    scan_record_file(path, "text")                            # (bytes, sha256, characters): prepare's first pass

Web corpora ship this way (FineWeb-edu as Parquet shards, many others as JSONL): a text field per
row, plus metadata gptkit ignores. Rows are read one at a time (JSONL) or in record batches of
BATCH_ROWS (Parquet, through pyarrow: the optional extra `parquet`), so memory stays flat however
big the file; `prepare text` puts an <|endoftext|> between rows as it does between text files.

A JSONL line that is not JSON, not an object, or lacks the text field (or holds a non-string there)
is one GptkitError naming the file and the line; blank lines are skipped. A Parquet file without the
column is refused with the columns it has.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from gptkit.errors import GptkitError

RECORD_SUFFIXES = (".jsonl", ".parquet")
DEFAULT_TEXT_FIELD = "text"
BATCH_ROWS = 1024


def is_record_file(path: Path) -> bool:
    return path.suffix.lower() in RECORD_SUFFIXES


def _jsonl_texts(path: Path, field: str, on_line=None) -> Iterator[str]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if on_line is not None:
                on_line(raw)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise GptkitError(f"{path}, line {number}: not valid JSON ({e})", hint="one JSON object per line") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                found = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
                raise GptkitError(
                    f"{path}, line {number}: no string field {field!r} (found: {found})",
                    hint="name the text field with --text-field",
                )
            yield record[field]


def _parquet_file(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise GptkitError(f"reading {path} needs pyarrow", hint="pip install 'gptkit[parquet]'") from None
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow's ArrowInvalid and friends
        raise GptkitError(f"{path} is not a readable Parquet file ({type(e).__name__}: {str(e)[:100]})") from None


def _parquet_texts(path: Path, field: str) -> Iterator[str]:
    parquet = _parquet_file(path)
    columns = parquet.schema_arrow.names
    if field not in columns:
        raise GptkitError(f"{path} has no column {field!r} (it has: {', '.join(columns)})", hint="name the text column with --text-field")
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[field]):
        for text in batch.column(0).to_pylist():
            if text is not None:  # a null row holds no document
                yield text


def iter_record_texts(path: str | Path, field: str = DEFAULT_TEXT_FIELD) -> Iterator[str]:
    """The text of each row of a JSONL or Parquet file, in order, one at a time."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return _parquet_texts(path, field)
    return _jsonl_texts(path, field)


def scan_record_file(path: str | Path, field: str = DEFAULT_TEXT_FIELD) -> tuple[int, str, int]:
    """One pass over a record file: its size in bytes, its sha256 and the characters of its texts
    (every row is checked on the way, so a bad line is reported before any tokenizing)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.suffix.lower() == ".parquet":
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        chars = sum(len(t) for t in _parquet_texts(path, field))
    else:
        chars = sum(len(t) for t in _jsonl_texts(path, field, on_line=digest.update))
    return path.stat().st_size, digest.hexdigest(), chars
