"""Training-time augmentation: small random affine warps, elastic distortions, whole-pixel shifts,
stroke-thickness changes and straight lines near the digit.

Real handwriting is rotated, slanted, shifted, scaled, wobbly and written with pens of other
widths than MNIST's, and a crop of a form or a ruled page keeps pieces of its lines. Every
random draw comes from stateless ops seeded by (seed, global step), so a resumed run augments
each batch exactly as an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from digitnet.config import AugmentConfig

CENTRE = 13.5  # the middle of a 28-pixel side, in pixel coordinates
ROWS = np.arange(28, dtype=np.float32).reshape(1, 28, 1)  # the pixel grid, broadcast over a batch
COLS = ROWS.reshape(1, 1, 28)
ELASTIC_GRID = 4  # the elastic field's random displacements: a 4x4 grid of them, 9 px apart
ELASTIC_SPREAD = 0.75  # each one's Gaussian weight reaches this many grid steps (sigma)
LINE_DRAWS = 8  # uniform numbers in [0, 1) that make one image's line (line_ink)
LINE_OFFSET = (8.0, 13.0)  # the line's distance from the centre, px: at the digit's box or beyond
LINE_LENGTH = (14.0, 28.0)  # px: most of a box's edge, up to a ruled line across the field
LINE_WIDTH = (0.8, 2.2)  # px
LINE_LEVEL = (0.5, 1.0)  # its ink, from a faint printed box to a pen stroke
LINE_TILT = 10.0  # degrees either way from horizontal or vertical


def uniform(tf, seed, count, limit):
    """`count` draws from U(-limit, limit)."""
    return tf.random.stateless_uniform([count], seed, -limit, limit)


def inverse_transforms(tf, angle, shear, zoom, shift_x, shift_y):
    """Per-image 8-parameter projective transforms mapping output pixels to input pixels.

    The forward warp is zoom * rotate(angle) * shear_x(shear) about the centre, then a shift;
    ImageProjectiveTransformV3 wants its inverse.
    """
    cos, sin, tan = tf.cos(angle), tf.sin(angle), tf.tan(shear)
    m00, m01 = zoom * cos, zoom * (cos * tan - sin)
    m10, m11 = zoom * sin, zoom * (sin * tan + cos)
    det = m00 * m11 - m01 * m10
    a0, a1, b0, b1 = m11 / det, -m01 / det, -m10 / det, m00 / det
    x0, y0 = CENTRE + shift_x, CENTRE + shift_y
    a2 = CENTRE - a0 * x0 - a1 * y0
    b2 = CENTRE - b0 * x0 - b1 * y0
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def warp(tf, images, augment: AugmentConfig, seeds, elastic_seed):
    """Random rotation, shear, zoom and shift of a batch (N, 28, 28, 1), and the elastic
    distortion when augment.elastic_pixels is on."""
    count = tf.shape(images)[0]
    transforms = inverse_transforms(
        tf,
        uniform(tf, seeds[0], count, math.radians(augment.rotation_degrees)),
        uniform(tf, seeds[1], count, math.radians(augment.shear_degrees)),
        1.0 + uniform(tf, seeds[2], count, augment.scale),
        uniform(tf, seeds[3], count, augment.shift_pixels),
        uniform(tf, seeds[4], count, augment.shift_pixels))
    if augment.elastic_pixels > 0:
        return elastic_warp(tf, images, transforms, augment.elastic_pixels, elastic_seed)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[28, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


def elastic_basis() -> np.ndarray:
    """(28, ELASTIC_GRID) weights spreading a grid of random displacements smoothly over a
    28-pixel side: Simard et al.'s (2003) Gaussian-smoothed random field, from a few numbers.

    Each row sums to 1, so a field of displacements all equal to d moves every pixel by d.
    """
    step = 28 / ELASTIC_GRID
    knots = step * (np.arange(ELASTIC_GRID) + 0.5) - 0.5
    weights = np.exp(-0.5 * ((np.arange(28)[:, None] - knots[None, :])
                             / (ELASTIC_SPREAD * step)) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def elastic_field(xp, noise, pixels: float):
    """Displacements (N, 28, 28) along x and y from noise (N, ELASTIC_GRID, ELASTIC_GRID, 2) in
    [-1, 1]; `xp` is tf or jax.numpy, the same arithmetic in both."""
    basis = elastic_basis()
    field = xp.einsum("ia,nabc,jb->nijc", basis, noise, basis) * pixels
    return field[..., 0], field[..., 1]


def source_points(transforms, shift_x, shift_y):
    """Where each output pixel reads its input: the affine inverse `transforms` (N, 8) applied
    to the pixel grid, plus per-pixel shifts (N, 28, 28)."""
    t = [transforms[:, k][:, None, None] for k in range(6)]
    return (t[0] * COLS + t[1] * ROWS + t[2] + shift_x,
            t[3] * COLS + t[4] * ROWS + t[5] + shift_y)


def bilinear(tf, images, source_x, source_y):
    """Sample (N, 28, 28, 1) images at (N, 28, 28) points, bilinearly, zero outside: what
    ImageProjectiveTransformV3 does with BILINEAR and a constant fill of 0, at any points."""
    count = tf.shape(images)[0]
    flat = tf.reshape(images, [count, 784])
    left, top = tf.floor(source_x), tf.floor(source_y)
    across, down = source_x - left, source_y - top
    left, top = tf.cast(left, tf.int32), tf.cast(top, tf.int32)

    def corner(row, col):
        inside = (row >= 0) & (row <= 27) & (col >= 0) & (col <= 27)
        index = tf.clip_by_value(row, 0, 27) * 28 + tf.clip_by_value(col, 0, 27)
        values = tf.gather(flat, tf.reshape(index, [count, 784]), batch_dims=1)
        return tf.where(inside, tf.reshape(values, tf.shape(row)), 0.0)

    out = ((1 - across) * (1 - down) * corner(top, left) + across * (1 - down)
           * corner(top, left + 1) + (1 - across) * down * corner(top + 1, left)
           + across * down * corner(top + 1, left + 1))
    return out[..., None]


def elastic_warp(tf, images, transforms, pixels: float, seed):
    """`warp`'s affine transforms and an elastic field of up to `pixels`, in one resampling."""
    count = tf.shape(images)[0]
    noise = tf.random.stateless_uniform([count, ELASTIC_GRID, ELASTIC_GRID, 2], seed, -1.0, 1.0)
    shift_x, shift_y = elastic_field(tf, noise, pixels)
    return bilinear(tf, images, *source_points(transforms, shift_x, shift_y))


def vary_thickness(tf, images, probability: float, seed):
    """Thicken (2x2 dilation) or thin (2x2 erosion) each stroke with `probability` / 2 each."""
    draw = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed)
    thick = tf.nn.max_pool2d(images, 2, 1, "SAME")
    thin = -tf.nn.max_pool2d(-images, 2, 1, "SAME")
    return tf.where(draw < probability / 2, thick,
                    tf.where(draw < probability, thin, images))


def line_ink(xp, draws, probability: float):
    """Ink (N, 28, 28) of one straight line per image, or none, from `draws` (N, LINE_DRAWS)
    uniform in [0, 1); `xp` is tf or jax.numpy, the same arithmetic in both.

    With `probability` an image gets a line as a crop of a form, a ruled page or a box drawn
    around the digit leaves one after preprocessing: horizontal or vertical (tilted up to
    LINE_TILT degrees), LINE_OFFSET pixels from the centre on either side, so at the edge of the
    digit's 20-pixel box or beyond it, LINE_LENGTH long, LINE_WIDTH wide, anti-aliased.
    """
    def between(column, limits):
        return limits[0] + (limits[1] - limits[0]) * draws[:, column]

    tilt = (2 * draws[:, 2] - 1) * math.radians(LINE_TILT)
    angle = xp.where(draws[:, 1] < 0.5, tilt, tilt + math.pi / 2)
    along_x, along_y = xp.cos(angle), xp.sin(angle)  # the line's direction; its normal is
    side = 2 * draws[:, 3] - 1  # (-along_y, along_x)
    offset = xp.sign(side) * (LINE_OFFSET[0] + (LINE_OFFSET[1] - LINE_OFFSET[0]) * xp.abs(side))
    slide = (2 * draws[:, 4] - 1) * 6.0  # the segment's middle moves along the line
    half = between(5, LINE_LENGTH) / 2
    centre_x = CENTRE - offset * along_y + slide * along_x
    centre_y = CENTRE + offset * along_x + slide * along_y
    dx = COLS - centre_x[:, None, None]
    dy = ROWS - centre_y[:, None, None]
    along = xp.minimum(xp.maximum(dx * along_x[:, None, None] + dy * along_y[:, None, None],
                                  -half[:, None, None]), half[:, None, None])
    distance = xp.sqrt((dx - along * along_x[:, None, None]) ** 2
                       + (dy - along * along_y[:, None, None]) ** 2)
    width = between(6, LINE_WIDTH)[:, None, None]
    level = between(7, LINE_LEVEL)[:, None, None]
    ink = xp.minimum(xp.maximum(width / 2 + 0.5 - distance, 0.0), 1.0) * level
    return xp.where((draws[:, 0] < probability)[:, None, None], ink, 0.0)


def only_shifts(augment: AugmentConfig) -> bool:
    """Whether the augmentation is the jitter alone, or none: whole-pixel shifts of the images,
    which both backends copy as they gather a batch (the pipeline's versions of the digits are
    rows of the bank, swapped in before)."""
    return not dataclasses.replace(augment, jitter_pixels=0).enabled


def jitter_offsets(tf, pixels: int, seed):
    """The jitter's offsets for a batch seeded by `seed` (training seed, global step): a
    permutation of the (2 * pixels + 1)^2 shifts, slice i of the batch taking offset i."""
    side = 2 * pixels + 1
    return tf.random.experimental.stateless_shuffle(
        tf.range(side * side), tf.random.experimental.stateless_fold_in(seed, 7))


def jitter(tf, images, pixels: int, offsets):
    """Shift each image of a batch (N, 28, 28, 1) by whole pixels, up to `pixels` each way.

    A shift by whole pixels is a copy, not a resampling: far cheaper than `warp` (whose bilinear
    transform costs about 14 us of CPU per image, as much again as the lesson MLP's training
    step). The batch is already in random order, so it is cut into one slice per offset and each
    slice is shifted by its offset (`jitter_offsets`); the uncovered border is zeros.
    """
    side = 2 * pixels + 1
    padded = tf.pad(images, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]])
    parts, start = [], 0
    for index, size in enumerate(np.bincount(jitter_rows(images.shape[0], pixels))):
        row, col = offsets[index] // side, offsets[index] % side
        parts.append(tf.slice(padded, tf.stack([start, row, col, 0]), [size, 28, 28, 1]))
        start += size
    return tf.concat(parts, 0)


def jitter_rows(count: int, pixels: int) -> np.ndarray:
    """Which of jitter's drawn offsets each row of a batch of `count` takes: one slice of the
    batch per offset, in order, their sizes differing by at most one."""
    slices = (2 * pixels + 1) ** 2
    sizes = [count // slices + (index < count % slices) for index in range(min(slices, count))]
    return np.repeat(np.arange(len(sizes)), sizes)


def augment_batch(images, augment: AugmentConfig, seed):
    """Augment one batch of float32 images (N, 28, 28, 1) in [0, 1].

    Args:
      images: the batch.
      augment: the training.augment config; a zero turns that transform off.
      seed: a shape-[2] integer tensor, e.g. (training seed, global step).

    Returns:
      The augmented batch, same shape and range.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 6)
    if any((augment.rotation_degrees, augment.shear_degrees, augment.scale,
            augment.shift_pixels, augment.elastic_pixels)):  # the elastic field: its own seed
        images = warp(tf, images, augment, seeds, tf.random.experimental.stateless_fold_in(seed, 8))
    if augment.thickness > 0:
        images = vary_thickness(tf, images, augment.thickness, seeds[5])
    if augment.lines > 0:  # its own seed, as the jitter's
        draws = tf.random.stateless_uniform([tf.shape(images)[0], LINE_DRAWS],
                                            tf.random.experimental.stateless_fold_in(seed, 9))
        images = tf.maximum(images, line_ink(tf, draws, augment.lines)[..., None])
    if augment.jitter_pixels > 0:  # its own seed: the others stay as they were before it existed
        images = jitter(tf, images, augment.jitter_pixels,
                        jitter_offsets(tf, augment.jitter_pixels, seed))
    return tf.clip_by_value(images, 0.0, 1.0)
