"""Training-time augmentation: small random affine warps, whole-pixel shifts and stroke-thickness
changes.

Real handwriting is rotated, slanted, shifted, scaled and written with pens of other widths than
MNIST's. Every random draw comes from stateless ops seeded by (seed, global step), so a resumed
run augments each batch exactly as an uninterrupted run would.
"""

from __future__ import annotations

import math

import numpy as np

from digitnet.config import AugmentConfig

CENTRE = 13.5  # the middle of a 28-pixel side, in pixel coordinates


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


def warp(tf, images, augment: AugmentConfig, seeds):
    """Random rotation, shear, zoom and shift of a batch (N, 28, 28, 1)."""
    count = tf.shape(images)[0]
    transforms = inverse_transforms(
        tf,
        uniform(tf, seeds[0], count, math.radians(augment.rotation_degrees)),
        uniform(tf, seeds[1], count, math.radians(augment.shear_degrees)),
        1.0 + uniform(tf, seeds[2], count, augment.scale),
        uniform(tf, seeds[3], count, augment.shift_pixels),
        uniform(tf, seeds[4], count, augment.shift_pixels))
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[28, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


def vary_thickness(tf, images, probability: float, seed):
    """Thicken (2x2 dilation) or thin (2x2 erosion) each stroke with `probability` / 2 each."""
    draw = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed)
    thick = tf.nn.max_pool2d(images, 2, 1, "SAME")
    thin = -tf.nn.max_pool2d(-images, 2, 1, "SAME")
    return tf.where(draw < probability / 2, thick,
                    tf.where(draw < probability, thin, images))


def jitter(tf, images, pixels: int, seed):
    """Shift each image of a batch (N, 28, 28, 1) by whole pixels, up to `pixels` each way.

    A shift by whole pixels is a copy, not a resampling: far cheaper than `warp` (whose bilinear
    transform costs about 14 us of CPU per image, as much again as the lesson MLP's training
    step). The batch is already in random order, so it is cut into one slice per offset and each
    slice is shifted by an offset drawn from `seed`; the uncovered border is zeros.
    """
    side = 2 * pixels + 1
    offsets = tf.random.experimental.stateless_shuffle(tf.range(side * side), seed)
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
            augment.shift_pixels)):
        images = warp(tf, images, augment, seeds)
    if augment.thickness > 0:
        images = vary_thickness(tf, images, augment.thickness, seeds[5])
    if augment.jitter_pixels > 0:  # its own seed: the others stay as they were before it existed
        images = jitter(tf, images, augment.jitter_pixels,
                        tf.random.experimental.stateless_fold_in(seed, 7))
    return tf.clip_by_value(images, 0.0, 1.0)
