"""One writer per folder: an exclusive lock held for as long as the writing process lives.

Two `gptkit train` processes writing one run folder would interleave their checkpoints and metrics
without either noticing (a scheduler that launches a job twice does exactly this). So every command
that writes a folder first takes its lock:

    with FolderLock(out / LOCK_NAME, folder=out, what="run folder"):
        ...                                    # only this process writes `out`

The lock is an OS advisory lock (`flock`) on a small file, not the file's existence: the kernel drops
it when the process ends, however it ends (kill -9, a crash, a power cut), so there is never a stale
lock to delete by hand. The file holds who took the lock (process id, start time, command line),
which is what the refusal of a second writer quotes. A writer that finishes deletes it; one that
crashed leaves it behind, unlocked, and the next writer simply takes it over.

Readers (`sample`, `eval`, `report`, ...) never take the lock: every write is an atomic rename
(fileio.py), so a reader sees the old file or the new one, never half of one.

On platforms without `fcntl` (Windows) the lock is a no-op, and the docs say so.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from gptkit.errors import GptkitError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".gptkit.lock"  # inside a run folder; a data folder's sits beside it (it is swapped in whole)


class FolderBusy(GptkitError):
    """Another process holds the folder's lock."""


def sibling_lock_path(folder: str | Path) -> Path:
    """The lock of a folder that is replaced as a whole (prepare's data folder): beside it, not in it."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}{LOCK_NAME}"


class FolderLock:
    """An exclusive, non-blocking lock on `path`, for writing `folder`. Raises FolderBusy if held."""

    def __init__(self, path: str | Path, folder: str | Path, what: str = "folder"):
        self.path, self.folder, self.what = Path(path), Path(folder), what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        if fcntl is None or self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._busy(holder) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            # The holder before us deleted the file as it finished, after we opened it: that lock is on
            # a file nobody else will open again. Start over on the one now at the path.
            os.close(fd)
        # Ours now: record who holds it, for the message a second writer gets.
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": shlex.join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Delete the lock file (a finished writer leaves the folder as it found it), then unlock.
        After a crash the file stays, unlocked: the next writer takes it over."""
        if self._fd is not None:
            if _same_file(self._fd, self.path):
                self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy(self, holder: dict) -> FolderBusy:
        if holder:
            who = f"process {holder.get('pid', '?')}"
            if holder.get("host") and holder["host"] != socket.gethostname():
                who += f" on {holder['host']}"
            who += f", started {holder.get('started', '?')}: `{holder.get('command', '?')}`"
        else:  # it took the lock an instant ago and has not written its record yet
            who = "another process that is starting up"
        return FolderBusy(
            f"the {self.what} {self.folder} is in use by {who}",
            hint=f"wait for it to finish, or choose another --out (the lock is {self.path}; it is released "
            "by itself when that process ends)",
        )


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(data) if data else {}
    except (OSError, ValueError):
        return {}
