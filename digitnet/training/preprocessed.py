"""The training digits as `digitnet predict` gives them to the model (`training.augment.pipeline`).

predict runs every image through digitnet.images.preprocess (the ink found, the slant limited,
the stroke width normalised, redrawn at 20 px from a bilevel shape, centred by mass), but MNIST's
digits never went through it. Each training digit is drawn as a clean scan of it would look
(dark ink on white paper, SCAN_SCALE times MNIST's size, bilinear) and passed through `to_mnist`,
the same code path predict's images take. With `training.augment.pipeline` > 0 each batch
swaps that share of its digits for these versions (drawn by the global step), so the model also
learns the pipeline's own look: crisper edges, normalised strokes, limited slant, its centring.

The bank is made once over the source's whole training set (about 1 ms a digit, on every CPU),
kept in the cache folder, named by the digits' SHA-256 and BANK_VERSION, and shared by every
seed and validation size (each indexes it by its split's training order); the first rows of a
cached bank are made again on load, so a change of the preprocessing code makes it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import NamedTuple

import numpy as np

from digitnet.backend import available_cpus
from digitnet.data import cache_dir, cached_images

SCAN_SCALE = 3  # a scan at 84 px: to_mnist at this size takes about 1 ms (at 112 px, 8)
CHUNK = 250  # digits per worker task (a quarter of a second); fewer than this are made here
CHECK_SECONDS = 0.1  # how often the build looks for a signal (`check`)
CHECKED_ROWS = 64  # rows of a cached bank made again on load, to catch a change of the code
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


def preprocessed_bank(digits: np.ndarray, workers: int | None = None,
                      check: Callable[[], None] | None = None) -> np.ndarray:
    """`scan_to_mnist` of many digits, CHUNK at a time in `workers` processes (None: one per
    CPU), from predict's kept pool (digitnet.images.batch.worker_pool: a fork server, workers
    that ignore Ctrl-C, use one OpenCV thread and end with their caller).

    `check` is called while the chunks are made (every CHECK_SECONDS at most); when it raises
    (a signal arrived: InterruptGuard.check), the chunks not started are cancelled and the
    exception goes on at once: a chunk a worker is making is not waited for.
    """
    workers = workers or available_cpus()
    if len(digits) <= CHUNK or workers < 2:
        return scan_to_mnist(digits)
    from digitnet.images.batch import worker_pool

    chunks = [digits[start:start + CHUNK] for start in range(0, len(digits), CHUNK)]
    pool = worker_pool(min(workers, len(chunks)))
    futures = [pool.submit(scan_to_mnist, chunk) for chunk in chunks]
    try:
        pending = set(futures)
        while pending:
            if check is not None:
                check()
            _, pending = wait(pending, timeout=CHECK_SECONDS, return_when=FIRST_COMPLETED)
        if check is not None:
            check()
        return np.concatenate([future.result() for future in futures])
    finally:
        for future in futures:
            future.cancel()  # only those not started; a no-op once all are done


def preprocessed_images(digits: np.ndarray, check: Callable[[], None] | None = None,
                        path: Path | None = None) -> np.ndarray:
    """`preprocessed_bank(digits)`, made once and kept in the cache folder; a cached file that
    is not such a bank, or whose first CHECKED_ROWS rows are not what the code here makes of
    those digits now (preprocess.py changed since), is made again. `check`: as for
    preprocessed_bank; nothing is written when it raises. `path`: bank_path(digits), when the
    caller has it (it hashes every digit)."""
    path = path or bank_path(digits)
    head = scan_to_mnist(digits[:CHECKED_ROWS])
    return cached_images(path, digits.shape, lambda: preprocessed_bank(digits, check=check),
                         valid=lambda bank: np.array_equal(bank[:CHECKED_ROWS], head))


def bank_sha256(bank: np.ndarray) -> str:
    """The SHA-256 of a bank's pixels, as manifest.json records it (of digits: bank_path's)."""
    return hashlib.sha256(np.ascontiguousarray(bank).data).hexdigest()


def bank_path(digits: np.ndarray) -> Path:
    """The cache file of the bank of `digits`: named by their SHA-256 and BANK_VERSION."""
    return cache_dir() / f"preprocessed-v{BANK_VERSION}-{bank_sha256(digits)[:16]}.npy"


class Bank(NamedTuple):
    """A split's rows of the bank, the bank's cache file and its SHA-256 (manifest.json's)."""

    rows: np.ndarray
    path: Path
    sha256: str


def training_bank(digits: np.ndarray, index: np.ndarray | None = None,
                  check: Callable[[], None] | None = None) -> Bank:
    """The bank of `digits` (the source's whole training set) at the split's training order
    `index` (None: every row), with its file and SHA-256. `check`: as for preprocessed_bank.

    The bank is made once over the whole training set (every seed and validation size splits
    the same set: one bank serves them all); row i is what predict's preprocessing makes of
    digits[index[i]], as if made from that digit alone.
    """
    path = bank_path(digits)
    bank = preprocessed_images(digits, check, path)
    return Bank(bank if index is None else bank[index], path, bank_sha256(bank))
