"""The backend seam: what differs between Keras on TensorFlow and Keras on JAX.

One module per backend (tensorflow.py, jax.py) with the same small interface:

    NAME                                    "tensorflow" or "jax"
    versions() -> dict                      library versions for the manifest
    select_devices(device, count) -> Placement   the devices to train on, and their description
    seed_everything(seed, jit_compile)      seeds and determinism
    jit_compile(training) -> bool           what to pass to model.compile
    distribution(devices)                   a context manager: data-parallel over `devices`
    fuse_adam(optimizer) -> optimizer       TensorFlow's one-pass Adam kernel, or as is
    learning_rate(optimizer) -> float       the rate of the next step, for the logs
    training_batches(x, y, training, first_epoch, steps, outliers, preprocessed)   the input
                                            pipeline and augmentation
    prepare_export()                        start what the export will need (JAX: its process)
    start_litert_export(model, keras_path, tflite_path) -> wait()   the LiteRT file of a saved
                                            model; wait() returns once it is written
    abandon_export(tflite_path)             the run failed before wait(): end the export started
                                            (JAX: its process) and remove its partial file
    join_cluster(cluster)                   join a multi-process job (JAX; refused on TensorFlow)

Keras picks its backend once, from KERAS_BACKEND, when it is first imported; `use` sets it from
`training.backend` before that, and `current` returns the module of the backend Keras runs on.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from digitnet.backend import import_library, quiet_backend
from digitnet.errors import DigitnetError


def use(name: str) -> None:
    """Make Keras run on `name` ("tensorflow" or "jax") and import that library quietly; call
    before Keras is imported.

    Raises:
      DigitnetError: JAX is not installed, or Keras already runs on another backend.
    """
    if "keras" in sys.modules:
        check_loaded(name)
        return
    check_available(name)
    os.environ["KERAS_BACKEND"] = name
    quiet_backend()
    import_library(name)  # the backend's library has the backend's name


def check_available(name: str) -> None:
    """Refuse a backend that is not installed (without importing anything).

    Raises:
      DigitnetError: JAX is not installed.
    """
    if name == "jax" and importlib.util.find_spec("jax") is None:
        raise DigitnetError("training.backend: 'jax' needs JAX (pip install 'digitnet[jax]')")


def check_loaded(name: str) -> None:
    """Refuse a backend other than the one Keras was imported with in this process."""
    import keras

    loaded = keras.backend.backend()
    if loaded != name:
        raise DigitnetError(f"training.backend: expected {loaded!r} (Keras in this process was "
                            f"imported with it; set KERAS_BACKEND={name} before importing "
                            f"Keras), received {name!r}")


def current():
    """The module for the backend Keras runs on."""
    import keras

    return importlib.import_module(f"{__name__}.{keras.backend.backend()}")
