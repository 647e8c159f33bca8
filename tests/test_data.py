"""Data: IDX and npz loading with validation, verified download, seeded split."""

import gzip
import hashlib
import logging

import numpy as np
import pytest

from digitnet import data
from digitnet.data import DataError, load_mnist, resolve_source, split_validation
from tests.conftest import idx_bytes, synthetic_digits, write_idx_dir


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_gzipped_or_not(tmp_path, gz):
    mnist = load_mnist(str(write_idx_dir(tmp_path, train=30, test=10, gz=gz)))
    assert mnist.x_train.shape == (30, 28, 28) and mnist.x_test.shape == (10, 28, 28)
    assert mnist.y_train.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert len(mnist.files) == 4
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    path = str(tmp_path / name)
    assert mnist.files[path] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def corrupt(tmp_path, name, payload):
    write_idx_dir(tmp_path, train=30, test=10)
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(payload))
    return tmp_path / f"{name}.gz"


def test_bad_magic_number_is_named(tmp_path):
    images, _ = synthetic_digits(30, 0)
    path = corrupt(tmp_path, "train-images-idx3-ubyte", idx_bytes(images, 2049))
    with pytest.raises(DataError) as error:
        load_mnist(str(tmp_path))
    assert str(error.value) == f"{path}: bad IDX magic number 0x00000801, expected 0x00000803"


def test_truncated_idx_is_named(tmp_path):
    images, _ = synthetic_digits(30, 0)
    path = corrupt(tmp_path, "train-images-idx3-ubyte", idx_bytes(images, 2051)[:-100])
    with pytest.raises(DataError) as error:
        load_mnist(str(tmp_path))
    assert str(error.value) == (f"{path}: 23436 bytes, expected 23536 for shape (30, 28, 28) "
                                f"(truncated or corrupt)")


def test_truncated_gzip_is_named(tmp_path):
    write_idx_dir(tmp_path, train=30, test=10)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataError, match=f"^{path}: cannot read"):
        load_mnist(str(tmp_path))


def test_label_count_mismatch_is_named(tmp_path):
    _, labels = synthetic_digits(29, 0)
    corrupt(tmp_path, "train-labels-idx1-ubyte", idx_bytes(labels, 2049))
    with pytest.raises(DataError) as error:
        load_mnist(str(tmp_path))
    assert str(error.value) == f"{tmp_path} (train): 30 images but labels of shape (29,)"


def test_labels_out_of_range_are_named(tmp_path):
    labels = np.full(30, 11, dtype=np.uint8)
    corrupt(tmp_path, "train-labels-idx1-ubyte", idx_bytes(labels, 2049))
    with pytest.raises(DataError) as error:
        load_mnist(str(tmp_path))
    assert str(error.value) == f"{tmp_path} (train): labels must be in 0-9, found 11..11"


def test_missing_idx_file_is_named(tmp_path):
    write_idx_dir(tmp_path, train=30, test=10)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as error:
        load_mnist(str(tmp_path))
    assert str(error.value) == (f"{tmp_path}: missing t10k-images-idx3-ubyte[.gz] "
                                f"(expected the four MNIST IDX files)")


def write_npz(path, **overrides):
    x, y = synthetic_digits(30, 0)
    arrays = {"x_train": x, "y_train": y, "x_test": x[:10], "y_test": y[:10], **overrides}
    np.savez(path, **arrays)
    return path


def test_npz_in_keras_layout_loads(tmp_path):
    mnist = load_mnist(str(write_npz(tmp_path / "mnist.npz")))
    assert mnist.x_train.shape == (30, 28, 28) and mnist.y_test.shape == (10,)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = write_npz(tmp_path / "evil.npz", x_test=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match=f"^{path}: not a readable .npz file"):
        load_mnist(str(path))


def test_npz_missing_array_is_named(tmp_path):
    path = tmp_path / "part.npz"
    x, y = synthetic_digits(30, 0)
    np.savez(path, x_train=x, y_train=y)
    with pytest.raises(DataError) as error:
        load_mnist(str(path))
    assert str(error.value) == (f"{path}: missing arrays ['x_test', 'y_test'] "
                                f"(expected ['x_train', 'y_train', 'x_test', 'y_test'])")


def test_not_an_npz_is_named(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match=f"^{path}: not a readable .npz file"):
        load_mnist(str(path))


def test_missing_source_is_named(tmp_path):
    with pytest.raises(DataError) as error:
        load_mnist(str(tmp_path / "nowhere"))
    assert str(error.value) == (f"{tmp_path / 'nowhere'}: data source not found (expected a "
                                f"folder of MNIST IDX files or an .npz file)")


def test_source_priority(monkeypatch):
    monkeypatch.setenv("DIGITNET_DATA_DIR", "/env")
    assert resolve_source("/flag", "/config") == "/flag"
    assert resolve_source(None, "/config") == "/env"
    monkeypatch.delenv("DIGITNET_DATA_DIR")
    assert resolve_source(None, "/config") == "/config"
    assert resolve_source(None, "") == "download"


def fake_download(source_path):
    def retrieve(url, target):
        with open(target, "wb") as out:
            out.write(source_path.read_bytes())
    return retrieve


def test_download_is_verified_cached_and_reused(tmp_path, monkeypatch, caplog):
    npz = write_npz(tmp_path / "published.npz")
    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data.urllib.request, "urlretrieve", fake_download(npz))
    with caplog.at_level(logging.INFO, logger="digitnet"):
        path = data.download_mnist("https://example.invalid/mnist.npz", digest)
    assert path == tmp_path / "cache" / "mnist.npz"
    assert "Downloading MNIST from https://example.invalid/mnist.npz" in caplog.text
    monkeypatch.setattr(data.urllib.request, "urlretrieve", None)  # a second call must not fetch
    assert data.download_mnist("https://example.invalid/mnist.npz", digest) == path


def test_download_with_wrong_hash_is_deleted(tmp_path, monkeypatch):
    npz = write_npz(tmp_path / "tampered.npz")
    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data.urllib.request, "urlretrieve", fake_download(npz))
    with pytest.raises(DataError, match="does not match the published 00ff; the download was"):
        data.download_mnist("https://example.invalid/mnist.npz", "00ff")
    assert list((tmp_path / "cache").iterdir()) == []


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    mnist = load_mnist(str(write_idx_dir(tmp_path, train=40, test=10)))
    first = split_validation(mnist, 10, seed=3)
    again = split_validation(mnist, 10, seed=3)
    other = split_validation(mnist, 10, seed=4)
    assert np.array_equal(first.x_val, again.x_val)
    assert not np.array_equal(first.x_val, other.x_val)
    assert first.x_train.shape == (30, 28, 28) and first.x_val.shape == (10, 28, 28)
    assert first.x_train.dtype == np.uint8
    train_rows = {row.tobytes() for row in first.x_train}
    assert not any(row.tobytes() in train_rows for row in first.x_val)


def test_validation_size_must_fit(tmp_path):
    mnist = load_mnist(str(write_idx_dir(tmp_path, train=40, test=10)))
    with pytest.raises(DataError) as error:
        split_validation(mnist, 40, seed=0)
    assert str(error.value) == (f"data.validation_size: expected 1..39 (the 40 training images of "
                                f"{tmp_path} less one), received 40")


def test_text_file_as_npz_does_not_mention_pickling(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not data")
    with pytest.raises(DataError) as error:
        load_mnist(str(path))
    assert str(error.value) == (f"{path}: not a readable .npz file (not a zip archive of "
                                f"x_train, y_train, x_test, y_test)")
