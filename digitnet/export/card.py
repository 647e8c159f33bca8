"""The JSON card beside each export: what goes in and out, how well it scores, what made it.

A card is `<export name>.json` (model-best.onnx -> model-best.onnx.json). Its `sha256` is the
file's; for a SavedModel folder, the sha256 of the `sha256sum`-style listing of its files
("<sha256>  <relative path>\\n", sorted by path).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import time
from pathlib import Path

import numpy as np

from digitnet import __version__
from digitnet.runs.layout import TIME_FORMAT, export_record, file_sha256

INPUT = {
    "shape": ["N", 28, 28, 1], "dtype": "float32", "range": [0.0, 1.0],
    "image": "a 28x28 grayscale digit, white ink (1.0) on black (0.0), MNIST-centred: its "
             "longer side 20 px, its centre of mass at the centre of the field",
    "from_a_photo": "digitnet's preprocessing: digitnet.images.preprocess.preprocess_file(path) "
                    "(or digitnet.images.preprocess.to_mnist(PIL image)) returns this 28x28 "
                    "float32 array; add the batch and channel axes. `digitnet predict "
                    "--save-preprocessed DIR` shows it for any image",
}
OUTPUT = {
    "shape": ["N", 10], "dtype": "float32",
    "meaning": "the probabilities of the digits 0-9 (index = digit), summing to 1: the ones "
               "`digitnet predict` shows, calibration included",
}


def card_path(export: Path) -> Path:
    """Where the card of `export` goes: beside it, its name plus .json. For the run's own
    model-best.tflite that is the model-file gate's record too (layout.export_record): the card
    holds the record's keys, format, sha256 and source {file, sha256}."""
    return export_record(export)


def tree_sha256(path: Path) -> str:
    """The sha256 of a file, or of a folder's sorted `sha256sum` listing."""
    if not path.is_dir():
        return file_sha256(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = "".join(f"{file_sha256(p)}  {p.relative_to(path).as_posix()}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def tree_size(path: Path) -> int:
    """Bytes of a file, or of all the files in a folder."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def versions(libraries: tuple[str, ...]) -> dict:
    """digitnet's, Python's, numpy's and each library's installed version."""
    found = {"digitnet": __version__, "python": platform.python_version(),
             "numpy": np.__version__}
    for name in libraries:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def quantized(scale: tuple[float, int], rule: str) -> dict:
    return {"scale": float(scale[0]), "zero_point": int(scale[1]), "rule": rule}


def build_card(fmt: str, export: Path, keras_path: Path, keras_sha256: str, classifier,
               check: dict, libraries: tuple[str, ...]) -> dict:
    """The card of a verified export.

    Args:
      fmt: the --format name.
      export: the export file or folder, as it will be named.
      keras_path: the .keras model it came from.
      keras_sha256: that file's sha256 (the model-file gate hashed it already).
      classifier: the export loaded (its input name and quantization go on the card).
      check: the verification's numbers (test accuracy, agreement with Keras).
      libraries: the packages the format depends on.

    Returns:
      A JSON-ready dict.
    """
    model_input = {"name": classifier.input_name, **INPUT}
    model_output = dict(OUTPUT)
    if getattr(classifier, "input_scale", (0, 0))[0]:  # an int8 LiteRT file
        model_input.update(dtype="int8", quantized=quantized(
            classifier.input_scale, "q = clip(round(x / scale) + zero_point, -128, 127) "
            "for the float32 x above"))
        model_output.update(dtype="int8", quantized=quantized(
            classifier.output_scale, "probability = (q - zero_point) * scale"))
    return {
        "format": fmt, "file": export.name, "bytes": tree_size(export),
        "sha256": tree_sha256(export),
        "source": {"file": keras_path.name, "sha256": keras_sha256},
        "input": model_input, "output": model_output,
        "test_accuracy": check.pop("test_accuracy"), "verification": check,
        "versions": versions(libraries), "created": time.strftime(TIME_FORMAT),
    }
