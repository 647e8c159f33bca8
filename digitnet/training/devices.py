"""Choose the devices to train on, before any tensor is created: the backend-neutral part.

Each backend lists its devices (digitnet/training/backends/); this module turns the device kind
and count asked for into a choice among them and describes it for the log and the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

from digitnet.errors import DigitnetError, InputError

DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Placement:
    """The devices a run trains on: one, or several for data-parallel training."""

    description: str  # "CPU", "GPU:0 (...)", "2 CPU devices (...)"
    devices: tuple  # the backend's device names or objects, in replica order


def parse_devices(text: str | int | None) -> int | None:
    """--devices: a count >= 1, or "all" (None: every device of the chosen kind).

    Raises:
      InputError: anything else.
    """
    if text is None or text == "all":
        return None if text == "all" else 1
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise InputError("devices", text, "expected a number >= 1 or 'all'")
    return count


def choose(device: str, count: int | None, gpus: list, cpus: list, backend: str) -> tuple:
    """The kind ("GPU" or "CPU") and the first `count` devices of it that `device` asks for.

    Args:
      device: "auto" (GPUs when the backend sees any, else CPUs), "cpu" or "gpu".
      count: how many (None: all of them).
      gpus, cpus: the devices the backend sees.
      backend: its name, for messages.

    Raises:
      InputError: no GPU for "gpu", or fewer devices than `count`.
    """
    if device == "gpu" and not gpus:
        raise InputError("device", device, f"{backend} sees no GPU on this machine (use auto or "
                                           f"cpu)")
    kind, found = ("CPU", cpus) if device == "cpu" or not gpus else ("GPU", gpus)
    if count is not None and count > len(found):
        raise InputError("devices", count, f"expected at most the {len(found)} {kind} "
                                           f"device{'s' if len(found) != 1 else ''} {backend} sees")
    return kind, list(found[:count] if count else found)


def describe(kind: str, names: list[str]) -> str:
    """'CPU', 'GPU:0 (name)' for one device; '2 GPU devices (a, b)' for several."""
    if len(names) == 1:
        return "CPU" if kind == "CPU" else f"GPU:0 ({names[0]})"
    return f"{len(names)} {kind} devices ({', '.join(names)})"


def check_batch(batch_size: int, outliers: float, replicas: int) -> None:
    """Data-parallel training splits each batch (with its outliers) evenly over the replicas."""
    total = batch_size + round(outliers * batch_size)
    if total % replicas:
        raise DigitnetError(f"training.batch_size: expected a batch (with training.outliers: "
                            f"{total} images) that splits evenly over the {replicas} devices, "
                            f"received {batch_size}")
