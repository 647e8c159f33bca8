"""Opening the files users name without hanging or filling memory: only regular files, and
only as much as they should hold."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from digitnet.errors import DigitnetError, os_reason

FILE_KINDS = {  # what a path is, for messages, when it is not a regular file
    stat.S_IFIFO: "a named pipe", stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder",
}


def not_regular_reason(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as a regular file (following links), or None when it can.

    Reading a FIFO blocks until someone writes to it, and a device may never end: such paths
    are refused before they are opened.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as error:
        return f"cannot be read ({os_reason(error)})"
    except ValueError:  # os.stat's "embedded null byte": a path read from stdin may hold one
        return "cannot be read (a path cannot hold a NUL byte)"
    if stat.S_ISREG(mode):
        return None
    return f"is {FILE_KINDS.get(stat.S_IFMT(mode), 'a special file')}, not a regular file"


def read_small_file(path: Path, limit: int, what: str, error=DigitnetError) -> str:
    """The UTF-8 text of `path`, a regular file of at most `limit` bytes.

    Raises:
      `error`: naming `path` and `what` it should be, when it is missing, not a regular file,
        larger than `limit` or unreadable; UnicodeDecodeError when it is not UTF-8.
    """
    reason = not_regular_reason(path)
    if reason is not None:
        raise error(f"{path}: {what} {reason}")
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as failure:
        raise error(f"{path}: {what} cannot be read ({os_reason(failure)})") from None
    if len(data) > limit:
        raise error(f"{path}: {what} is larger than {limit} bytes")
    return data.decode("utf-8")
