"""The exceptions that the CLI turns into a one-line `Error: ...`.

The library names config keys, files and its own parameters; only the CLI knows which flag a
value came from, so `InputError` keeps the input's name apart for the CLI to word.
"""

from __future__ import annotations

from pathlib import Path


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
