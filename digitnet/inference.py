"""Load a trained model for inference: images in, ten probabilities out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitnet.errors import DigitnetError


class KerasClassifier:
    """A saved `.keras` model; importing Keras (and TensorFlow) takes a few seconds."""

    def __init__(self, path: Path):
        import keras

        try:
            self.model = keras.saving.load_model(path, compile=False)
        except Exception as error:  # Keras raises many types for a bad archive
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise DigitnetError(f"{path}: cannot load Keras model ({type(error).__name__}: "
                                f"{first_line[:200]})") from None
        self.path = path

    def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        if len(images) == 0:
            return np.zeros((0, 10), np.float32)
        return np.asarray(self.model.predict(images, batch_size=batch_size, verbose=0))


def load_classifier(path: Path) -> KerasClassifier:
    """The classifier stored at `path` (a .keras file)."""
    return KerasClassifier(Path(path))
