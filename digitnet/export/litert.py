"""Export a trained model to LiteRT (.tflite), so predict can run without TensorFlow."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from digitnet.runs import layout


def export_litert(model, path: Path) -> Path:
    """Write `model` as a float32 LiteRT flatbuffer at `path`, atomically.

    Args:
      model: a built Keras model taking (N, 28, 28, 1) float32 images.
      path: the .tflite file to write.

    Returns:
      The path written.
    """
    with layout.atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()):
        model.export(str(tmp), format="litert", verbose=False)  # the converter chats on stdout
    return path
