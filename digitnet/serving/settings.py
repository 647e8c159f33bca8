"""What `digitnet serve` may be told, in one frozen object with every default in one block."""

from __future__ import annotations

from dataclasses import dataclass

from digitnet.inference.predict import DEFAULT_MIN_CONFIDENCE

MEGABYTE = 1_000_000


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits and answers; the same defaults as `digitnet predict`."""

    max_body: int = 10 * MEGABYTE  # bytes in one request body; more gets 413 before it is read
    min_confidence: float = DEFAULT_MIN_CONFIDENCE  # below this the digit is "unknown"
    batching: bool = True  # concurrent requests share one model call
    max_batch: int = 64  # images in one shared model call, at most
    max_wait_ms: float = 2.0  # how long a request may wait for others to join its model call
    max_files: int = 64  # image files in one multipart request, at most
    body_timeout: float = 30.0  # seconds a client may take to send its body (then 408)


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
