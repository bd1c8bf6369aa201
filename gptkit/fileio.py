"""Crash-safe file writes.

Every artifact gptkit writes goes through here: the bytes land in a temporary file in the same
folder, are flushed to disk (fsync), and only then renamed over the target. A rename within one
file system is atomic, so a crash or Ctrl-C leaves either the old file or the new one, never half.
After the rename the folder itself is fsynced too, so the new name survives a power cut.

A full disk (ENOSPC, a quota, a file-size limit) or a read-only folder becomes a GptkitError that
names the file: the temporary file is removed and the previous version of the target is untouched.
A process killed mid-write (kill -9, power) can leave a `.NAME.XXXX.tmp` sibling behind;
`remove_stale_temp_files` clears those before a folder is written again.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from gptkit.errors import GptkitError

# Errors that mean "the disk cannot take these bytes", whatever the operation that hit them.
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path` atomically."""
    path = Path(path)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise disk_error(e, path, existed) or e from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give them the usual mode
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno in DISK_FULL | {errno.EROFS}:
            raise disk_error(e, path, existed) from None
        raise
    _fsync_folder(path.parent)


def disk_error(error: OSError, path: Path, existed: bool) -> GptkitError | None:
    """The GptkitError for a write of `path` that the file system refused, or None for other errors."""
    kept = f"the previous {path.name} is untouched" if existed else "no partial file was left"
    if error.errno in DISK_FULL:
        what = "no space left on the device" if error.errno == errno.ENOSPC else os.strerror(error.errno).lower()
        return GptkitError(
            f"could not write {path}: {what}; nothing was half-written ({kept})",
            hint=f"free some disk space under {path.parent} (or write somewhere else) and run the command again",
        )
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return GptkitError(f"could not write {path}: {os.strerror(error.errno).lower()}", hint="choose a folder you can write to")
    return None


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable. Some systems cannot open folders; there, the OS decides."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_link(source: str | Path, target: str | Path) -> None:
    """Make `target` another name for the file `source` (a hard link: no copy, no extra disk space),
    replacing `target` atomically. Where hard links are not supported, `target` becomes a copy."""
    source, target = Path(source), Path(target)
    if target.exists() and os.path.samefile(source, target):
        return  # already so; and rename(2) onto another link of the same file would do nothing
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        with atomic_open(target, "wb") as f, open(source, "rb") as src:
            shutil.copyfileobj(src, f)
        return
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the `.NAME.XXXX.tmp` files an interrupted atomic write left in `folder`; return them."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
