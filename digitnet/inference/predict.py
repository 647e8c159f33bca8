"""Predict the digit in each of a user's images."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitnet.errors import DigitnetError, os_reason, printable
from digitnet.inference import DEFAULT_MAX_ENTROPY, DEFAULT_MIN_CONFIDENCE

if TYPE_CHECKING:
    from digitnet.images.batch import Preprocessed

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BATCH_SIZE = 1024  # images per model call: big enough to amortise the call, small in memory


@dataclass
class Prediction:
    """One image's answer, or the reason it has none."""

    file: str
    digit: int | None = None  # None when unknown or on error
    probability: float = 0.0
    top_k: list = field(default_factory=list)  # [{"digit": d, "probability": p}, ...]
    error: str | None = None
    model: str | None = None  # the model file that answered

    def to_json(self) -> dict:
        """predict --json's object; `model` only when known (the server names its model once,
        at GET /model, not in every answer)."""
        named = {"model": self.model} if self.model is not None else {}
        if self.error is not None:
            return {"file": self.file, "error": self.error, **named}
        return {"file": self.file, "digit": self.digit if self.digit is not None else "unknown",
                "probability": self.probability, "top_k": self.top_k, **named}


def expand_inputs(inputs: Iterable[str], stdin=None) -> Iterator[str]:
    """Files as given, folders searched recursively for images, '-' reads paths from stdin."""
    for item in inputs:
        if item == "-":
            stream = stdin or sys.stdin
            if stream is None:  # started with standard input closed (`<&-`)
                raise DigitnetError("-: standard input is closed (expected paths on it, one a "
                                    "line)")
            yield from (line.strip() for line in stream if line.strip())
        elif os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                        yield os.path.join(root, name)
        else:
            yield item


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """The entropy in nats of each row of (N, 10) probabilities: 0 when one digit has them all,
    ln 10 (2.303) when all ten are equal. Computed in float64 on each row scaled to sum to 1
    (an int8 model's rounded outputs may not), so it is never above ln 10; a zero adds nothing."""
    rows = np.clip(np.asarray(probabilities, np.float64), 0.0, None)
    totals = rows.sum(axis=1, keepdims=True)
    rows = np.divide(rows, totals, out=np.zeros_like(rows), where=totals > 0)
    logs = np.log(rows, out=np.zeros_like(rows), where=rows > 0)
    return -(rows * logs).sum(axis=1)


def unknown(probabilities: np.ndarray, min_confidence: float,
            max_entropy: float = DEFAULT_MAX_ENTROPY) -> np.ndarray:
    """Which rows of (N, 10) probabilities are answered "unknown": the top probability is below
    `min_confidence`, or their entropy is above `max_entropy` nats (the probabilities are spread
    over several digits, as they are for most things that are not digits). The same rule for
    predict, serve and every model format, since it needs nothing but the probabilities."""
    probabilities = np.asarray(probabilities)
    if len(probabilities) == 0:
        return np.zeros(0, bool)
    return (probabilities.max(axis=1) < min_confidence) | (entropy(probabilities) > max_entropy)


def answers(paths: list[str], probabilities: np.ndarray, top_k: int, min_confidence: float,
            has_ink: list[bool], max_entropy: float = DEFAULT_MAX_ENTROPY) -> list[Prediction]:
    """The prediction for each image of a batch (N, 10): its best digit, or unknown by the rule
    of `unknown` or when preprocessing found no ink at all (a blank page has no digit,
    whatever the thresholds). Sorted and rounded for all rows at once, which keeps the main
    process from slowing the preprocessing workers."""
    if not paths:
        return []
    best = np.argmax(probabilities, axis=1)
    confident = (~unknown(probabilities, min_confidence, max_entropy)).tolist()
    orders = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k].tolist()
    rows = probabilities.tolist()  # Python floats, exactly the float32 values
    return [Prediction(file=path, digit=b if ink and sure else None,
                       probability=round(row[b], 6),
                       top_k=[{"digit": d, "probability": round(row[d], 6)} for d in order])
            for path, b, sure, order, row, ink
            in zip(paths, best.tolist(), confident, orders, rows, has_ink)]


def save_inputs(paths: list[str], arrays: list[np.ndarray], folder: Path) -> None:
    """Write each preprocessed 28x28 input as a PNG named after its source file."""
    from digitnet.images.batch import save_preprocessed

    used: set[str] = set()
    for path, array in zip(paths, arrays):
        name = Path(path).stem
        while name in used:  # two inputs with the same name from different folders
            name += "_"
        used.add(name)
        save_preprocessed(array, folder / f"{name}.png")


def predict_batch(classifier, items: list[Preprocessed], top_k: int, min_confidence: float,
                  save_dir: Path | None, max_entropy: float = DEFAULT_MAX_ENTROPY
                  ) -> list[Prediction]:
    """Predict one batch of preprocessed images, keeping their order."""
    good = [item for item in items if item.error is None]
    paths, images = [item.path for item in good], [item.image for item in good]
    probabilities = classifier.predict(np.stack(images)[..., None]) if good else []
    if save_dir is not None and good:
        save_inputs(paths, images, save_dir)
    found = iter(answers(paths, probabilities, top_k, min_confidence,
                         [bool(image.any()) for image in images], max_entropy))
    # in order, not by path: a path given twice may be read once and refused once
    results = [next(found) if item.error is None
               else Prediction(file=item.path, error=str(item.error)) for item in items]
    for result in results:
        result.model = str(classifier.path)
    return results


def make_folder(folder: str | Path) -> Path:
    """Create `folder` (and its parents) for the preprocessed images, before any is predicted.

    Raises:
      DigitnetError: it cannot be created (under /proc, a read-only disk, below a file).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DigitnetError(f"{folder}: cannot create the folder for preprocessed images "
                            f"({os_reason(error)})") from None
    return folder


def predict(inputs: Iterable[str], model: str | Path | None = None, top_k: int = 3,
            min_confidence: float = DEFAULT_MIN_CONFIDENCE,
            save_dir: str | Path | None = None,
            max_entropy: float = DEFAULT_MAX_ENTROPY) -> Iterator[Prediction]:
    """Predict the digit in each image, batch by batch, in input order.

    Args:
      inputs: image files, folders (searched recursively) and '-' for paths on stdin.
      model: a run directory, a .keras or .tflite file, or None for runs/latest.
      top_k: how many of the most probable digits to report (1-10).
      min_confidence: below this top probability the digit is reported as unknown.
      save_dir: where to write the 28x28 images the model saw, or None.
      max_entropy: above this entropy of the ten probabilities (nats) the digit is reported as
        unknown too (see `unknown`); 2.31 (above ln 10) or more never refuses.

    Yields:
      One Prediction per image, naming the model file that answered; an unreadable image
      yields a Prediction with `error` set.

    Raises:
      DigitnetError: the model cannot be used, `save_dir` cannot be created, or no images.
    """
    from digitnet.images.batch import preprocess_stream
    from digitnet.inference.classifier import load_classifier

    inputs = list(inputs)  # named again in the error when none of them holds an image
    classifier = load_classifier(model)
    save_path = make_folder(save_dir) if save_dir is not None else None
    batch: list[Preprocessed] = []
    seen = 0
    # one stream over all the inputs: the workers preprocess the next batch while this one
    # is classified and printed
    for item in preprocess_stream(expand_inputs(inputs)):
        batch.append(item)
        seen += 1
        if len(batch) == BATCH_SIZE:
            yield from predict_batch(classifier, batch, top_k, min_confidence, save_path,
                                     max_entropy)
            batch = []
    if batch:
        yield from predict_batch(classifier, batch, top_k, min_confidence, save_path,
                                     max_entropy)
    if seen == 0:
        raise DigitnetError(f"no images found in {' '.join(inputs)} (expected image files, "
                            f"folders holding {'/'.join(sorted(IMAGE_EXTENSIONS))} files, "
                            f"or '-' with paths on stdin)")


def format_row(prediction: Prediction) -> str:
    """One table row: file, digit, probability, top-k (or the error)."""
    name = printable(prediction.file)  # a newline in a file name must not split the row
    if prediction.error is not None:
        return f"{name}  error: {printable(prediction.error)}"
    digit = "unknown" if prediction.digit is None else str(prediction.digit)
    others = "  ".join(f"{t['digit']}:{t['probability']:.3f}" for t in prediction.top_k)
    return f"{name}  {digit:>7}  {prediction.probability:.3f}  [{others}]"
