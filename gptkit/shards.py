"""Token shards on disk: the data folder that `prepare` writes and `train`/`eval` read.

A data folder holds:

    train_000000.bin, train_000001.bin, ...   token shards of the training split
    val_000000.bin, ...                       token shards of the validation split
    meta.json                                 what the tokens mean (see write_meta)
    tokenizer.json                            the tokenizer's spec, for `gptkit tokenize`

Shard layout. A 1024-byte header of 256 little-endian int32, then the tokens:

    header[0] = magic      20240520: llm.c / modded-nanogpt's format, tokens are uint16
                           20241126: gptkit's variant for vocabularies over 65,536, tokens are uint32
    header[1] = version    1
    header[2] = number of tokens in the shard
    header[3:] = 0

so shards written by llm.c or modded-nanogpt (GPT-2 tokens) can be trained on directly, and ours can be
read by them when the vocabulary fits uint16. Readers check magic, version and the file's size, and
memory-map the tokens: a shard is never loaded whole into RAM.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptkit import __version__
from gptkit.errors import GptkitError
from gptkit.fileio import atomic_open, atomic_write_json, disk_error

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAGIC_UINT16 = 20240520  # llm.c's magic number
MAGIC_UINT32 = 20241126  # gptkit's
SHARD_VERSION = 1
TOKEN_DTYPE = {MAGIC_UINT16: np.uint16, MAGIC_UINT32: np.uint32}

META_FORMAT = "gptkit.data"
META_VERSION = 1
SPLITS = ("train", "val")


def token_dtype_for(vocab_size: int) -> np.dtype:
    """The smallest token type that holds every id: uint16 up to 65,536 ids, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write one shard atomically. `tokens` must already have dtype uint16 or uint32."""
    tokens = np.ascontiguousarray(tokens)
    header = _shard_header(tokens.dtype, len(tokens))
    with atomic_open(path, "wb") as f:
        f.write(header)
        f.write(tokens.astype(tokens.dtype.newbyteorder("<"), copy=False).tobytes())


def _shard_header(dtype: np.dtype, count: int) -> bytes:
    magic = {np.dtype(np.uint16): MAGIC_UINT16, np.dtype(np.uint32): MAGIC_UINT32}.get(np.dtype(dtype))
    if magic is None:
        raise ValueError(f"shard tokens must be uint16 or uint32, not {dtype}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = magic, SHARD_VERSION, count
    return header.tobytes()


class ShardWriter:
    """Streams one split's tokens into shards `{split}_000000.bin`, ... of `shard_tokens` tokens each.

    Tokens go to disk as they arrive, so memory stays flat however large the corpus; a shard's header
    gets its token count when the shard is full or the writer is closed. Files are written in place,
    not atomically: write into a staging folder and move it into place when done (as prepare does).
    """

    def __init__(self, folder: str | Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.folder, self.split, self.dtype, self.shard_tokens = Path(folder), split, np.dtype(dtype), shard_tokens
        self.names: list[str] = []
        self.checksums: dict[str, str] = {}  # shard name -> sha256 of its tokens (meta.json; `prepare verify`)
        self.total = 0
        self._hash = None
        self._file = None
        self._count = 0  # tokens in the open shard

    def write(self, tokens) -> None:
        tokens = np.asarray(tokens, dtype=self.dtype.newbyteorder("<"))
        with self._disk_errors():
            while len(tokens):
                if self._file is None:
                    self._open_next()
                part = tokens[: self.shard_tokens - self._count].tobytes()
                self._file.write(part)
                self._hash.update(part)
                taken = len(part) // self.dtype.itemsize
                self._count += taken
                self.total += taken
                tokens = tokens[taken:]
                if self._count == self.shard_tokens:
                    self._finish_shard()

    @contextmanager
    def _disk_errors(self):
        """A full disk is for the user to fix, not a bug: name the shard that could not be written.
        (The staging folder it is in is removed, so nothing is half-written.)"""
        try:
            yield
        except OSError as e:
            error = disk_error(e, self.folder / self.names[-1] if self.names else self.folder, existed=False)
            if error is None:
                raise
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:  # flushing the rest fails the same way; the error above says it all
                    pass
                self._file = None
            raise error from None

    def _open_next(self) -> None:
        self.names.append(f"{self.split}_{len(self.names):06d}.bin")
        self._file = open(self.folder / self.names[-1], "wb")
        self._file.write(_shard_header(self.dtype, 0))  # the count is filled in by _finish_shard
        self._count = 0
        self._hash = hashlib.sha256()  # of the tokens only: the header is rewritten at the end

    def _finish_shard(self) -> None:
        self._file.seek(0)
        self._file.write(_shard_header(self.dtype, self._count))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self.checksums[self.names[-1]] = self._hash.hexdigest()

    def close(self) -> list[str]:
        """Finish the last shard (a split with no tokens still gets one, empty) and return the names."""
        with self._disk_errors():
            if self._file is None and not self.names:
                self._open_next()
            if self._file is not None:
                self._finish_shard()
        return self.names


def read_shard(path: str | Path) -> np.ndarray:
    """Memory-map a shard's tokens after checking its header against the file size."""
    path = Path(path)
    if not path.is_file():
        raise GptkitError(f"shard {path} does not exist", hint="run `gptkit prepare` to (re)create the data folder")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise GptkitError(f"{path} is not a token shard: only {size} bytes, shorter than its 1024-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    magic, version, count = int(header[0]), int(header[1]), int(header[2])
    if magic not in TOKEN_DTYPE:
        raise GptkitError(f"{path} is not a token shard (magic number {magic}, expected {MAGIC_UINT16} or {MAGIC_UINT32})")
    if version != SHARD_VERSION:
        raise GptkitError(
            f"{path} has shard format version {version}; this gptkit reads version {SHARD_VERSION}",
            hint="upgrade gptkit, or prepare the data again",
        )
    dtype = np.dtype(TOKEN_DTYPE[magic]).newbyteorder("<")
    expected = HEADER_BYTES + count * dtype.itemsize
    if size != expected:
        raise GptkitError(
            f"{path} is damaged: its header promises {count:,} tokens ({expected:,} bytes) but the file has {size:,} bytes",
            hint="the file was truncated or overwritten; run `gptkit prepare` again",
        )
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,))


def out_of_vocabulary(path: str | Path, position: int, value: int, vocab_size: int) -> GptkitError:
    """The error for a token id the vocabulary does not have: the shard is damaged, or is another tokenizer's."""
    folder = Path(path).parent
    return GptkitError(
        f"{path} is damaged: token {position:,} of the shard is {value}, outside the vocabulary of {vocab_size:,} ids "
        "(the file was overwritten, or made with another tokenizer)",
        hint=f"check the folder with `gptkit prepare verify {folder}`, then rebuild it with `gptkit prepare` "
        f"(--out {folder}) and the tokenizer the model uses",
    )


def check_ids(tokens: np.ndarray, vocab_size: int, path: str | Path, first: int = 0) -> None:
    """Raise out_of_vocabulary for the first id >= vocab_size in `tokens` (positions counted from `first`)."""
    if len(tokens) and int(tokens.max()) >= vocab_size:
        where = int(np.argmax(tokens >= vocab_size))
        raise out_of_vocabulary(path, first + where, int(tokens[where]), vocab_size)


def verify_data_folder(data_dir: str | Path, chunk_tokens: int = 1 << 22) -> dict:
    """Check a data folder in one streaming pass: meta.json, every shard's header and size, the sha256 of
    its tokens against meta.json's (folders prepared before checksums existed have none), and that every
    id is inside the vocabulary. Raises one GptkitError naming every damaged shard; returns a summary."""
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    vocab_size, damaged, shards, tokens, checked = int(meta["vocab_size"]), [], 0, 0, 0
    for split, info in meta["splits"].items():
        checksums = info.get("checksums", {})
        for name in info["shards"]:
            path = data_dir / name
            try:
                shard = read_shard(path)
                digest = hashlib.sha256()
                for start in range(0, len(shard), chunk_tokens):
                    piece = np.asarray(shard[start : start + chunk_tokens])
                    check_ids(piece, vocab_size, path, start)
                    digest.update(piece.tobytes())
                if name in checksums:
                    checked += 1
                    if digest.hexdigest() != checksums[name]:
                        raise GptkitError(f"{path} is damaged: its tokens do not match the checksum in meta.json")
            except GptkitError as e:
                damaged.append(e.message)
                continue
            shards, tokens = shards + 1, tokens + len(shard)
    if damaged:
        raise GptkitError(
            f"{data_dir}: {len(damaged)} damaged shard(s): " + "; ".join(damaged),
            hint=f"rebuild the folder with `gptkit prepare ... --out {data_dir}`",
        )
    return {"data": str(data_dir), "shards": shards, "tokens": tokens, "checksums_verified": checked, "vocab_size": vocab_size}


# ---------------------------------------------------------------------------------------------------
# meta.json


def write_meta(
    data_dir: str | Path,
    tokenizer_spec: dict,
    vocab_size: int,
    eot_id: int | None,
    splits: dict,
    source: dict,
    extra: dict | None = None,
) -> dict:
    """Write meta.json. `splits` maps split name -> {"tokens", "bytes", "shards": [file names]}; `extra`
    adds fields of a special kind of data (instruction data's "kind", "template", ...: instructions.py)."""
    meta = {
        "format": META_FORMAT,
        "format_version": META_VERSION,
        "gptkit_version": __version__,
        "tokenizer": tokenizer_spec,
        "vocab_size": vocab_size,
        "eot_id": eot_id,
        "token_dtype": token_dtype_for(vocab_size).name,
        "splits": splits,
        "source": source,
        **(extra or {}),
    }
    atomic_write_json(Path(data_dir) / "meta.json", meta)
    return meta


def read_meta(data_dir: str | Path) -> dict:
    """Read and check a data folder's meta.json."""
    data_dir = Path(data_dir)
    hint = f"run `gptkit prepare shakespeare --out {data_dir}` (or `gptkit prepare text FILES --out {data_dir}`)"
    if not data_dir.exists():
        raise GptkitError(f"data folder {data_dir} does not exist", hint=hint)
    path = data_dir / "meta.json"
    if not path.is_file():
        raise GptkitError(f"{data_dir} is not a gptkit data folder: it has no meta.json", hint=hint)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GptkitError(f"{path} is not valid JSON ({e})", hint=hint) from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise GptkitError(f"{path} is not a gptkit meta.json", hint=hint)
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise GptkitError(f"{path} has an invalid format_version {version!r} (expected a whole number)", hint=hint)
    if version > META_VERSION:
        raise GptkitError(
            f"{path} has format version {version}, newer than this gptkit reads (up to {META_VERSION})",
            hint="upgrade gptkit",
        )
    for key in ("tokenizer", "vocab_size", "splits"):
        if key not in meta:
            raise GptkitError(f"{path} lacks the field {key!r}", hint=hint)
    return meta


# ---------------------------------------------------------------------------------------------------
# Reading batches


@dataclass
class Split:
    """One split (train or val) of a data folder: its shards, memory-mapped, seen as one token stream."""

    name: str
    shards: list[np.ndarray]
    paths: list[Path] = field(default_factory=list)  # each shard's file, to name a damaged one
    vocab_size: int | None = None  # ids at or above it mean a damaged shard (check_ids)

    @classmethod
    def open(cls, data_dir: str | Path, name: str, meta: dict | None = None) -> "Split":
        data_dir = Path(data_dir)
        meta = meta or read_meta(data_dir)
        info = meta["splits"].get(name)
        if info is None:
            raise GptkitError(f"{data_dir} has no {name!r} split", hint=f"it has: {', '.join(meta['splits'])}")
        shards = [read_shard(data_dir / shard_name) for shard_name in info["shards"]]
        found, promised = sum(len(s) for s in shards), info.get("tokens")
        if promised is not None and found != promised:
            raise GptkitError(
                f"{data_dir}: the {name} shards hold {found:,} tokens but meta.json promises {promised:,}",
                hint="the folder mixes files from different runs of `gptkit prepare`; prepare it again",
            )
        paths = [data_dir / shard_name for shard_name in info["shards"]]
        return cls(name, shards, paths, int(meta["vocab_size"]))

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.shards)

    def check_fits(self, block_size: int) -> None:
        if not any(len(s) > block_size for s in self.shards):
            raise GptkitError(
                f"the {self.name} split has no shard longer than the context ({block_size} tokens); "
                f"its longest has {max((len(s) for s in self.shards), default=0)}",
                hint="use more text, a smaller --val-fraction, or a smaller --block-size",
            )

    def check_ids(self, windows: np.ndarray, shard_ids, offsets) -> None:
        """Stop on an id outside the vocabulary in a batch of windows (rows from shard_ids[i] at offsets[i]).

        llm.c's shards carry no checksum, so a damaged file is only noticed here: one max per batch, on
        the host before the batch moves (an out-of-range id on a GPU is a device-side assert that kills
        the process instead of an error; on the CPU an IndexError deep inside the embedding)."""
        if self.vocab_size is None or not windows.size or int(windows.max()) < self.vocab_size:
            return
        row = int(np.argmax((windows >= self.vocab_size).any(axis=1)))
        col = int(np.argmax(windows[row] >= self.vocab_size))
        path = self.paths[int(shard_ids[row])] if self.paths else f"a {self.name} shard"
        raise out_of_vocabulary(path, int(offsets[row]) + col, int(windows[row, col]), self.vocab_size)

    def iter_windows(self, block_size: int, batch_size: int, max_batches: int | None = None):
        """Every token once, in order: consecutive non-overlapping windows, `batch_size` at a time.

        Used by `eval` for a deterministic loss over the whole split. The tail of each shard that does
        not fill a window is skipped. Yields (x, y) int64 tensors of shape (b, T), b <= batch_size.
        """
        import torch

        def as_batch(rows: list[tuple[int, int, np.ndarray]]):
            windows = np.stack([w for _, _, w in rows])
            self.check_ids(windows, [s for s, _, _ in rows], [o for _, o, _ in rows])
            windows = torch.from_numpy(windows)
            return windows[:, :-1], windows[:, 1:]

        batch = []
        produced = 0
        for shard_id, shard in enumerate(self.shards):
            for start in range(0, len(shard) - block_size, block_size):
                batch.append((shard_id, start, np.asarray(shard[start : start + block_size + 1], dtype=np.int64)))
                if len(batch) == batch_size:
                    yield as_batch(batch)
                    batch, produced = [], produced + 1
                    if max_batches is not None and produced >= max_batches:
                        return
        if batch:
            yield as_batch(batch)
