"""TensorFlow SavedModel (a folder): TF Serving and TensorFlow programs.

Its `serving_default` (and `serve`) signature takes `images`, float32 (N, 28, 28, 1), and
returns `output_0`, float32 (N, 10) probabilities.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from digitnet.export import input_signature

FORMAT = "saved-model"
SUFFIX = "-savedmodel"
LIBRARIES = ("tensorflow", "keras")
NEEDS = ()  # nothing beyond the base install


def write(model, path: Path, representative: np.ndarray | None = None) -> None:
    """Write `model` as a SavedModel folder at `path` (representative: unused)."""
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(path), format="tf_saved_model", verbose=False,
                     input_signature=input_signature())
