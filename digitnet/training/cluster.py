"""A training job of several processes (JAX backend): who they are and where they meet.

Every process runs the same `digitnet train` with its own process id; process 0 is the
coordinator and alone writes the run directory, on a filesystem all of them share.
"""

from __future__ import annotations

from dataclasses import dataclass

from digitnet.errors import DigitnetError, InputError

MAX_PORT = 65535


class LostProcess(DigitnetError):
    """A process of the job died or stopped answering; the run is resumable by every process."""


@dataclass(frozen=True)
class Cluster:
    coordinator: str  # HOST:PORT where process 0 listens
    num_processes: int
    process_id: int  # 0 .. num_processes - 1

    @property
    def writes(self) -> bool:
        """Whether this process writes the run directory (process 0 alone)."""
        return self.process_id == 0


# Why a job of several processes needs the JAX backend (checked here, before TensorFlow is
# imported, and by the TensorFlow backend itself for library callers).
NEEDS_JAX = ("training across processes needs training.backend: jax (TensorFlow's multi-worker "
             "strategy does not work with Keras 3, keras-team/keras#20585)")


def make_cluster(coordinator: str, num_processes: int, process_id: int,
                 backend: str = "jax") -> Cluster | None:
    """The Cluster of a job of `num_processes` (None for a single process) on `backend`.

    Raises:
      InputError: a coordinator that is not HOST:PORT, a process id out of range, or a backend
        that cannot train across processes.
    """
    if num_processes == 1:
        return None
    host, _, port = coordinator.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        raise InputError("coordinator", coordinator, "expected HOST:PORT")
    # else every process would wait for one that cannot be; int() refuses 4300+ digits
    if len(port) > 5 or not 1 <= int(port) <= MAX_PORT:
        raise InputError("coordinator", coordinator, f"expected a port in 1..{MAX_PORT}")
    if not 0 <= process_id < num_processes:
        raise InputError("process id", process_id, f"expected 0..{num_processes - 1}")
    if backend != "jax":
        raise InputError("number of processes", num_processes, NEEDS_JAX)
    return Cluster(coordinator, num_processes, process_id)
