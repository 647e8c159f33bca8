"""The training digits as `digitnet predict` gives them to the model (`training.augment.pipeline`).

predict runs every image through digitnet.images.preprocess (the ink found, the slant limited,
the stroke width normalised, redrawn at 20 px from a bilevel shape, centred by mass), but MNIST's
digits never went through it. Each training digit is drawn as a clean scan of it would look
(dark ink on white paper, SCAN_SCALE times MNIST's size, bilinear) and passed through `to_mnist`,
the same code path predict's images take. With `training.augment.pipeline` > 0 each batch
swaps that share of its digits for these versions (drawn by the global step), so the model also
learns the pipeline's own look: crisper edges, normalised strokes, limited slant, its centring.

The scan of an upright 1 may also get the flag that writers outside the US put on their 1s
(`flag_one`: FLAGGED_ONES of the upright 1s, a quarter of MNIST's 1s): MNIST's writers, American,
rarely did, and a CNN trained on MNIST alone reads about half such 1s wrong, mostly as 7s
(docs/predict.md, "Flagged 1s").

The bank is made once over the source's whole training set (about 1 ms a digit, on every CPU),
kept in the cache folder, named by the digits' and labels' SHA-256 and BANK_VERSION, shared by every
seed and validation size (each indexes it by its split's training order); the first rows of a
cached bank are made again on load, so a change of the preprocessing code makes it again.
"""

from __future__ import annotations

import hashlib
import math
import zlib
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
BANK_VERSION = 2
ONE = 1  # the label whose scans may get a flag
FLAGGED_ONES = 0.5  # of the upright 1s: half stay as MNIST wrote them (plain 1s keep their weight)
FLAG_LENGTH = (0.2, 0.4)  # of the 1's height: a flag, not the bar of a 7 (about as long as it)
FLAG_DEGREES = (25.0, 60.0)  # below the horizontal, down to the left: a 7's bar is level
FLAG_SLANT = 0.25  # only 1s more upright than this (columns per row): a 7's stem leans


def scan_to_mnist(digits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, 28, 28) MNIST digits -> uint8 (N, 28, 28): each as predict gives a clean scan
    of it to the model (all zeros where the pipeline finds no ink). With their `labels` (the
    training bank always has them; None: no flags, for tests of the scan alone), the scans of
    FLAGGED_ONES of the upright 1s get a flag first (`flag_one`)."""
    from PIL import Image

    from digitnet.images.preprocess import to_mnist

    side = 28 * SCAN_SCALE
    out = np.zeros(digits.shape, np.uint8)
    for index, digit in enumerate(digits):
        scan = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR)
        if labels is not None and labels[index] == ONE:
            scan = Image.fromarray(flag_one(np.asarray(scan), digit_rng(digit)))
        out[index] = np.round(to_mnist(scan) * 255)
    return out


def digit_rng(digit: np.ndarray) -> np.random.Generator:
    """A generator seeded by the digit's pixels: its row of the bank is the same wherever the
    digit sits in the training set (every split indexes one bank)."""
    return np.random.default_rng(zlib.crc32(np.ascontiguousarray(digit).data))


def flag_one(scan: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The uint8 scan of a 1 (dark ink on white), with FLAGGED_ONES' chance of a flag when it
    leans less than FLAG_SLANT: a straight stroke from the 1's top down to the left,
    FLAG_LENGTH of its height long at FLAG_DEGREES, as thick as its stem and as dark as its
    ink."""
    import cv2

    from digitnet.images.preprocess import slant

    if rng.random() >= FLAGGED_ONES:
        return scan
    ink_mask = scan < 128
    if not ink_mask.any() or abs(slant(ink_mask)[0]) > FLAG_SLANT:
        return scan  # a leaning 1 with a flag is a 7
    rows, columns = np.nonzero(ink_mask)
    top, height = rows.min(), rows.max() - rows.min() + 1
    start = (float(columns[rows <= top + SCAN_SCALE].mean()), float(top))
    length, angle = rng.uniform(*FLAG_LENGTH) * height, math.radians(rng.uniform(*FLAG_DEGREES))
    end = (start[0] - length * math.cos(angle), start[1] + length * math.sin(angle))
    width = int(np.clip(round(len(rows) / height), 2, 4 * SCAN_SCALE))  # the stem's: area/height
    stroke, shift = np.zeros(scan.shape, np.uint8), 4  # drawn at 1/16 px
    cv2.line(stroke, *(tuple(round(v * (1 << shift)) for v in point) for point in (start, end)),
             255, width, cv2.LINE_AA, shift)
    ink = int(scan.min())
    flag = np.round(255 - stroke / 255 * (255 - ink))  # dark as the ink, edges anti-aliased
    return np.minimum(scan, flag).astype(np.uint8)  # the darker of the scan and the flag


def preprocessed_bank(digits: np.ndarray, labels: np.ndarray | None = None,
                      workers: int | None = None,
                      check: Callable[[], None] | None = None) -> np.ndarray:
    """`scan_to_mnist` of many digits (and their labels), CHUNK at a time in `workers`
    processes (None: one per CPU), from predict's kept pool (digitnet.images.batch.worker_pool:
    a fork server, workers that ignore Ctrl-C, use one OpenCV thread and end with their caller).

    `check` is called while the chunks are made (every CHECK_SECONDS at most); when it raises
    (a signal arrived: InterruptGuard.check), the chunks not started are cancelled and the
    exception goes on at once: a chunk a worker is making is not waited for.
    """
    workers = workers or available_cpus()
    if len(digits) <= CHUNK or workers < 2:
        return scan_to_mnist(digits, labels)
    from digitnet.images.batch import worker_pool

    starts = range(0, len(digits), CHUNK)
    pool = worker_pool(min(workers, len(starts)))
    futures = [pool.submit(scan_to_mnist, digits[start:start + CHUNK],
                           None if labels is None else labels[start:start + CHUNK])
               for start in starts]
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


def preprocessed_images(digits: np.ndarray, labels: np.ndarray | None = None,
                        check: Callable[[], None] | None = None,
                        path: Path | None = None) -> np.ndarray:
    """`preprocessed_bank(digits, labels)`, made once and kept in the cache folder; a cached
    file that is not such a bank, or whose first CHECKED_ROWS rows are not what the code here
    makes of those digits now (preprocess.py changed since), is made again. `check`: as for
    preprocessed_bank; nothing is written when it raises. `path`: bank_path(digits, labels),
    when the caller has it (it hashes every digit)."""
    path = path or bank_path(digits, labels)
    head = scan_to_mnist(digits[:CHECKED_ROWS], None if labels is None else labels[:CHECKED_ROWS])
    return cached_images(path, digits.shape,
                         lambda: preprocessed_bank(digits, labels, check=check),
                         valid=lambda bank: np.array_equal(bank[:CHECKED_ROWS], head))


def bank_sha256(bank: np.ndarray) -> str:
    """The SHA-256 of a bank's pixels, as manifest.json records it (of digits: bank_path's)."""
    return hashlib.sha256(np.ascontiguousarray(bank).data).hexdigest()


def bank_path(digits: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """The cache file of the bank of `digits`: named by their SHA-256 (and their labels', which
    decide which get a flag) and BANK_VERSION."""
    name = bank_sha256(digits)[:16]
    if labels is not None:
        name += "-" + bank_sha256(np.asarray(labels, np.int64))[:8]
    return cache_dir() / f"preprocessed-v{BANK_VERSION}-{name}.npy"


class Bank(NamedTuple):
    """A split's rows of the bank, the bank's cache file and its SHA-256 (manifest.json's)."""

    rows: np.ndarray
    path: Path
    sha256: str


def training_bank(digits: np.ndarray, labels: np.ndarray, index: np.ndarray | None = None,
                  check: Callable[[], None] | None = None) -> Bank:
    """The bank of `digits` (the source's whole training set, with its `labels`: flagged 1s)
    at the split's training order `index` (None: every row), with its file and SHA-256.
    `check`: as for preprocessed_bank.

    The bank is made once over the whole training set (every seed and validation size splits
    the same set: one bank serves them all); row i is what predict's preprocessing makes of
    digits[index[i]], as if made from that digit alone.
    """
    path = bank_path(digits, labels)
    bank = preprocessed_images(digits, labels, check, path)
    return Bank(bank if index is None else bank[index], path, bank_sha256(bank))
