"""Real-image accuracy, calibration and the "I don't know" threshold, through digitnet's predict.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/real_images.py \
        --model runs/default --model runs/cnn [--realdigits ../shared/data/realdigits-dev]

Three sets of images, all predicted by `digitnet.inference.predict.predict` (the LiteRT export,
MNIST-style preprocessing) exactly as `digitnet predict` would:

- real: the labelled photos, scans and canvas drawings of --realdigits (per style);
- rendered: MNIST *test* digits (other writers than training's) drawn on paper and photographed,
  or drawn on a canvas (bench/synthetic.py: pens, paper, light, perspective, blur, noise, JPEG);
- non-digits: letters, scribbles, shapes, blank and noise pages, photo-like scenes.

For each model: accuracy on real and rendered digits, their ECE (15 bins), and for each candidate
`--min-confidence` the share of real digits, rendered digits and non-digits answered "unknown".
Prints a summary table per config (the README's) and writes bench/results/realdigits-<time>.json.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.synthetic import non_digits, realistic_digits  # noqa: E402
from digitnet.data import load_mnist, resolve_source  # noqa: E402
from digitnet.evaluation.calibration import expected_calibration_error  # noqa: E402
from digitnet.inference.predict import DEFAULT_MIN_CONFIDENCE, predict  # noqa: E402

DEFAULT_REALDIGITS = REPO.parent / "shared" / "data" / "realdigits-dev"
THRESHOLDS = (0.0, 0.3, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
RENDERED = 300  # rendered MNIST test digits


def read_labels(folder: Path) -> list[dict]:
    with (folder / "labels.csv").open() as handle:
        return list(csv.DictReader(handle))


def write_images(workdir: Path, data_dir: str | None, rendered: int, seed: int) -> dict:
    """Generate the rendered digits and the non-digits as files; {set: [(path, label, group)]}."""
    workdir.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist(resolve_source(data_dir))
    sets: dict = {"rendered": [], "non_digits": []}
    for index, (image, label, style) in enumerate(
            realistic_digits(mnist.x_test, mnist.y_test, rendered, seed)):
        path = workdir / f"digit_{index:04d}.png"
        image.save(path)
        sets["rendered"].append((str(path), label, style))
    for index, (image, kind) in enumerate(non_digits(seed)):
        path = workdir / f"other_{index:04d}.png"
        image.save(path)
        sets["non_digits"].append((str(path), None, kind))
    return sets


def real_set(folder: Path) -> list[tuple]:
    return [(str(folder / row["file"]), int(row["label"]), row["style"])
            for row in read_labels(folder)]


def answers(model: str, items: list[tuple]) -> list[dict]:
    """One {label, group, digit (None: no ink), probability} per image."""
    results = list(predict([path for path, _, _ in items], model, top_k=1, min_confidence=0.0))
    return [{"label": label, "group": group, "digit": result.digit,
             "probability": result.probability}
            for (_, label, group), result in zip(items, results)]


def refused(rows: list[dict], threshold: float) -> float:
    """Share answered "unknown" at `threshold` (no ink is always unknown)."""
    return float(np.mean([row["digit"] is None or row["probability"] < threshold
                          for row in rows])) if rows else 0.0


def accuracy(rows: list[dict]) -> dict:
    """Accuracy overall and per group, with no threshold."""
    groups: dict = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row["digit"] == row["label"])
    hits = [hit for group in groups.values() for hit in group]
    return {"accuracy": float(np.mean(hits)), "images": len(hits),
            "per_group": {group: {"accuracy": float(np.mean(h)), "images": len(h)}
                          for group, h in sorted(groups.items())}}


def ece(rows: list[dict]) -> float:
    """ECE of the top probability: a one-hot-like (N, 2) stand-in is enough for max/argmax."""
    probabilities = np.array([[row["probability"], 1 - row["probability"]] for row in rows])
    correct = np.array([row["digit"] == row["label"] for row in rows])
    return expected_calibration_error(probabilities, np.where(correct, 0, 1))


def measure(model: str, sets: dict) -> dict:
    """Every number of one model."""
    rows = {name: answers(model, items) for name, items in sets.items()}
    digits = rows["real"] + rows["rendered"]
    kinds: dict = defaultdict(list)
    for row in rows["non_digits"]:
        kinds[row["group"]].append(row)
    return {
        "real": accuracy(rows["real"]), "rendered": accuracy(rows["rendered"]),
        "ece_real": ece(rows["real"]), "ece_rendered": ece(rows["rendered"]),
        "ece_digits": ece(digits),
        "refusals": [{"min_confidence": t, "real_refused": refused(rows["real"], t),
                      "rendered_refused": refused(rows["rendered"], t),
                      "non_digits_refused": refused(rows["non_digits"], t),
                      "per_kind": {k: refused(v, t) for k, v in sorted(kinds.items())}}
                     for t in sorted({*THRESHOLDS, DEFAULT_MIN_CONFIDENCE})],
    }


def at_default(result: dict) -> dict:
    return next(r for r in result["refusals"] if r["min_confidence"] == DEFAULT_MIN_CONFIDENCE)


def summary_table(results: dict) -> str:
    """The README's table: one row per model at the default --min-confidence."""
    lines = ["| model | real digits right | rendered digits right | ECE real / rendered | "
             "real refused | rendered refused | non-digits refused |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, result in results.items():
        row = at_default(result)
        lines.append(f"| `{model}` | {result['real']['accuracy']:.1%} | "
                     f"{result['rendered']['accuracy']:.1%} | {result['ece_real']:.1%} / "
                     f"{result['ece_rendered']:.1%} | {row['real_refused']:.1%} | "
                     f"{row['rendered_refused']:.1%} | {row['non_digits_refused']:.1%} |")
    return "\n".join(lines)


def print_model(model: str, result: dict) -> None:
    for name in ("real", "rendered"):
        part = result[name]
        groups = ", ".join(f"{g} {v['accuracy']:.1%} ({v['images']})"
                           for g, v in part["per_group"].items())
        print(f"{model}: {name} {part['accuracy']:.1%} of {part['images']} [{groups}]")
    print(f"  ECE real {result['ece_real']:.1%}, rendered {result['ece_rendered']:.1%}")
    for row in result["refusals"]:
        kinds = " ".join(f"{k} {v:.0%}" for k, v in row["per_kind"].items())
        print(f"  min-confidence {row['min_confidence']:.3f}: refused real "
              f"{row['real_refused']:.1%}, rendered {row['rendered_refused']:.1%}, non-digits "
              f"{row['non_digits_refused']:.1%} [{kinds}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True,
                        help="run directory or model file; repeatable")
    parser.add_argument("--realdigits", type=Path, default=DEFAULT_REALDIGITS)
    parser.add_argument("--data-dir", help="MNIST (for the rendered digits); default as train")
    parser.add_argument("--rendered", type=int, default=RENDERED, help="rendered digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"real": real_set(args.realdigits),
                **write_images(Path(tmp), args.data_dir, args.rendered, args.seed)}
        for model in args.model:
            results[model] = measure(model, sets)
            print_model(model, results[model])
    print(f"\nAt the default --min-confidence {DEFAULT_MIN_CONFIDENCE}:\n" + summary_table(results))
    out = REPO / "bench" / "results" / f"realdigits-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
