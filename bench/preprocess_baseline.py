"""Accuracy on real users' digit images: plain resize versus MNIST-style preprocessing.

A development tool: for each model, prints the accuracy overall and per style of the
realdigits data set (photos, scans, canvas drawings) with two kinds of preprocessing.

    python bench/preprocess_baseline.py --model runs/latest/model.keras [--save DIR]
    python bench/preprocess_baseline.py --speed [--repeat 20]   # images/second
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from digitnet.images.batch import preprocess_files, save_preprocessed  # noqa: E402
from digitnet.images.decode import load_image  # noqa: E402
from digitnet.images.preprocess import to_mnist  # noqa: E402

DEFAULT_DATA_DIR = Path(
    os.environ.get("DIGITNET_REALDIGITS_DIR", REPO.parent / "shared/data/realdigits-dev"))


def plain_resize(image: Image.Image) -> np.ndarray:
    """The naive baseline: grayscale, invert a light background, squash to 28x28."""
    gray = np.asarray(image.convert("L").resize((28, 28), Image.Resampling.BILINEAR), np.float32)
    gray /= 255.0
    return 1.0 - gray if np.median(gray) > 0.5 else gray


METHODS = {"plain resize": plain_resize, "to_mnist": to_mnist}


def read_labels(data_dir: Path) -> list[dict]:
    """The rows of labels.csv: file, label, style, source_repo, source_path."""
    with (data_dir / "labels.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def preprocess_all(rows: list[dict], data_dir: Path) -> dict[str, np.ndarray]:
    """Each method's inputs for every image, as arrays (N, 28, 28)."""
    images = [load_image(data_dir / row["file"]) for row in rows]
    return {name: np.stack([method(image) for image in images])
            for name, method in METHODS.items()}


def score(predicted: np.ndarray, rows: list[dict]) -> dict[str, float]:
    """Accuracy overall and per style."""
    hits = defaultdict(list)
    for guess, row in zip(predicted, rows):
        correct = int(guess) == int(row["label"])
        hits["all"].append(correct)
        hits[row["style"]].append(correct)
    return {style: float(np.mean(marks)) for style, marks in hits.items()}


def measure(model_path, data_dir=DEFAULT_DATA_DIR) -> dict:
    """Accuracy of one model on the realdigits images, per preprocessing method and style.

    Args:
      model_path: a saved .keras model taking (N, 28, 28, 1) floats in [0, 1].
      data_dir: a folder with the images and labels.csv.

    Returns:
      {"count": N, "styles": {style: count}, "accuracy": {method: {"all"|style: fraction}}}.
    """
    import keras

    data_dir = Path(data_dir)
    rows = read_labels(data_dir)
    model = keras.saving.load_model(model_path, compile=False)
    accuracy = {}
    for name, inputs in preprocess_all(rows, data_dir).items():
        probabilities = model.predict(inputs[..., None], verbose=0)
        accuracy[name] = score(np.argmax(probabilities, axis=1), rows)
    styles = defaultdict(int)
    for row in rows:
        styles[row["style"]] += 1
    return {"count": len(rows), "styles": dict(styles), "accuracy": accuracy}


def save_side_by_side(data_dir: Path, folder: Path) -> None:
    """Write each image's plain-resize and to_mnist inputs next to each other, 4x enlarged."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = read_labels(data_dir)
    for name, inputs in preprocess_all(rows, data_dir).items():
        for row, array in zip(rows, inputs):
            stem = Path(row["file"]).stem
            save_preprocessed(array, folder / f"{stem}.{name.replace(' ', '_')}.png")
    for row in rows:
        stem = Path(row["file"]).stem
        parts = [Image.open(folder / f"{stem}.{n.replace(' ', '_')}.png") for n in METHODS]
        pair = Image.new("L", (28 * len(parts) + 2, 28), 128)
        for i, part in enumerate(parts):
            pair.paste(part, (i * 30, 0))
        pair.resize((pair.width * 4, 112), Image.Resampling.NEAREST).save(folder / f"{stem}.png")


def speed(data_dir: Path, repeat: int, workers: int | None) -> float:
    """Files preprocessed per second by preprocess_files, decoding included."""
    paths = [data_dir / row["file"] for row in read_labels(data_dir)] * repeat
    preprocess_files(paths[:64], workers=workers)  # start the worker processes first
    start = time.perf_counter()
    preprocess_files(paths, workers=workers)
    return len(paths) / (time.perf_counter() - start)


def report(model_path: str, result: dict) -> None:
    """Print one model's accuracy table."""
    styles = ["all", *sorted(result["styles"])]
    print(f"\n{model_path}  ({result['count']} images)")
    print(f"{'style':24}{'n':>4}" + "".join(f"{name:>14}" for name in result["accuracy"]))
    for style in styles:
        count = result["count"] if style == "all" else result["styles"][style]
        cells = "".join(f"{acc[style]:>14.1%}" for acc in result["accuracy"].values())
        print(f"{style:24}{count:>4}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="a .keras model")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--save", type=Path, help="write the preprocessed images here")
    parser.add_argument("--speed", action="store_true", help="measure images/second")
    parser.add_argument("--repeat", type=int, default=20, help="passes over the data (--speed)")
    args = parser.parse_args()
    if args.speed:
        for workers in (1, None):
            rate = speed(args.data_dir, args.repeat, workers)
            print(f"preprocess_files, workers={workers or os.cpu_count()}: {rate:.0f} images/s")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    for model_path in args.model:
        report(model_path, measure(model_path, args.data_dir))
    if args.save:
        save_side_by_side(args.data_dir, args.save)


if __name__ == "__main__":
    main()
