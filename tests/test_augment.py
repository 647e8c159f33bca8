"""Augmentation: off by default, seeded, label-preserving warps and thickness changes."""

import numpy as np
import pytest

from digitnet.config import AugmentConfig, load_config
from tests.conftest import synthetic_digits

tf = pytest.importorskip("tensorflow")
from digitnet.training.augment import augment_batch  # noqa: E402

IMAGES = (synthetic_digits(8, 0)[0].astype(np.float32) / 255)[..., None]
FULL = AugmentConfig(rotation_degrees=15, shift_pixels=2, scale=0.1, shear_degrees=10,
                     thickness=0.5)


def run(config, seed=(0, 1)):
    return augment_batch(tf.constant(IMAGES), config, tf.constant(seed, tf.int64)).numpy()


def test_default_config_does_not_augment():
    assert not load_config().training.augment.enabled
    np.testing.assert_array_equal(run(AugmentConfig()), IMAGES)


def test_same_seed_same_batch_other_seed_other_batch():
    np.testing.assert_array_equal(run(FULL), run(FULL))
    assert not np.array_equal(run(FULL), run(FULL, seed=(0, 2)))


def test_output_keeps_shape_and_range():
    out = run(FULL)
    assert out.shape == IMAGES.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.array_equal(out, IMAGES)


def test_pure_shift_moves_the_ink():
    out = run(AugmentConfig(shift_pixels=3))
    rows = np.arange(28)[None, :, None, None]
    centre = lambda x: (x * rows).sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3))  # noqa: E731
    moved = np.abs(centre(out) - centre(IMAGES))
    assert moved.max() > 0.2 and moved.max() <= 3.01


def test_thickness_thickens_or_thins_strokes():
    out = run(AugmentConfig(thickness=1.0))
    changed = [not np.array_equal(a, b) for a, b in zip(out, IMAGES)]
    assert all(changed)
