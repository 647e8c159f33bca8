"""LiteRT (.tflite, float32): phones, microcontrollers, and predict without TensorFlow."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from digitnet.export import input_signature
from digitnet.runs import layout

FORMAT = "litert"
SUFFIX = layout.LITERT_SUFFIX
LIBRARIES = ("tensorflow", "ai-edge-litert")
NEEDS = ()  # nothing beyond the base install


def write(model, path: Path, representative: np.ndarray | None = None) -> None:
    """Write `model` as a float32 LiteRT flatbuffer at `path` (representative: unused)."""
    with contextlib.redirect_stdout(io.StringIO()):  # the converter chats on stdout
        model.export(str(path), format="litert", verbose=False, input_signature=input_signature())


def export_litert(model, path: Path) -> Path:
    """Write `model` as a float32 LiteRT flatbuffer at `path`, atomically.

    Args:
      model: a built Keras model taking (N, 28, 28, 1) float32 images.
      path: the .tflite file to write (a run's export record is training's to write).

    Returns:
      The path written.
    """
    with layout.atomic_path(path) as tmp:
        write(model, tmp)
    return path


if __name__ == "__main__":  # python -m digitnet.export.litert MODEL.keras OUT.tflite
    import os
    import sys

    from digitnet.backend import import_tensorflow_quietly
    from digitnet.errors import DigitnetError, first_line
    from digitnet.export import converter

    if len(sys.argv[1:]) != 2 and sys.argv[1:] != ["-"]:
        sys.exit("usage: python -m digitnet.export.litert MODEL.keras OUT.tflite (or - to read "
                 "the two paths from standard input)")
    converter.die_with_parent()
    import_tensorflow_quietly()
    import keras

    # "-": the two paths come on standard input once they exist (the training process starts
    # this one early, so that TensorFlow is imported by then; digitnet/export/converter.py)
    paths = sys.argv[1:] if sys.argv[1:] != ["-"] else converter.read_paths()
    failure = None  # one line on standard error (the training process quotes the last line)
    try:
        if paths:
            export_litert(keras.saving.load_model(paths[0], compile=False), Path(paths[1]))
    except DigitnetError as error:  # names the file already
        failure = str(error)
    except Exception as error:  # a missing or corrupt model: Keras's own words
        failure = f"{type(error).__name__}: {first_line(error)}"
    if failure:
        sys.stderr.write(f"{failure}\n")
    # The file is written and renamed into place (or the export failed): leave without
    # TensorFlow's teardown, which the training process would wait for
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failure else 0)
