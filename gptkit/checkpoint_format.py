"""The checkpoint file format as far as it can be read without torch: its names and its header.

A safetensors file is an 8-byte little-endian header length, then that many bytes of JSON, then the
raw tensor bytes:

    {"__metadata__": {"format": "gptkit.checkpoint", "step": "300", ...},   all values strings
     "token_embedding.weight": {"dtype": "F32", "shape": [65, 384], "data_offsets": [0, 99840]},
     ...}

Reading only the header tells what a file is (its format, kind, tokenizer, model config) and which
tensors it holds, with their shapes, without reading the weights or importing torch: so
`gptkit tokenize encode --tokenizer out/` starts instantly, and a model config can be checked against
the tensors before any memory is allocated. checkpoint.py reads and writes whole files.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from gptkit.errors import GptkitError

CHECKPOINT_FORMAT = "gptkit.checkpoint"  # metadata "format" of a checkpoint
RESUME_FORMAT = "gptkit.resume"  # ... and of the resume state beside it
FORMAT_VERSION = 1  # the newest version this gptkit reads and writes
CKPT_NAME = "ckpt.safetensors"  # the latest checkpoint of a run folder (see run_folder.py)

# What a checkpoint holds: a full model, or an adapter (a few extra weights, e.g. LoRA's) that only
# means something on top of one base model, named by the base's checksum. Files written before kinds
# existed have no "kind" and are full models.
MODEL, ADAPTER = "model", "adapter"
KINDS = (MODEL, ADAPTER)

_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit: a bigger length means a damaged file


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors' name for it: "F32", "BF16", "I64", ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    metadata: dict[str, str]  # the "__metadata__" strings ({} when the file has none)
    tensors: dict[str, TensorInfo]  # every tensor's name, dtype and shape, in file order


class DamagedFile(GptkitError):
    """A checkpoint or resume state that is truncated or corrupted. The hint names the last good
    checkpoint, which callers fill in (see run_folder.with_last_good) because only they know where to look."""

    def __init__(self, path: Path, problem: str, hint: str | None = None):
        super().__init__(f"{path} {problem}", hint=hint or "the file is truncated or corrupted; use an earlier checkpoint or train again")
        self.path = path


def unreadable(path: Path, error: Exception | str) -> DamagedFile:
    # The reader's own words ("file not fully covered") don't say what happened to the file: we do.
    return DamagedFile(path, f"is not a readable safetensors file (truncated or damaged: {str(error).splitlines()[0][:120]})")


CHECKPOINT_HINT = f"pass a {CKPT_NAME} written by `gptkit train`, or the run folder that holds it"


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint a `--ckpt` names: the file itself, or a run folder's latest (RUN/ckpt.safetensors),
    as `--tokenizer` takes a folder too. Every reader of a checkpoint starts here."""
    path = Path(path)
    if path.is_dir():
        if (path / CKPT_NAME).is_file():
            return path / CKPT_NAME
        raise GptkitError(f"checkpoint {path} is a folder without {CKPT_NAME}", hint=f"pass the file, e.g. {path / CKPT_NAME}")
    return path


def not_a_checkpoint(path: Path, what: str = "checkpoint", detail: str = "") -> GptkitError:
    """The one error for a file that is no checkpoint at all (a text file, a resume state, a stranger's
    safetensors file): said the same way by every command that reads one."""
    detail = f": {detail}" if detail else ""
    return GptkitError(f"{path} is not a gptkit {what}{detail}", hint=CHECKPOINT_HINT if what == "checkpoint" else None)


def check_is_file(path: Path, what: str) -> None:
    if not path.exists():
        raise GptkitError(f"{what} {path} does not exist", hint="train one with `gptkit train`, or check the path")
    if path.is_dir():
        raise GptkitError(f"{what} {path} is a folder", hint=f"pass the file, e.g. {path / CKPT_NAME}")


def read_header(path: str | Path, what: str = "checkpoint") -> Header:
    """The header of the safetensors file at `path`. Checks that it parses and that the tensors it
    lists fit in the file (a truncated file fails here), but reads none of their bytes."""
    path = Path(path)
    check_is_file(path, what)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            prefix = f.read(9)
            if len(prefix) > 8 and prefix[8:9] != b"{":  # a safetensors header is JSON: a text file is no checkpoint
                raise not_a_checkpoint(path, what, "it is not a readable safetensors file")
            prefix = prefix[:8]
            if len(prefix) < 8:
                raise ValueError(f"{size} bytes, shorter than the 8-byte header length")
            f.seek(8)
            (length,) = struct.unpack("<Q", prefix)
            if length > min(_MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {length:,} does not fit in the file's {size:,} bytes")
            raw = json.loads(f.read(length).decode("utf-8"))
        return _parse(raw, data_bytes=size - 8 - length)
    except (OSError, ValueError, UnicodeDecodeError, TypeError, KeyError) as e:  # JSONDecodeError is a ValueError
        raise unreadable(path, e) from None


def _parse(raw, data_bytes: int) -> Header:
    if not isinstance(raw, dict):
        raise ValueError("the header is not a JSON object")
    metadata = raw.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("__metadata__ is not a map of strings")
    tensors, end = {}, 0
    for name, entry in raw.items():
        if name == "__metadata__":
            continue
        shape, (start, stop) = entry["shape"], entry["data_offsets"]
        if not isinstance(entry["dtype"], str) or not all(type(n) is int and n >= 0 for n in [*shape, start, stop]):
            raise ValueError(f"tensor {name!r} has a malformed entry")
        if not start <= stop <= data_bytes:
            raise ValueError(f"tensor {name!r} ends past the end of the file")
        tensors[name] = TensorInfo(entry["dtype"], tuple(shape))
        end = max(end, stop)
    if end != data_bytes:
        raise ValueError(f"the tensors cover {end:,} of the {data_bytes:,} data bytes")
    return Header(metadata, tensors)


def check_format(path: Path, metadata: dict[str, str], expected: str) -> None:
    """Refuse a file that is not an `expected` file, or one of a newer format version."""
    if metadata.get("format") != expected:
        what = "checkpoint" if expected == CHECKPOINT_FORMAT else "resume state"
        raise not_a_checkpoint(path, what, f"it is a safetensors file but not a {expected} file (format {metadata.get('format')!r})")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise GptkitError(
            f"{path} has format version {version}, newer than this gptkit (reads up to {FORMAT_VERSION})",
            hint="upgrade gptkit: pip install -U gptkit",
        )


def read_checkpoint_header(path: str | Path) -> Header:
    """read_header, for a gptkit checkpoint of a version this gptkit reads (else a GptkitError)."""
    path = checkpoint_file(path)
    header = read_header(path, "checkpoint")
    check_format(path, header.metadata, CHECKPOINT_FORMAT)
    return header


def checkpoint_kind(metadata: dict[str, str]) -> str:
    """"model" or "adapter"; files from before kinds existed are full models."""
    kind = metadata.get("kind", MODEL)
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind
