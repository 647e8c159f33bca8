"""Accuracy on real and realistic handwriting, per style, for several models and generated seeds.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/handwriting.py \
        --model runs/default --model runs/cnn --seeds 0 1 2

Every image is predicted by `digitnet.inference.predict.predict`, as `digitnet predict` does:

- real: the labelled photos, scans and canvas drawings of --realdigits, per style and source;
- rendered: bench/real_images.py's rendered MNIST test digits (photos and canvas drawings);
- varied: MNIST test digits in the held-out styles of `bench.synthetic.varied_digits` (cells of
  sheets many people filled in, felt marker, fine pen, strong slant, near the frame's edge,
  thick canvas strokes), one set per --seeds value;
- continental: MNIST test 1s with a flag and 7s with a bar across the stem, as writers outside
  the US write them (`bench.synthetic.continental_digits`), one set per --seeds value.

Prints one table per set (rows: models; columns: styles) and writes
bench/results/handwriting-<time>.json.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.real_images import model_and_data_parser, read_labels, real_set  # noqa: E402
from bench.synthetic import continental_digits, realistic_digits, varied_digits  # noqa: E402
from digitnet.data import load_mnist, resolve_source  # noqa: E402
from digitnet.inference.predict import predict  # noqa: E402


def answers(model: str, sets: dict) -> dict:
    """{set name: one {label, group, digit, probability} per image}: the top digit, never
    "unknown" (None only when no ink was found). An image in several sets (the real ones, by
    style and by source) is predicted once."""
    paths = list(dict.fromkeys(path for items in sets.values() for path, _, _ in items))
    results = dict(zip(paths, predict(paths, model, top_k=1, min_confidence=0.0,
                                      max_entropy=math.inf)))
    return {name: [{"label": label, "group": group, "digit": results[path].digit,
                    "probability": results[path].probability} for path, label, group in items]
            for name, items in sets.items()}


def accuracy(rows: list[dict]) -> dict:
    """Accuracy overall and per group."""
    groups: dict = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row["digit"] == row["label"])
    hits = [hit for group in groups.values() for hit in group]
    return {"accuracy": float(np.mean(hits)), "images": len(hits),
            "per_group": {group: {"accuracy": float(np.mean(h)), "images": len(h)}
                          for group, h in sorted(groups.items())}}


def sources(folder: Path) -> list[tuple]:
    """The real images grouped by where they came from (a writer or two each)."""
    return [(str(folder / row["file"]), int(row["label"]), row["source_repo"].split("/")[0])
            for row in read_labels(folder)]


def generated(workdir: Path, data_dir: str | None, count: int, seeds: list[int]) -> dict:
    """{set name: [(path, label, style)]} of the rendered, varied and continental digits,
    written as PNGs."""
    mnist = load_mnist(resolve_source(data_dir))
    sets = {}
    makers = [("rendered", seeds[0], realistic_digits)]
    makers += [(f"varied-{seed}", seed, varied_digits) for seed in seeds]
    makers += [(f"continental-{seed}", seed, continental_digits) for seed in seeds]
    for name, seed, make in makers:
        sets[name] = []
        for index, (image, label, style) in enumerate(make(mnist.x_test, mnist.y_test, count,
                                                           seed)):
            path = workdir / f"{name}_{index:04d}.png"
            image.save(path)
            sets[name].append((str(path), label, style))
    return sets


def table(name: str, results: dict) -> str:
    """Rows: models; columns: all, then each group."""
    groups = sorted({g for r in results.values() for g in r[name]["per_group"]})
    lines = [f"| {name} | all | " + " | ".join(groups) + " |",
             "| --- " * (len(groups) + 2) + "|"]
    for model, result in results.items():
        part = result[name]
        cells = [f"{part['per_group'][g]['accuracy']:.1%}" if g in part["per_group"] else ""
                 for g in groups]
        lines.append(f"| `{model}` | **{part['accuracy']:.1%}** ({part['images']}) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = model_and_data_parser(__doc__)
    parser.add_argument("--count", type=int, default=300, help="generated digits per set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"real": real_set(args.realdigits), "real-by-source": sources(args.realdigits),
                **generated(Path(tmp), args.data_dir, args.count, args.seeds)}
        for model in args.model:
            rows = answers(model, sets)
            results[model] = {}
            for name, items in sets.items():
                results[model][name] = accuracy(rows[name])
                results[model][name]["wrong"] = [
                    {"path": Path(path).name, "label": row["label"], "digit": row["digit"],
                     "probability": round(row["probability"], 4)}
                    for (path, _, _), row in zip(items, rows[name])
                    if row["digit"] != row["label"]]
    for name in sets:
        print(table(name, results) + "\n")
    out = REPO / "bench" / "results" / f"handwriting-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
