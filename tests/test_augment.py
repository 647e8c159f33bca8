"""Augmentation: off by default, seeded, label-preserving warps, whole-pixel shifts, thickness
changes and lines near the digit."""

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


def test_the_pipeline_share_alone_is_no_image_transform():
    """training.augment.pipeline swaps digits for rows of a bank before any transform: alone,
    the batches are not augmented (and JAX takes its shifts-only path)."""
    from digitnet.training.backends.jax import only_shifts

    assert not AugmentConfig(pipeline=0.5).enabled
    assert AugmentConfig(pipeline=0.5, lines=0.1).enabled
    assert only_shifts(AugmentConfig(pipeline=0.5, jitter_pixels=1))
    assert not only_shifts(AugmentConfig(pipeline=0.5, lines=0.1))
    np.testing.assert_array_equal(run(AugmentConfig(pipeline=0.5)), IMAGES)


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


def test_jitter_shifts_each_image_by_whole_pixels_within_the_range():
    images = np.tile(IMAGES, (4, 1, 1, 1))  # 32 images: every one of the 9 offsets is used
    out = augment_batch(tf.constant(images), AugmentConfig(jitter_pixels=1),
                        tf.constant((0, 1), tf.int64)).numpy()
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    offsets = []
    for before, after in zip(padded, out):
        found = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if np.array_equal(after, before[1 - dy: 29 - dy, 1 - dx: 29 - dx])]
        assert found, "not a whole-pixel shift of at most one pixel"
        offsets.append(found[0])
    assert len(set(offsets)) == 9  # each image of a slice its own way, all nine offsets
    again = augment_batch(tf.constant(images), AugmentConfig(jitter_pixels=1),
                          tf.constant((0, 1), tf.int64)).numpy()
    other = augment_batch(tf.constant(images), AugmentConfig(jitter_pixels=1),
                          tf.constant((0, 2), tf.int64)).numpy()
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, other)


def test_jitter_leaves_the_other_transforms_as_they_were():
    with_jitter = AugmentConfig(rotation_degrees=15, thickness=0.5, jitter_pixels=1)
    without = AugmentConfig(rotation_degrees=15, thickness=0.5)
    images = run(without)
    out = run(with_jitter)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for before, after in zip(padded, out):  # the same warp, then a whole-pixel shift
        assert any(np.array_equal(after, before[1 - dy: 29 - dy, 1 - dx: 29 - dx])
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def test_bilinear_sampling_is_the_projective_transform_at_any_points():
    """The elastic warp's sampler gives ImageProjectiveTransformV3's pixels for an affine warp."""
    from digitnet.training import augment

    rng = np.random.default_rng(1)
    images = rng.random((5, 28, 28, 1), dtype=np.float32)
    draws = [rng.uniform(-0.4, 0.4, 5).astype(np.float32) for _ in range(5)]
    transforms = augment.inverse_transforms(tf, draws[0], draws[1], 1 + draws[2],
                                            5 * draws[3], 5 * draws[4])
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[28, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT").numpy()
    zero = np.zeros((5, 28, 28), np.float32)
    ours = augment.bilinear(tf, tf.constant(images),
                            *augment.source_points(transforms, zero, zero)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_elastic_distortion_bends_strokes_smoothly_within_its_reach():
    from digitnet.training import augment

    basis = augment.elastic_basis()
    np.testing.assert_allclose(basis.sum(axis=1), 1, atol=1e-6)  # an even field is a shift
    noise = np.random.default_rng(2).uniform(-1, 1, (50, 4, 4, 2)).astype(np.float32)
    shift_x, shift_y = (f.numpy() for f in augment.elastic_field(tf, tf.constant(noise), 3.0))
    assert np.abs(shift_x).max() <= 3.0 and np.abs(shift_y).max() <= 3.0
    assert np.abs(shift_x).max() > 1.0  # it does move pixels
    assert np.abs(np.diff(shift_x, axis=2)).max() < 1.0  # neighbours move nearly alike
    out = run(AugmentConfig(elastic_pixels=2.0))
    assert not np.allclose(out, IMAGES) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out, run(AugmentConfig(elastic_pixels=2.0)))
    assert not np.array_equal(out, run(AugmentConfig(elastic_pixels=2.0), seed=(0, 9)))
    # a warp with elastic off is the projective transform's, as before elastic existed
    affine = AugmentConfig(rotation_degrees=15)
    assert not np.array_equal(run(affine), run(AugmentConfig(rotation_degrees=15,
                                                              elastic_pixels=2.0)))


def test_lines_add_one_straight_line_near_the_digit_and_keep_it():
    """training.augment.lines: with probability 1 every image keeps all its own ink and gains
    one straight line, 14-28 px long, 8-13 px from the centre (at the digit's box or beyond)."""
    from digitnet.training import augment

    out = run(AugmentConfig(lines=1.0))[..., 0]
    digits = IMAGES[..., 0]
    assert np.all(out >= digits)  # the line is drawn over the digit, never erasing it
    added = (out - digits) > 0.25
    assert added.any(axis=(1, 2)).all()
    np.testing.assert_array_equal(out, run(AugmentConfig(lines=1.0))[..., 0])
    assert not np.array_equal(out, run(AugmentConfig(lines=1.0), seed=(0, 9))[..., 0])
    np.testing.assert_array_equal(run(AugmentConfig(lines=0.0)), IMAGES)
    # the line alone, on an empty image: straight, long, off the centre
    draws = np.random.default_rng(3).random((200, augment.LINE_DRAWS)).astype(np.float32)
    ink = augment.line_ink(tf, tf.constant(draws), 1.0).numpy()
    for image in ink:
        rows, cols = np.nonzero(image > 0.25)
        extent = max(np.ptp(rows), np.ptp(cols)) + 1
        assert 12 <= extent <= 28
        spread = np.linalg.svd(np.stack([rows, cols], 1) - [rows.mean(), cols.mean()],
                               compute_uv=False)
        assert spread[1] < 0.25 * spread[0]  # one straight stroke, not a blob
        centre = np.array([rows.mean(), cols.mean()]) - augment.CENTRE
        assert np.abs(centre).max() >= 5.0
    assert not augment.line_ink(tf, tf.constant(draws), 0.0).numpy().any()
    lines = augment.line_ink(tf, tf.constant(draws), 0.3).numpy().any(axis=(1, 2))
    assert lines.tolist() == (draws[:, 0] < 0.3).tolist()


def test_lines_leave_the_other_transforms_as_they_were():
    """Adding lines to a recipe changes no other draw: its own seed, as the jitter's."""
    without = run(AugmentConfig(rotation_degrees=15, thickness=0.5))
    with_lines = run(AugmentConfig(rotation_degrees=15, thickness=0.5, lines=1.0))
    assert np.all(with_lines >= without) and not np.array_equal(with_lines, without)
