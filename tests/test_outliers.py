"""Outlier exposure: generated non-digits join each batch, their target the uniform one."""

import os
import subprocess
import sys

import numpy as np
import pytest

from digitnet.config import TrainingConfig
from digitnet.data import to_model_input
from digitnet.training.outliers import outlier_bank, outlier_images
from digitnet.training.train import training_batches


def test_outlier_bank_is_mnist_shaped_seeded_and_centred():
    bank = outlier_bank(count=12, seed=3)
    assert bank.dtype == np.uint8 and bank.shape == (12, 28, 28)
    assert all(image.any() for image in bank)
    np.testing.assert_array_equal(bank, outlier_bank(count=12, seed=3))
    assert not np.array_equal(bank, outlier_bank(count=12, seed=4))
    for image in bank:  # like MNIST: a 4-pixel empty border around a 20x20 box, roughly
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21


def test_batches_add_the_outlier_share_with_uniform_targets():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 30).astype(np.int32)
    others = outlier_bank(count=6, seed=0)
    training = TrainingConfig(batch_size=10, seed=1, outliers=0.2)
    first = [(x.numpy(), y.numpy()) for x, y in
             training_batches(images, labels, training, 0, others).take(3)]
    for batch_images, batch_labels in first:
        assert batch_images.shape == (12, 28, 28, 1)
        np.testing.assert_allclose(batch_labels[10:], 0.1)
        assert (batch_labels[:10].max(axis=1) == 1).all()
        drawn = to_model_input(others)
        assert all(any(np.array_equal(row, other) for other in drawn)
                   for row in batch_images[10:])
    again = [(x.numpy(), y.numpy()) for x, y in
             training_batches(images, labels, training, 0, others).take(3)]
    for (a, _), (b, _) in zip(first, again):  # the same outliers for the same steps
        np.testing.assert_array_equal(a, b)


def test_the_bank_is_made_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("digitnet.training.outliers.BANK_SIZE", 8)
    calls = []
    real = outlier_bank

    def counting(**kwargs):
        calls.append(kwargs)
        return real(count=8, **kwargs)

    monkeypatch.setattr("digitnet.training.outliers.outlier_bank", counting)
    first = outlier_images(seed=2)
    second = outlier_images(seed=2)
    np.testing.assert_array_equal(first, second)
    assert len(calls) == 1 and len(list(tmp_path.glob("outliers-*.npy"))) == 1


def test_a_cached_bank_is_read_without_the_drawing_code(tmp_path):
    """A run whose bank is in the cache imports neither OpenCV, Pillow nor digitnet.images."""
    from digitnet.training.outliers import BANK_SIZE, BANK_VERSION

    bank = np.full((BANK_SIZE, 28, 28), 7, np.uint8)
    np.save(tmp_path / f"outliers-v{BANK_VERSION}-seed5.npy", bank)
    code = ("import sys\n"
            "from digitnet.training.outliers import outlier_images\n"
            "bank = outlier_images(5)\n"
            "assert bank.shape[0] and (bank == 7).all(), 'not the cached bank'\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cv2', 'PIL')\n"
            "             or m.startswith('digitnet.images')))\n")
    env = {**os.environ, "DIGITNET_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("shape", [(0, 28, 28), (10**12, 28, 28)])
def test_a_cached_bank_without_its_images_is_made_again(tmp_path, monkeypatch, shape):
    """A cache file holding no image, or whose header claims more than memory holds, is not the
    bank: it is made again and written over (training drew outliers from an empty bank, or
    raised MemoryError)."""
    from digitnet.training.outliers import BANK_VERSION

    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("digitnet.training.outliers.BANK_SIZE", 8)
    path = tmp_path / f"outliers-v{BANK_VERSION}-seed2.npy"
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "|u1", "fortran_order": False, "shape": shape})
    monkeypatch.setattr("digitnet.training.outliers.outlier_bank",
                        lambda seed: outlier_bank(count=8, seed=seed))
    bank = outlier_images(seed=2)
    assert bank.shape == (8, 28, 28) and bank.any()
    np.testing.assert_array_equal(np.load(path), bank)
