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
    import_library("tensorflow")


def import_library(name: str) -> None:
    """Import Keras' backend library `name` ("tensorflow" or "jax"), and Keras when it is to run
    on it, without their start-up notices.

    Neither imports the optional libraries of OPTIONAL_IMPORTS (`modules_hidden`). The garbage
    collector is off meanwhile: the imports leave almost no garbage (about 1,200 objects for
    TensorFlow and Keras), and the full collections they set off walked every object imported so
    far (0.3-0.9 s of TensorFlow's 3-4 s of CPU time). Then the imported objects leave its sight
    for good (gc.freeze): they live as long as the process, and every full collection walked all
    of them (the LiteRT converter's own gc.collect took 1.8 s of each training run).
    """
    import gc
    import importlib

    collecting = gc.isenabled()
    gc.disable()
    try:
        with silenced_stderr(), modules_hidden(OPTIONAL_IMPORTS[name]):
            importlib.import_module(name)
            if os.environ.get("KERAS_BACKEND") == name:
                importlib.import_module("keras")
    finally:
        if collecting:
            gc.enable()
    gc.freeze()


# Libraries that TensorFlow and Keras import whenever they are installed, for parts digitnet never
# calls: TensorFlow's LiteRT module imports JAX (the jax extra) for its JAX converter and its
# legacy tf.keras engine SciPy for sparse inputs; Keras' plot and box-drawing helpers import
# matplotlib.pyplot and OpenCV. They cost each process 160 MB and 1-3 s (bench/train_process.py);
# digitnet imports them itself where it uses them. JAX itself uses SciPy.
OPTIONAL_IMPORTS = {"tensorflow": ("jax", "scipy", "matplotlib", "cv2"),
                    "jax": ("matplotlib", "cv2")}


@contextlib.contextmanager
def modules_hidden(names):
    """`import NAME` fails inside this block for each of `names` not imported already."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # an import of a None entry raises ImportError
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


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
