"""ONNX (.onnx): ONNX Runtime in any language. Needs the extra: pip install 'digitnet[onnx]'.

Keras' own `model.export(format="onnx")` converts through tf2onnx's `from_function`
(tf2onnx's `from_keras` does not work with Keras 3: onnx/tensorflow-onnx#2348).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from digitnet.export import input_signature

FORMAT = "onnx"
SUFFIX = ".onnx"
LIBRARIES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime")
NEEDS = ("tf2onnx", "onnx", "onnxruntime")  # the `onnx` extra: converter, format, and the check


def write(model, path: Path, representative: np.ndarray | None = None) -> None:
    """Write `model` as an ONNX file at `path` (representative: unused)."""
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # one INFO line per graph pass
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # tf2onnx's numpy 2 FutureWarnings
        model.export(str(path), format="onnx", verbose=False, input_signature=input_signature())
