"""The training digits as `digitnet predict` gives them to the model (`training.augment.pipeline`).

predict runs every image through digitnet.images.preprocess (the ink found, the slant limited,
the stroke width normalised, redrawn at 20 px from a bilevel shape, centred by mass), but MNIST's
digits never went through it. Each training digit is drawn as a clean scan of it would look
(dark ink on white paper, SCAN_SCALE times MNIST's size, bilinear) and passed through `to_mnist`,
the same code path predict's images take. With `training.augment.pipeline` > 0 each batch
swaps that share of its digits for these versions (drawn by the global step), so the model also
learns the pipeline's own look: crisper edges, normalised strokes, limited slant, its centring.

The bank is made once per training set (about 1 ms a digit, on every CPU) and kept in the cache
folder, named by the digits' SHA-256 and BANK_VERSION.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from digitnet.backend import available_cpus
from digitnet.data import cache_dir, cached_images

SCAN_SCALE = 3  # a scan at 84 px: to_mnist at this size takes about 1 ms (at 112 px, 8)
CHUNK = 2000  # digits per worker task; fewer than this are made in this process
# Part of the bank's cache file name: change it when the scan or the pipeline's output changes.
BANK_VERSION = 1


def scan_to_mnist(digits: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) MNIST digits -> uint8 (N, 28, 28): each as predict gives a clean scan
    of it to the model (all zeros where the pipeline finds no ink)."""
    from PIL import Image

    from digitnet.images.preprocess import to_mnist

    side = 28 * SCAN_SCALE
    out = np.zeros(digits.shape, np.uint8)
    for index, digit in enumerate(digits):
        scan = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR)
        out[index] = np.round(to_mnist(scan) * 255)
    return out


def preprocessed_bank(digits: np.ndarray, workers: int | None = None) -> np.ndarray:
    """`scan_to_mnist` of many digits, CHUNK at a time in `workers` processes (None: one per
    CPU; a forkserver, since the caller may have started TensorFlow's threads)."""
    workers = workers or available_cpus()
    if len(digits) <= CHUNK or workers < 2:
        return scan_to_mnist(digits)
    chunks = [digits[start:start + CHUNK] for start in range(0, len(digits), CHUNK)]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
        return np.concatenate(list(pool.map(scan_to_mnist, chunks)))


def preprocessed_images(digits: np.ndarray) -> np.ndarray:
    """`preprocessed_bank(digits)`, made once and kept in the cache folder; a cached file that
    is not such a bank is made again."""
    digest = hashlib.sha256(np.ascontiguousarray(digits).data).hexdigest()[:16]
    path = cache_dir() / f"preprocessed-v{BANK_VERSION}-{digest}.npy"
    return cached_images(path, digits.shape, lambda: preprocessed_bank(digits))
