"""One training process per run directory: an advisory lock on `<run>/.lock`.

The lock is an `fcntl.flock` on an open file, so the kernel releases it when the process ends
in any way (kill -9 included): a dead run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from digitnet.errors import DigitnetError, os_reason
from digitnet.runs.layout import LOCK_FILE


class RunLock:
    """Hold the run directory's lock for a `with` block; refuse if another process holds it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.fd = acquire(self.path)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())  # who holds it, for the error message
        return self

    def __exit__(self, *exc) -> None:
        # Unlink while still holding the lock: a waiting process re-checks the inode (acquire).
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def acquire(path: Path) -> int:
    """An open descriptor of `path` holding an exclusive flock on it.

    Raises:
      DigitnetError: another process holds the lock, or the directory cannot be written.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a read-only disk, /proc, a folder that went away
            raise DigitnetError(f"{path.parent}: cannot write in the run directory "
                                f"({os_reason(error)})") from None
        if not try_flock(fd, fcntl.LOCK_EX):
            os.close(fd)
            raise DigitnetError(f"{path.parent}: another digitnet process ({holder(path)}) is "
                                f"training in this run directory; wait for it or stop it")
        if same_file(fd, path):
            return fd
        os.close(fd)  # the holder unlinked it as we opened it: lock the new file instead


def try_flock(fd: int, mode: int, patience: float = 0.5) -> bool:
    """Take a flock, retrying briefly: a `digitnet runs` probe holds it for microseconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def holder(path: Path) -> str:
    """'pid N' of the process that wrote the lock file, or 'pid unknown'."""
    with contextlib.suppress(OSError, ValueError):
        return f"pid {int(path.read_text().strip())}"
    return "pid unknown"


def is_locked(run_dir: Path) -> bool:
    """Whether a live process is training in `run_dir` (for `digitnet runs`); never blocks."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no process has it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released at once by the close below
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
