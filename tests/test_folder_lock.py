"""The one-writer-per-folder lock (folder_lock.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from gptkit.folder_lock import LOCK_NAME, FolderBusy, FolderLock, sibling_lock_path

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock locks are POSIX only")


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    with FolderLock(tmp_path / LOCK_NAME, tmp_path, "run folder"):
        with pytest.raises(FolderBusy) as refused:
            FolderLock(tmp_path / LOCK_NAME, tmp_path, "run folder").acquire()
    message = refused.value.message
    assert f"run folder {tmp_path} is in use by process {os.getpid()}" in message
    assert "started 20" in message and "pytest" in message  # when, and the command line
    assert "--out" in refused.value.hint


def test_released_lock_can_be_taken_again(tmp_path):
    lock = FolderLock(tmp_path / LOCK_NAME, tmp_path).acquire()
    lock.release()
    with FolderLock(tmp_path / LOCK_NAME, tmp_path):
        pass


HOLD = """
import sys, time
from pathlib import Path
from gptkit.folder_lock import FolderLock
FolderLock(Path(sys.argv[1]) / ".gptkit.lock", Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusy, match=f"process {holder.pid}"):
            FolderLock(tmp_path / LOCK_NAME, tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with FolderLock(tmp_path / LOCK_NAME, tmp_path):  # at once: the kernel dropped the dead process's lock
            assert time.monotonic() - started < 1
            assert (tmp_path / LOCK_NAME).exists()
        assert not (tmp_path / LOCK_NAME).exists()  # a writer that finishes leaves the folder as it found it
    finally:
        holder.kill()
        holder.wait()


def test_a_replaced_folder_locks_beside_itself(tmp_path):
    assert sibling_lock_path(tmp_path / "data" / "shakespeare") == tmp_path / "data" / f".shakespeare{LOCK_NAME}"
