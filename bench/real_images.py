"""Real-image accuracy and the "I don't know" threshold, through digitnet's own predict.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/real_images.py \
        --model runs/default --model runs/cnn [--realdigits ../shared/data/realdigits-dev]

For each model: accuracy on the labelled real photos, scans and drawings, overall and per style;
then the largest probability the model gives to real digits and to things that are not digits
(blank pages, noise, letters, scribbles, generated here), and for each candidate
`--min-confidence` how many real digits are wrongly refused and how many non-digits are refused.
Writes bench/results/realdigits-<time>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from digitnet.inference.predict import predict  # noqa: E402

DEFAULT_REALDIGITS = REPO.parent / "shared" / "data" / "realdigits-dev"
THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LETTERS = "AEFHKMNRVWXY"  # letters that look least like any digit


def read_labels(folder: Path) -> list[dict]:
    with (folder / "labels.csv").open() as handle:
        return list(csv.DictReader(handle))


def real_accuracy(model: str, folder: Path) -> tuple[dict, list[float]]:
    """Accuracy overall and per style, and the top probability of each real image."""
    rows = read_labels(folder)
    results = list(predict([str(folder / row["file"]) for row in rows], model, top_k=1,
                           min_confidence=0.0))
    per_style: dict = defaultdict(lambda: [0, 0])
    for row, result in zip(rows, results):
        per_style[row["style"]][0] += result.digit == int(row["label"])
        per_style[row["style"]][1] += 1
    correct = sum(hit for hit, _ in per_style.values())
    summary = {"accuracy": correct / len(rows), "images": len(rows),
               "per_style": {style: {"accuracy": hit / n, "images": n}
                             for style, (hit, n) in sorted(per_style.items())}}
    return summary, [result.probability for result in results]


def non_digits(folder: Path, count: int = 12, seed: int = 0) -> list[Path]:
    """Blank pages, noise, letters and scribbles, as a user might hand predict by mistake."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = [Image.new("L", (200, 200), 255), Image.new("L", (200, 200), 0)]
    images += [Image.fromarray(rng.integers(0, 256, (120, 120), dtype=np.uint8))
               for _ in range(count // 2)]
    images += [letter(char) for char in LETTERS[:count]]
    images += [scribble(rng) for _ in range(count)]
    paths = []
    for index, image in enumerate(images):
        paths.append(folder / f"nondigit_{index:03d}.png")
        image.save(paths[-1])
    return paths


def letter(char: str) -> Image.Image:
    """A dark capital letter on white paper."""
    image = Image.new("L", (160, 160), 255)
    font = ImageFont.load_default(size=120)
    ImageDraw.Draw(image).text((25, 10), char, fill=0, font=font)
    return image


def scribble(rng: np.random.Generator) -> Image.Image:
    """A random tangle of strokes."""
    image = Image.new("L", (160, 160), 255)
    points = [tuple(p) for p in rng.integers(10, 150, size=(12, 2))]
    ImageDraw.Draw(image).line(points, fill=0, width=6)
    return image


def refusal_table(real: list[float], other: list[float]) -> list[dict]:
    """For each threshold: the share of real digits and of non-digits answered 'unknown'."""
    return [{"min_confidence": t,
             "real_refused": float(np.mean(np.array(real) < t)),
             "non_digits_refused": float(np.mean(np.array(other) < t))} for t in THRESHOLDS]


def measure(model: str, folder: Path, workdir: Path) -> dict:
    """Real accuracy and the refusal table for one model."""
    accuracy, real_probabilities = real_accuracy(model, folder)
    other = [r.probability for r in predict([str(p) for p in non_digits(workdir)], model,
                                            top_k=1, min_confidence=0.0)]
    return {**accuracy, "refusals": refusal_table(real_probabilities, other)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True,
                        help="run directory or model file; repeatable")
    parser.add_argument("--realdigits", type=Path, default=DEFAULT_REALDIGITS)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.model:
            results[model] = measure(model, args.realdigits, Path(tmp) / "nondigits")
            result = results[model]
            styles = ", ".join(f"{s} {v['accuracy']:.1%} ({v['images']})"
                               for s, v in result["per_style"].items())
            print(f"{model}: {result['accuracy']:.1%} of {result['images']} real images "
                  f"[{styles}]")
            for row in result["refusals"]:
                print(f"  min-confidence {row['min_confidence']:.1f}: real digits refused "
                      f"{row['real_refused']:.1%}, non-digits refused "
                      f"{row['non_digits_refused']:.1%}")
    out = REPO / "bench" / "results" / f"realdigits-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
