"""Resizing float images exactly as Pillow does, quicker: the resampling that every stage of
preprocessing shares (see digitnet.images.preprocess). No TensorFlow here.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image

WORK_SIDE = 512  # heavy steps run on a copy whose long side is at most this
SMALL_SIDE = 128  # images up to this size are resized by matrix products (see resize)


def shrink(values: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Area-average a float image down so that its long side is at most `side`."""
    height, width = values.shape
    scale = side / max(height, width)
    if scale >= 1:
        return values
    return resize(values, (max(1, round(width * scale)), max(1, round(height * scale))))


def resize(values: np.ndarray, size: tuple[int, int], smooth: bool = False) -> np.ndarray:
    """Resize a float array to (width, height) as Pillow does: its BOX filter, or its BILINEAR
    one when `smooth` and enlarging.

    Pillow's BOX averages the source pixels whose centres fall in each output pixel, whole,
    not by area as OpenCV's INTER_AREA does. Small images are resized with Pillow's own
    weights as matrices, without its per-call overhead; large ones by Pillow, except a large
    bilinear enlargement (only ever of the paper's smooth brightness), by OpenCV's, 60 times
    quicker. Either way the sums run in another order than Pillow's: the results may differ
    from its in the last bit of a float32, no more.
    """
    values = np.asarray(values, np.float32)
    height, width = values.shape
    smooth = smooth and size[0] >= width and size[1] >= height
    if max(height, width, *size) <= SMALL_SIDE:
        # two passes, the first stored in float32 as Pillow stores it
        across = (values @ pillow_weights(width, size[0], smooth).T).astype(np.float32)
        return (pillow_weights(height, size[1], smooth) @ across).astype(np.float32)
    if smooth:
        return cv2.resize(values, size, interpolation=cv2.INTER_LINEAR)
    return np.asarray(Image.fromarray(values).resize(size, Image.Resampling.BOX))


@functools.lru_cache(maxsize=4096)
def pillow_weights(source: int, target: int, bilinear: bool) -> np.ndarray:
    """Pillow's resampling weights from `source` to `target` pixels, a (target, source) matrix.

    The arithmetic of Pillow's precompute_coeffs (Resample.c), step for step, so that the
    weights are its very doubles: BOX takes the source pixels whose centres lie in (centre -
    scale / 2, centre + scale / 2], BILINEAR weighs them by a triangle; both are normalised.
    """
    scale = source / target
    widen = max(scale, 1.0)  # the filter widens with the reduction
    support = (1.0 if bilinear else 0.5) * widen
    step = 1.0 / widen
    weights = np.zeros((target, source))
    for index in range(target):
        centre = (index + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        stop = min(int(centre + support + 0.5), source)
        row = [pillow_filter((pixel - centre + 0.5) * step, bilinear)
               for pixel in range(first, stop)]
        total = 0.0
        for weight in row:
            total += weight
        if total != 0.0:
            weights[index, first:stop] = [weight / total for weight in row]
    weights.flags.writeable = False  # shared by every call through the cache
    return weights


def pillow_filter(offset: float, bilinear: bool) -> float:
    """Pillow's box or bilinear (triangle) filter at an offset in output pixels."""
    if bilinear:
        return max(0.0, 1.0 - abs(offset))
    return 1.0 if -0.5 < offset <= 0.5 else 0.0


def unit_range(values: np.ndarray) -> np.ndarray:
    """Clip a new float array to [0, 1] in place (np.clip's result, without its overhead)."""
    np.maximum(values, 0.0, out=values)
    return np.minimum(values, 1.0, out=values)
