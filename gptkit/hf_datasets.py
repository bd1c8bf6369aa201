"""`gptkit prepare hf DATASET`: stream a Hugging Face dataset into token shards, with flat memory.

    prepare_hf("HuggingFaceFW/fineweb-edu", "data/fineweb", "gpt2", name="sample-10BT", max_documents=100_000)
    prepare_hf("Skylion007/openwebtext", "data/owt", "gpt2")

The dataset is opened with `datasets.load_dataset(..., streaming=True)` (the optional extra
`datasets`): rows arrive one at a time over the network (or from the local cache), each row's text
field is one document, and its tokens go straight into the shards, <|endoftext|> between documents.
Nothing holds the corpus in memory, which is where nanoGPT's OpenWebText prepare runs out of it.

The length of a stream is not known in advance, so the train/val cut cannot be "the last 10%" as in
`prepare text`: instead one document in every round(1 / val_fraction) goes to validation (documents
number k-1, 2k-1, ...), which spreads validation over the whole corpus. A tokenizer that learns its
vocabulary (char, bpe:N, sp-*) reads the stream an extra time first; a pretrained or saved one
(gpt2, a checkpoint, a HF GPT-2 folder) does not.

`documents` replaces the dataset with any iterable of rows (dicts): the tests feed small local data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

from gptkit.errors import GptkitError, UsageError
from gptkit.records import DEFAULT_TEXT_FIELD


def stream_dataset(dataset: str, name: str | None = None, split: str = "train", data_files: list[str] | None = None) -> Iterable[dict]:
    """The rows of a Hugging Face dataset, streamed (datasets.load_dataset with streaming=True)."""
    try:
        import datasets
    except ImportError:
        raise GptkitError("`prepare hf` streams datasets through the `datasets` library", hint="pip install 'gptkit[datasets]'") from None
    try:
        return datasets.load_dataset(dataset, name, split=split, streaming=True, data_files=data_files or None)
    except Exception as e:  # hub, network and configuration errors: their types vary by version
        raise GptkitError(
            f"could not open the dataset {dataset!r}{f' ({name})' if name else ''}, split {split!r} ({type(e).__name__}: {str(e)[:160]})",
            hint="check the name, --name CONFIG and --split on the dataset's hub page; offline, only cached datasets open",
        ) from None


def _texts(rows: Iterable[dict], text_field: str, limit: int | None) -> Iterator[str]:
    for number, row in enumerate(islice(rows, limit)):
        text = row.get(text_field) if isinstance(row, dict) else None
        if not isinstance(text, str):
            found = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
            raise GptkitError(f"row {number} of the dataset has no string field {text_field!r} (found: {found})", hint="pass --text-field")
        yield text


def prepare_hf(
    dataset: str,
    out: str | Path,
    tokenizer: str = "gpt2",
    *,
    name: str | None = None,
    split: str = "train",
    text_field: str = DEFAULT_TEXT_FIELD,
    val_fraction: float = 0.005,
    max_documents: int | None = None,
    data_files: list[str] | None = None,
    documents: Iterable[dict] | Callable[[], Iterable[dict]] | None = None,
    workers: int | None = None,
    shard_tokens: int | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Stream `dataset` (or the rows `documents` gives) into a data folder; returns its meta.json."""
    from gptkit.prepare import (
        DEFAULT_SHARD_TOKENS, _check_out, _encode_task, _finish, _set_worker_tokenizer, _split_info, _staging,
        check_val_fraction, get_tokenizer,
    )
    from gptkit.shards import SPLITS, ShardWriter, token_dtype_for
    from gptkit.tokenizers.streaming import iter_pieces, map_in_processes

    check_val_fraction(val_fraction)
    if max_documents is not None and max_documents < 1:
        raise UsageError(f"--max-documents must be at least 1 (got {max_documents})")
    out = _check_out(out)
    every = round(1 / val_fraction) if val_fraction > 0 else 0  # document k-1 of every k validates

    def rows() -> Iterable[dict]:
        if documents is None:
            return stream_dataset(dataset, name, split, data_files)
        return documents() if callable(documents) else documents

    def split_of(number: int) -> str:
        return "val" if every and number % every == every - 1 else "train"

    def train_texts() -> Iterator[str]:
        return (t for i, t in enumerate(_texts(rows(), text_field, max_documents)) if split_of(i) == "train")

    tok = get_tokenizer(tokenizer, lambda: _texts(rows(), text_field, max_documents), train_texts, log)
    eot = tok.eot_id

    def tasks() -> Iterator[tuple[str, str | None]]:
        started = set()
        for number, text in enumerate(_texts(rows(), text_field, max_documents)):
            where = split_of(number)
            if where in started and eot is not None:
                yield where, None  # <|endoftext|> between two documents of the split
            started.add(where)
            for piece in iter_pieces([text]):
                yield where, piece

    with _staging(out) as staging:
        dtype = token_dtype_for(tok.vocab_size)
        writers = {s: ShardWriter(staging, s, dtype, shard_tokens or DEFAULT_SHARD_TOKENS) for s in SPLITS}
        num_bytes = dict.fromkeys(SPLITS, 0)
        started, next_report = time.perf_counter(), 100_000_000
        for where, ids, piece_bytes in map_in_processes(_encode_task, tasks(), workers, _set_worker_tokenizer, (tok.spec(),)):
            writers[where].write([eot] if ids is None else ids)
            num_bytes[where] += piece_bytes
            done = sum(num_bytes.values())
            if done >= next_report:
                log(f"encoded {done / 1e6:,.0f} MB, {done / 1e6 / max(time.perf_counter() - started, 1e-9):.1f} MB/s")
                next_report = done + 100_000_000
        if writers["train"].total == 0:
            raise GptkitError(f"the dataset {dataset!r} gave no text", hint="check --split and --text-field")
        splits = {s: _split_info(writers[s], num_bytes[s], log) for s in SPLITS}
        source = {"name": "hf", "dataset": dataset, "config": name, "split": split, "text_field": text_field,
                  "max_documents": max_documents, "val_every": every, "data_files": data_files}
        return _finish(staging, out, tok, splits, source)
