"""Digits as pen strokes, for drawing them on the serve page and for a model that knows them.

Each digit is a few polylines in a unit box (x right, y down), the way one draws it on a
canvas. `stroke_digits_dir` renders jittered copies through the same preprocessing as
predict and writes them as MNIST IDX files, so a tiny model trained on them in a second or
two reads these digits when a browser draws them.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from digitnet.images.preprocess import gray_to_mnist
from tests.conftest import idx_bytes


def arc(cx, cy, rx, ry, start, end, n=16):
    """Points on an ellipse from `start` to `end` degrees (0 = right, 90 = down)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(start, end, n)]


DIGIT_STROKES = {
    0: [arc(0.5, 0.5, 0.28, 0.42, -90, 270, 28)],
    1: [[(0.45, 0.12), (0.55, 0.08), (0.55, 0.92)]],
    2: [arc(0.5, 0.3, 0.25, 0.2, 190, 360, 10) + arc(0.5, 0.3, 0.25, 0.2, 0, 60, 5)
        + [(0.2, 0.9), (0.82, 0.9)]],
    3: [arc(0.48, 0.28, 0.24, 0.19, 200, 450, 14)[:-1] + arc(0.48, 0.7, 0.28, 0.22, -90, 160, 14)],
    4: [[(0.62, 0.08), (0.18, 0.62), (0.85, 0.62)], [(0.64, 0.3), (0.64, 0.95)]],
    5: [[(0.78, 0.1), (0.32, 0.1), (0.28, 0.46)] + arc(0.5, 0.66, 0.28, 0.24, -120, 150, 14)],
    6: [[(0.68, 0.08), (0.45, 0.25), (0.28, 0.5)] + arc(0.5, 0.68, 0.23, 0.23, 180, 540, 22)],
    7: [[(0.18, 0.1), (0.82, 0.1), (0.42, 0.92)]],
    8: [arc(0.5, 0.28, 0.2, 0.19, 90, 450, 18) + arc(0.5, 0.7, 0.25, 0.22, -90, 270, 20)],
    9: [arc(0.48, 0.32, 0.22, 0.22, 0, 360, 20) + [(0.7, 0.32), (0.66, 0.92)]],
}


def render(strokes, side: int, width: float, transform: np.ndarray | None = None) -> np.ndarray:
    """Black strokes on white, (side, side) floats in [0, 1], optionally warped by a 2x3
    affine `transform` acting on unit-box coordinates."""
    canvas = np.full((side, side), 255, np.uint8)
    for line in strokes:
        points = np.array(line, np.float64)
        if transform is not None:
            points = points @ transform[:, :2].T + transform[:, 2]
        pixels = np.round(points * side * 16).astype(np.int32)  # 4 fractional bits
        cv2.polylines(canvas, [pixels], False, 0, max(1, round(width)), cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def jitter(rng: np.random.Generator) -> np.ndarray:
    """A random affine warp about the box centre: scale, rotation, shear, shift."""
    angle = math.radians(rng.uniform(-12, 12))
    scale = rng.uniform(0.75, 1.0, 2)
    shear = rng.uniform(-0.25, 0.25)
    linear = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = linear @ np.array([[1, shear], [0, 1]]) @ np.diag(scale)
    shift = 0.5 - linear @ [0.5, 0.5] + rng.uniform(-0.08, 0.08, 2)
    return np.hstack([linear, shift[:, None]])


def stroke_digits(count: int, seed: int, side: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """`count` jittered stroke digits preprocessed as predict does: uint8 (N, 28, 28), labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count, dtype=np.uint8) % 10
    images = np.zeros((count, 28, 28), np.uint8)
    for index, label in enumerate(labels):
        drawn = render(DIGIT_STROKES[int(label)], side, rng.uniform(0.04, 0.09) * side,
                       jitter(rng))
        images[index] = np.round(gray_to_mnist(drawn) * 255)
    return images, labels


def stroke_digits_dir(folder: Path, train: int = 300, test: int = 50) -> Path:
    """The four MNIST IDX files of stroke digits in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train, 1), ("t10k", test, 2)):
        images, labels = stroke_digits(count, seed)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(images, 2051))
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 2049))
    return folder
