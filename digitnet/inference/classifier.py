"""Load a trained model for inference: images in, ten probabilities out.

A run's `model-best.tflite` (LiteRT) answers without importing TensorFlow, in a tenth of a second;
a `.keras` file without one falls back to Keras, which takes a few seconds to import.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from digitnet.backend import silenced_stderr
from digitnet.errors import DigitnetError
from digitnet.runs.layout import KERAS_SUFFIX, litert_path

LITERT_BATCH = 256  # fixed input batch for the interpreter; the last chunk is padded


def first_line(error: Exception) -> str:
    """The first line of an exception's message, trimmed: errors stay one line."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


class KerasClassifier:
    """A saved `.keras` model; importing Keras (and TensorFlow) takes a few seconds."""

    def __init__(self, path: Path):
        from digitnet.backend import import_tensorflow_quietly

        import_tensorflow_quietly()
        import keras

        if not zipfile.is_zipfile(path):  # Keras would say "file not found" for a file it found
            raise DigitnetError(f"{path}: cannot load Keras model (not a .keras zip archive)")
        try:
            self.model = keras.saving.load_model(path, compile=False)
        except Exception as error:  # Keras raises many types for a bad archive
            raise DigitnetError(f"{path}: cannot load Keras model ({type(error).__name__}: "
                                f"{first_line(error)})") from None
        self.path = path

    def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        if len(images) == 0:
            return np.zeros((0, 10), np.float32)
        return np.asarray(self.model.predict(images, batch_size=batch_size, verbose=0))


class LiteRTClassifier:
    """A LiteRT flatbuffer run by ai-edge-litert's interpreter: no TensorFlow import."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with silenced_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate" from C++
                self.interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
        except (ValueError, RuntimeError) as error:
            raise DigitnetError(f"{path}: cannot load LiteRT model ({first_line(error)})") from None
        self.path = path
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = 0

    def resize(self, batch: int) -> None:
        """Set the interpreter's input batch size (reallocates only on a change)."""
        if batch != self.batch:
            self.interpreter.resize_tensor_input(self.input, (batch, 28, 28, 1))
            with silenced_stderr():
                self.interpreter.allocate_tensors()
            self.batch = batch

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if len(images) <= LITERT_BATCH:  # one image or a few: no padding work
            return self.run(images) if len(images) else np.zeros((0, 10), np.float32)
        chunks = [self.run_padded(images[i: i + LITERT_BATCH])
                  for i in range(0, len(images), LITERT_BATCH)]
        return np.concatenate(chunks)

    def run_padded(self, chunk: np.ndarray) -> np.ndarray:
        """Run a chunk at the fixed batch size, padding the last one."""
        padded = np.zeros((LITERT_BATCH, 28, 28, 1), np.float32)
        padded[: len(chunk)] = chunk
        return self.run(padded)[: len(chunk)]

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.resize(len(batch))
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


def load_classifier(path: Path, backend: str = "auto"):
    """The classifier for a model file.

    Args:
      path: a .keras or .tflite file.
      backend: "auto" (the .tflite beside a .keras file when present, else Keras), "keras" or
        "litert".

    Returns:
      An object whose `predict(images)` returns (N, 10) probabilities.
    """
    path = Path(path)
    beside = litert_path(path)
    if backend == "keras" or (backend == "auto" and path.suffix == KERAS_SUFFIX
                              and not beside.is_file()):
        return KerasClassifier(path)
    return LiteRTClassifier(beside if path.suffix == KERAS_SUFFIX else path)
