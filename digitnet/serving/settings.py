"""What `digitnet serve` may be told, in one frozen object with every default in one block."""

from __future__ import annotations

from dataclasses import dataclass

from digitnet.config import _require, is_integer, is_number
from digitnet.errors import InputError
from digitnet.inference.predict import DEFAULT_MAX_ENTROPY, DEFAULT_MIN_CONFIDENCE

MEGABYTE = 1_000_000


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits and answers; the same defaults as `digitnet predict`."""

    max_body: int = 10 * MEGABYTE  # bytes in one request body; more gets 413 before it is read
    min_confidence: float = DEFAULT_MIN_CONFIDENCE  # below this the digit is "unknown"
    max_entropy: float = DEFAULT_MAX_ENTROPY  # ... and above this entropy (nats) too
    batching: bool = True  # concurrent requests share one model call
    max_batch: int = 64  # images in one shared model call, at most
    max_wait_ms: float = 2.0  # how long a request may wait for others to join its model call
    max_files: int = 64  # image files in one multipart request, at most
    body_timeout: float = 30.0  # seconds a client may take to send its body (then 408)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ConfigError naming the first bad field, as the run config's sections do."""
        for name in ("max_body", "max_batch", "max_files"):
            value = getattr(self, name)
            _require(name, is_integer(value) and value >= 1, "an integer >= 1", value)
        _require("min_confidence", is_number(self.min_confidence)
                 and 0 <= self.min_confidence <= 1, "a probability in [0, 1]",
                 self.min_confidence)
        _require("max_entropy", is_number(self.max_entropy) and self.max_entropy >= 0,
                 "a number of nats >= 0", self.max_entropy)
        _require("batching", isinstance(self.batching, bool), "true or false", self.batching)
        _require("max_wait_ms", is_number(self.max_wait_ms) and self.max_wait_ms >= 0,
                 "a number >= 0", self.max_wait_ms)
        _require("body_timeout", is_number(self.body_timeout) and self.body_timeout > 0,
                 "a number > 0", self.body_timeout)


SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": MEGABYTE, "gb": 1000 * MEGABYTE,
              "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes from '10MB', '512KiB' or '1000000' (decimal units; KiB/MiB binary).

    Raises:
      ValueError: not a positive whole number of bytes with one of SIZE_UNITS.
    """
    number = text.strip().lower().rstrip("bikmg ")
    unit = text.strip().lower()[len(number):].strip()
    if not number.replace(".", "", 1).isdigit() or unit not in SIZE_UNITS:
        raise ValueError(f"expected a size such as 10MB, 512KiB or 1000000, received {text!r}")
    size = int(float(number) * SIZE_UNITS[unit])
    if size < 1:
        raise ValueError(f"expected at least 1 byte, received {text!r}")
    return size


def check_host(host: str) -> None:
    """Refuse an empty host: the socket would listen on every interface, unasked.

    Raises:
      InputError: `host` is empty or only spaces.
    """
    if not host.strip():
        raise InputError("host", repr(host), "expected an address or a host name (127.0.0.1: "
                                              "this machine only; 0.0.0.0: every interface)")
