"""The one exception type that the CLI turns into a one-line `Error: ...`."""


class DigitnetError(Exception):
    """A user-facing error: bad input, bad config, missing file. Never a bug."""
