"""Stage 1, `gptkit prepare`: raw text -> token shards + meta.json + tokenizer.json.

    prepare_shakespeare("data/shakespeare")                       # download (or --source) and tokenize
    prepare_text(["notes/", "book.txt"], "data/mine", "gpt2")     # your own files

The text is split before tokenizing: the first (1 - val_fraction) of the characters are the training
split, the rest validation, exactly as nanoGPT splits tiny Shakespeare. Several documents (files) are
joined with the tokenizer's <|endoftext|> id so the model learns where one ends and the next begins.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gptkit.errors import GptkitError, UsageError
from gptkit.shards import SPLITS, token_dtype_for, write_meta, write_shard
from gptkit.sources import DATASETS, collect_text_files, fetch_dataset, read_text_file, read_text_files
from gptkit.tokenizers import Tokenizer, build_tokenizer

DEFAULT_SHARD_TOKENS = 100_000_000  # like llm.c: 100M tokens (200 MB of uint16) per shard


@dataclass
class Document:
    name: str
    text: str


def split_documents(docs: list[Document], val_fraction: float) -> dict[str, list[str]]:
    """Cut the documents' text at (1 - val_fraction) of all characters; the document that straddles the
    cut is split in two. Returns split name -> list of texts."""
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    total = sum(len(d.text) for d in docs)
    cut = int(total * (1.0 - val_fraction))
    train, val, seen = [], [], 0
    for doc in docs:
        if seen + len(doc.text) <= cut:
            train.append(doc.text)
        elif seen >= cut:
            val.append(doc.text)
        else:
            train.append(doc.text[: cut - seen])
            val.append(doc.text[cut - seen :])
        seen += len(doc.text)
    return {"train": [t for t in train if t], "val": [t for t in val if t]}


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
    tokenizer_name: str,
    val_fraction: float = 0.1,
    source: dict | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Tokenize documents into a data folder. Returns the meta.json dict."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GptkitError(f"--out {out} exists and is not a folder")
    if not any(d.text for d in docs):
        raise GptkitError("the input text is empty")
    splits_text = split_documents(docs, val_fraction)

    tokenizer = build_tokenizer(tokenizer_name, corpus="".join(d.text for d in docs) if tokenizer_name == "char" else None)
    log(f"tokenizer: {tokenizer.name}, vocabulary of {tokenizer.vocab_size:,}")

    # Write into a fresh temporary folder, then swap it in: a half-prepared folder never looks complete.
    staging = out.with_name(f".{out.name}.preparing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        splits = {}
        for split in SPLITS:
            tokens = encode_documents(tokenizer, splits_text[split])
            names = []
            for n, start in enumerate(range(0, max(len(tokens), 1), shard_tokens)):
                name = f"{split}_{n:06d}.bin"
                write_shard(staging / name, tokens[start : start + shard_tokens])
                names.append(name)
            num_bytes = sum(len(t.encode("utf-8")) for t in splits_text[split])
            splits[split] = {"tokens": int(len(tokens)), "bytes": num_bytes, "shards": names}
            log(f"{split}: {len(tokens):,} tokens from {num_bytes:,} bytes in {len(names)} shard(s)")
        tokenizer.save(staging)
        meta = write_meta(staging, tokenizer.spec(), tokenizer.vocab_size, tokenizer.eot_id, splits, source or {})
        if out.exists():
            _replace_data_folder(out, staging)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def _replace_data_folder(out: Path, staging: Path) -> None:
    """Swap a newly prepared folder in for an old one, refusing to clobber a folder that isn't ours."""
    existing = [p.name for p in out.iterdir()]
    ours = all(n == "meta.json" or n == "tokenizer.json" or n.endswith(".bin") for n in existing)
    if existing and not ours:
        raise GptkitError(
            f"--out {out} already holds files that are not gptkit data ({', '.join(sorted(existing)[:3])} ...)",
            hint="choose an empty or new folder",
        )
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _file_source(name: str, files: list[Path]) -> dict:
    entries = []
    combined = hashlib.sha256()
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        combined.update(digest.encode())
        entries.append({"path": str(f), "bytes": f.stat().st_size, "sha256": digest})
    return {"name": name, "sha256": entries[0]["sha256"] if len(entries) == 1 else combined.hexdigest(), "files": entries}


def prepare_shakespeare(
    out: str | Path = "data/shakespeare",
    tokenizer: str = "char",
    source: str | Path | None = None,
    val_fraction: float = 0.1,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Prepare tiny Shakespeare. Without `source` (or GPTKIT_SHAKESPEARE) it is downloaded once and cached."""
    dataset = DATASETS["shakespeare"]
    source = source or os.environ.get("GPTKIT_SHAKESPEARE") or None
    path = Path(source) if source else fetch_dataset(dataset)
    text = read_text_file(path)
    info = _file_source("shakespeare", [path])
    if info["sha256"] != dataset.sha256:
        log(f"warning: {path} differs from the standard tiny Shakespeare (sha256 {info['sha256'][:12]}...); using it anyway")
    log(f"source: {path} ({len(text):,} characters)")
    return prepare_documents([Document("shakespeare", text)], out, tokenizer, val_fraction, info, log=log)


def prepare_text(
    paths: list[str | Path],
    out: str | Path,
    tokenizer: str = "char",
    val_fraction: float = 0.1,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Prepare the user's own UTF-8 text files (folders are searched recursively); one document per file."""
    out_dir = Path(out).resolve()
    # A data folder inside an input folder (`prepare text notes/ --out notes/data`) is output, not input.
    files = [f for f in collect_text_files(paths) if out_dir not in f.resolve().parents]
    if not files:
        raise GptkitError("no input files left once the output folder is set aside")
    docs = [Document(str(f), text) for f, text in zip(files, read_text_files(files))]
    log(f"source: {len(files)} file(s), {sum(len(d.text) for d in docs):,} characters")
    return prepare_documents(docs, out, tokenizer, val_fraction, _file_source("text", files), log=log)
