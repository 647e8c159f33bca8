"""The model a server answers with: loaded once through the inference gate, with its facts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet import __version__
from digitnet.config import parse_yaml
from digitnet.inference.classifier import load_classifier
from digitnet.inference.modelfile import ModelFile
from digitnet.runs import layout
from digitnet.runs.listing import read_mapping

QUICK_BACKENDS = ("litert", "onnx")  # model formats whose calls need no thread of their own


@dataclass
class ServedModel:
    """A loaded classifier and what /model says about it."""

    classifier: object  # predict(images (N, 28, 28, 1)) -> probabilities (N, 10)
    info: dict
    source: Path  # the model file the inference gate was given (workers load it again)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, 10) for (N, 28, 28) float32 images in [0, 1]."""
        return self.classifier.predict(images[..., None])

    @property
    def quick(self) -> bool:
        """Whether a call takes well under a millisecond (LiteRT, ONNX Runtime: tens of
        microseconds per image), so that it may run on the event loop without a thread."""
        return self.info["backend"] in QUICK_BACKENDS


def load_served_model(model: str | Path | None) -> ServedModel:
    """Load a run's model (or a model file, or runs/latest) and check that it answers.

    The classifier comes from digitnet.inference.load_classifier, which decides which file is
    used (a run's LiteRT export without TensorFlow; Keras when there is none).

    Raises:
      DigitnetError: no such run or model, or a model that cannot be loaded.
    """
    classifier = load_classifier(model)  # its check has made the first (allocating) call
    model_file = classifier.model_file
    return ServedModel(classifier, describe(model_file), model_file.named)


def describe(model_file: ModelFile) -> dict:
    """/model's facts: run name, config name, test accuracy, the file used and its sha256."""
    run_dir = model_file.run_dir
    config, metrics = {}, {}
    if run_dir is not None:
        config, _ = read_mapping(run_dir / layout.CONFIG_FILE, parse_yaml)  # no aliases
        metrics, _ = read_mapping(run_dir / layout.METRICS_FILE, json.loads)
        if layout.model_replaced(run_dir, metrics, model_file.keras_sha256):
            metrics = {}  # its numbers are of the model that was there before
    return {
        "run": run_dir.name if run_dir is not None else None,
        "config": config.get("name"),
        "test_accuracy": metrics.get("test_accuracy"),
        "model": str(model_file.path),
        "backend": model_file.format,
        "sha256": model_file.sha256,
        "version": __version__,
    }
