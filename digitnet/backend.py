"""Keras on TensorFlow, imported quietly and only when a command needs it; the CPUs there are."""

from __future__ import annotations

import contextlib
import os
import sys


def available_cpus() -> int:
    """The CPUs this process may run on: a container or taskset may allow fewer than the
    machine has (os.cpu_count), and a worker per CPU it cannot use only waits its turn."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def quiet_backend() -> None:
    """Choose TensorFlow for Keras and hide its C++ start-up log lines and Keras' warnings."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.filterwarnings("ignore", module="keras")


@contextlib.contextmanager
def silenced_stderr():
    """Send file descriptor 2 to /dev/null: C++ libraries log there, past Python's reach."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow without the CUDA and oneDNN notices it prints before its own log level
    applies (TF_CPP_MIN_LOG_LEVEL cannot hide them)."""
    quiet_backend()
    with silenced_stderr():
        import tensorflow  # noqa: F401


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Fail in one line, naming the pip install that adds `module`, when it is not installed.

    Raises:
      DigitnetError: e.g. "exporting ONNX needs tf2onnx: pip install 'digitnet[onnx]'".
    """
    import importlib.util

    from digitnet.errors import DigitnetError

    if importlib.util.find_spec(module) is None:
        raise DigitnetError(f"{purpose} needs {module}, which is not installed: "
                            f"pip install 'digitnet[{extra}]'")
