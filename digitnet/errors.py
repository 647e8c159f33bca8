"""The exceptions that the CLI turns into a one-line `Error: ...`.

The library names config keys, files and its own parameters; only the CLI knows which flag a
value came from, so `InputError` keeps the input's name apart for the CLI to word. The helpers
below keep every message one short line whatever the user handed in.
"""

from __future__ import annotations

import re
from pathlib import Path

SHOWN_MAX = 80  # characters of a received value quoted in a message
LINE_MAX = 1000  # characters of a whole message line (file names included)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # what would break or colour a line


class DigitnetError(Exception):
    """A user-facing error: bad input, bad config, missing file. Never a bug."""

    resumable: Path | None = None  # a run this error left resumable (the CLI says how)


class InputError(DigitnetError):
    """A refused value of one input: "device gpu: TensorFlow sees no GPU ...".

    Attributes:
      name: the input in the library's words ("device", "run directory", "resumed run").
      value: the value given, as the message shows it.
      problem: what is wrong with it and what was expected.
    """

    def __init__(self, name: str, value: object, problem: str):
        super().__init__(f"{name} {value}: {problem}")
        self.name, self.value, self.problem = name, value, problem


def clip(text: str, limit: int = SHOWN_MAX) -> str:
    """`text` cut to about `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def shown(value) -> str:
    """A received value as a message quotes it: its repr, cut when long."""
    try:
        text = repr(value)
    except RecursionError:  # a structure nested deeper than repr can go
        text = f"<{type(value).__name__} nested too deep to show>"
    except ValueError:  # an integer with more digits than Python converts (0x and 0o ones)
        text = "<an integer too long to show>"
    return clip(text)


def printable(text: str) -> str:
    """`text` with control characters (newlines, tabs, escape sequences) written as escapes,
    so that a file name or value can never split a line or colour a terminal."""
    return CONTROL.sub(lambda match: repr(match[0])[1:-1], text)


def one_line(text: str) -> str:
    """A message as printed: control characters escaped, the line bounded."""
    return clip(printable(text), LINE_MAX)


def os_reason(error: OSError) -> str:
    """An OSError's reason in a few words: 'Read-only file system'."""
    return error.strerror or first_line(error)


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, trimmed to whole sentences within `limit`
    characters when that leaves some (else cut with '...'): errors stay one readable line."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    end = line.rfind(". ")
    if line.endswith(":") and end > 0:  # it introduces lines left out: keep whole sentences
        line = line[: end + 1]
    if len(line) <= limit:
        return line
    end = line.rfind(". ", 0, limit)
    return line[: end + 1] if end > 0 else line[:limit].rstrip() + "..."
