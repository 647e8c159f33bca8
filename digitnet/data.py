"""Load MNIST from an IDX folder, a Keras-layout .npz, or a verified download; split it.

Every file read is validated (magic numbers, shapes, counts, label range) and hashed, so the
run's manifest can say exactly which data trained it.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet.errors import DigitnetError

log = logging.getLogger(__name__)

DATA_DIR_ENV = "DIGITNET_DATA_DIR"
CACHE_DIR_ENV = "DIGITNET_CACHE_DIR"
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
# Keras' published hash of mnist.npz
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
IDX_FILES = {  # split -> (images, labels), the canonical names
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
PIXEL_MAX = 255.0  # uint8 pixels are divided by this into the models' [0, 1] (here and in train)
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # 0x00000803 (uint8, 3 dims), 0x00000801 (uint8, 1 dim)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(DigitnetError):
    """A missing, truncated or malformed dataset file."""


@dataclass(frozen=True)
class Mnist:
    """The raw dataset: uint8 images (N, 28, 28) and uint8 labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    files: dict = field(default_factory=dict)  # path -> sha256 of every file read
    source: str = ""


@dataclass(frozen=True)
class Splits:
    """uint8 images (N, 28, 28) and int32 labels; `to_model_input` makes the models' input.

    The images stay uint8 until used: a quarter of float32's memory, and the training pipeline
    converts each batch as it draws it.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def resolve_source(data_dir: str | None, config_source: str = "") -> str:
    """Pick the data source: `data_dir`, then $DIGITNET_DATA_DIR, then the config, then download."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or config_source or "download"


def load_mnist(source: str) -> Mnist:
    """Load MNIST from `source`.

    Args:
      source: a folder of the four IDX files (gzipped or not), a Keras-layout `.npz`, or
        "download" for Keras' mnist.npz, cached and verified by sha256.

    Returns:
      The validated dataset with the sha256 of each file read.

    Raises:
      DataError: the source is missing, or a file in it is truncated or malformed.
    """
    if source == "download":
        return load_npz(download_mnist())
    path = Path(source).expanduser()
    if path.is_dir():
        return load_idx_dir(path)
    if path.is_file():
        return load_npz(path)
    raise DataError(f"{source}: data source not found (expected a folder of MNIST IDX files "
                    f"or an .npz file)")


# ---- IDX ----------------------------------------------------------------------------------------


def find_idx_file(folder: Path, name: str) -> Path:
    """The path of IDX file `name` in `folder`, gzipped or not."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: missing {name}[.gz] (expected the four MNIST IDX files)")


def read_payload(path: Path) -> tuple[bytes, str]:
    """The file's content, gunzipped when its name ends in .gz, and the file's sha256."""
    try:
        raw = path.read_bytes()
        payload = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    return payload, hashlib.sha256(raw).hexdigest()


def parse_idx(payload: bytes, path: Path, magic: int, ndim: int) -> np.ndarray:
    """Decode one uint8 IDX array, checking its magic number and length."""
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"{path}: truncated IDX header ({len(payload)} bytes)")
    found = int.from_bytes(payload[:4], "big")
    if found != magic:
        raise DataError(f"{path}: bad IDX magic number {found:#010x}, expected {magic:#010x}")
    shape = tuple(int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(payload) != expected:
        raise DataError(f"{path}: {len(payload)} bytes, expected {expected} for shape {shape} "
                        f"(truncated or corrupt)")
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(shape)


def load_idx_split(folder: Path, split: str, files: dict) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split from an IDX folder, hashing each file into `files`."""
    arrays = []
    for name, magic, ndim in zip(IDX_FILES[split], (IMAGE_MAGIC, LABEL_MAGIC), (3, 1)):
        path = find_idx_file(folder, name)
        payload, files[str(path)] = read_payload(path)
        arrays.append(parse_idx(payload, path, magic, ndim))
    images, labels = arrays
    check_arrays(images, labels, f"{folder} ({split})")
    return images, labels


def load_idx_dir(folder: Path) -> Mnist:
    files: dict = {}
    x_train, y_train = load_idx_split(folder, "train", files)
    x_test, y_test = load_idx_split(folder, "test", files)
    return Mnist(x_train, y_train, x_test, y_test, files, str(folder))


# ---- npz and download ---------------------------------------------------------------------------


def load_npz(path: Path) -> Mnist:
    """Load a Keras-layout mnist.npz without pickle."""
    if not zipfile.is_zipfile(path):  # numpy would blame pickling for any other file
        raise DataError(f"{path}: not a readable .npz file (not a zip archive of "
                        f"{', '.join(NPZ_KEYS)})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing} (expected {list(NPZ_KEYS)})")
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    check_arrays(arrays["x_train"], arrays["y_train"], f"{path} (train)")
    check_arrays(arrays["x_test"], arrays["y_test"], f"{path} (test)")
    return Mnist(**arrays, files={str(path): sha256_file(path)}, source=str(path))


def check_arrays(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    """Reject arrays that are not N 28x28 uint8 images with N labels in 0-9."""
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8 of shape (N, 28, 28), "
                        f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be in 0-9, found {labels.min()}..{labels.max()}")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "digitnet")


def download_mnist(url: str = MNIST_URL, sha256: str = MNIST_SHA256) -> Path:
    """Keras' mnist.npz in the cache, downloaded once and verified; a bad download is deleted."""
    target = cache_dir() / "mnist.npz"
    if target.is_file() and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("Downloading MNIST from %s to %s (set $%s to use a local copy)", url, target,
             DATA_DIR_ENV)
    handle, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(handle)
    try:
        urllib.request.urlretrieve(url, tmp)
        found = sha256_file(Path(tmp))
        if found != sha256:
            raise DataError(f"{url}: sha256 {found} does not match the published {sha256}; "
                            f"the download was deleted")
        os.replace(tmp, target)
    except OSError as error:
        raise DataError(f"{url}: download failed ({error}); point ${DATA_DIR_ENV} or the data "
                        f"source at a local copy of MNIST") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- splits -------------------------------------------------------------------------------------


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], the models' input."""
    return (images.astype(np.float32) / PIXEL_MAX)[..., None]


def split_validation(mnist: Mnist, validation_size: int, seed: int) -> Splits:
    """Hold out a seeded random `validation_size` images of the training set for validation."""
    if not 0 < validation_size < len(mnist.x_train):
        raise DataError(f"data.validation_size: expected 1..{len(mnist.x_train) - 1}, "
                        f"received {validation_size}")
    order = np.random.default_rng(seed).permutation(len(mnist.x_train))
    val, train = order[:validation_size], order[validation_size:]
    return Splits(
        x_train=mnist.x_train[train], y_train=mnist.y_train[train].astype(np.int32),
        x_val=mnist.x_train[val], y_val=mnist.y_train[val].astype(np.int32),
        x_test=mnist.x_test, y_test=mnist.y_test.astype(np.int32),
    )
