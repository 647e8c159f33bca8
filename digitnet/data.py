"""Load MNIST from an IDX folder, a Keras-layout .npz, or a verified download; split it.

Every file read is validated (magic numbers, shapes, counts, label range) and hashed, so the
run's manifest can say exactly which data trained it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import logging
import math
import os
import tempfile
import threading
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet.errors import DigitnetError, first_line, os_reason
from digitnet.runs.layout import atomic_path, file_sha256

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
MAX_DEFLATE_RATIO = 1032  # deflate's limit: no gzip or zip member inflates more than this


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
    # Where the training images are in the source's training set (split_validation's seeded
    # order), so that the pipeline bank made once over that whole set serves every seed and
    # validation size; None where the splits came from elsewhere.
    train_index: np.ndarray | None = None


def resolve_source(data_dir: str | None, config_source: str = "") -> str:
    """Pick the data source: `data_dir`, then $DIGITNET_DATA_DIR, then the config, then download."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or config_source or "download"


# source -> (its files' sizes and times when the load started, the load under way)
_PREFETCHED: dict[str, tuple[tuple, concurrent.futures.Future]] = {}


def prefetch_mnist(source: str) -> None:
    """Start loading MNIST from a local `source` on a thread of its own, for the next
    `load_mnist(source)` to take if the files are unchanged by then.

    Loading is mostly decompressing and hashing, which run outside Python's lock, so it
    overlaps with importing TensorFlow, which is mostly Python (`digitnet train` starts it
    first). A download is not started early; an error is raised by `load_mnist`, as usual.
    """
    if source == "download" or source in _PREFETCHED:
        return
    future: concurrent.futures.Future = concurrent.futures.Future()

    def load() -> None:
        try:
            future.set_result(read_mnist(source))
        except BaseException as error:  # handed to load_mnist's caller
            future.set_exception(error)

    _PREFETCHED[source] = (source_state(source), future)
    threading.Thread(target=load, name="prefetch-mnist", daemon=True).start()


def source_state(source: str) -> tuple:
    """The size and modification time of each file under `source` (empty when there is none)."""
    path = Path(source).expanduser()
    try:
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        return tuple((str(file), file.stat().st_size, file.stat().st_mtime_ns) for file in files)
    except OSError:
        return ()


def load_mnist(source: str) -> Mnist:
    """Load MNIST from `source` (or take what `prefetch_mnist(source)` loaded).

    Args:
      source: a folder of the four IDX files (gzipped or not), a Keras-layout `.npz`, or
        "download" for Keras' mnist.npz, cached and verified by sha256.

    Returns:
      The validated dataset with the sha256 of each file read.

    Raises:
      DataError: the source is missing, or a file in it is truncated or malformed.
    """
    state, prefetched = _PREFETCHED.pop(source, ((), None))
    if prefetched is not None and state and state == source_state(source):
        return prefetched.result()
    return read_mnist(source)


def read_mnist(source: str) -> Mnist:
    """Read MNIST from `source` now: `load_mnist` without a prefetched load."""
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


def open_idx(path: Path):
    """A binary stream of the IDX file's content, gunzipped as read when its name ends in .gz."""
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    except OSError as error:
        raise DataError(f"{path}: cannot read ({os_reason(error)})") from None


def read_bytes(stream, path: Path, count: int) -> bytes:
    """Up to `count` bytes of an open IDX file; a failure (a bad gzip stream) names the file."""
    try:
        return stream.read(count)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read ({error})") from None


def read_idx_header(stream, path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    """The shape an IDX header gives, after checking its magic number."""
    header = read_bytes(stream, path, 4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(header)} bytes)")
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        raise DataError(f"{path}: bad IDX magic number {found:#010x}, expected {magic:#010x}")
    return tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))


def read_idx_body(stream, path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 array of `shape` that follows the header: exactly that many bytes are read,
    and only when the file can hold them, so a corrupt header or a gzip bomb costs no memory."""
    header, size = 4 + 4 * len(shape), math.prod(shape)
    stored = path.stat().st_size
    # deflate inflates at most MAX_DEFLATE_RATIO-fold: more than that cannot be in the file
    room = stored * MAX_DEFLATE_RATIO if path.suffix == ".gz" else stored - header
    if size > room:
        raise DataError(f"{path}: its header gives shape {shape} ({header + size} bytes), more "
                        f"than its {stored} bytes can hold (truncated or corrupt)")
    payload = read_bytes(stream, path, size)
    if len(payload) != size:
        raise DataError(f"{path}: {header + len(payload)} bytes, expected {header + size} for "
                        f"shape {shape} (truncated or corrupt)")
    if read_bytes(stream, path, 1):
        raise DataError(f"{path}: longer than the {header + size} bytes its header gives for "
                        f"shape {shape} (corrupt)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def load_idx_split(folder: Path, split: str, files: dict) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split from an IDX folder, hashing each file into `files`.

    Both headers are read first: counts that differ are refused before any pixel is read.
    """
    paths = [find_idx_file(folder, name) for name in IDX_FILES[split]]
    where = f"{folder} ({split})"
    with open_idx(paths[0]) as image_stream, open_idx(paths[1]) as label_stream:
        image_shape = read_idx_header(image_stream, paths[0], IMAGE_MAGIC, 3)
        label_shape = read_idx_header(label_stream, paths[1], LABEL_MAGIC, 1)
        check_shapes(image_shape, label_shape, where)
        images = read_idx_body(image_stream, paths[0], image_shape)
        labels = read_idx_body(label_stream, paths[1], label_shape)
    for path in paths:
        files[str(path)] = file_sha256(path)
    check_arrays(images, labels, where)
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
        check_npz_members(path)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"{path}: not a readable .npz file ({first_line(error)})") from None
    check_arrays(arrays["x_train"], arrays["y_train"], f"{path} (train)")
    check_arrays(arrays["x_test"], arrays["y_test"], f"{path} (test)")
    return Mnist(**arrays, files={str(path): file_sha256(path)}, source=str(path))


def check_shapes(images: tuple, labels: tuple, where: str, dtype: str = "uint8") -> None:
    """Reject shapes that are not N 28x28 uint8 images with N labels: from headers, before
    reading any data, or from arrays."""
    if len(images) != 3 or tuple(images[1:]) != (28, 28) or dtype != "uint8":
        raise DataError(f"{where}: images must be uint8 of shape (N, 28, 28), "
                        f"got {dtype} {tuple(images)}")
    if images[0] == 0:
        raise DataError(f"{where}: no images (0 of shape (28, 28))")
    if len(labels) != 1 or labels[0] != images[0]:
        raise DataError(f"{where}: {images[0]} images but labels of shape {tuple(labels)}")


def check_npz_members(path: Path) -> None:
    """Check each array's .npy header against its size in the archive before numpy reads it:
    a header claiming more than the member holds (or than its compressed bytes can inflate
    to) would make numpy allocate that much first."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        missing = [key for key in NPZ_KEYS if f"{key}.npy" not in names]
        if missing:
            raise DataError(f"{path}: missing arrays {missing} (expected {list(NPZ_KEYS)})")
        for key in NPZ_KEYS:
            info = archive.getinfo(f"{key}.npy")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                held = info.file_size - member.tell()
            if dtype.hasobject:
                raise DataError(f"{path}: not a readable .npz file ({key} holds Python objects, "
                                f"which would need pickle)")
            claimed = math.prod(shape) * dtype.itemsize
            if claimed != held or info.file_size > info.compress_size * MAX_DEFLATE_RATIO + 1024:
                raise DataError(f"{path}: {key} claims shape {shape} of {dtype} ({claimed} "
                                f"bytes) but holds {held} bytes (truncated or corrupt)")


def check_arrays(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    """Reject arrays that are not N 28x28 uint8 images with N labels in 0-9."""
    check_shapes(images.shape, labels.shape, where, str(images.dtype))
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be in 0-9, found {labels.min()}..{labels.max()}")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "digitnet")


def cached_images(path: Path, shape: tuple, make, valid=None) -> np.ndarray:
    """The uint8 array of `shape` kept at `path` (a generated bank in the cache folder), or
    `make()`'s, then kept there; a file that is not such an array (unreadable, another shape or
    type, a header claiming more than memory holds, or refused by `valid(bank)` when given) is
    made again, and an unwritable folder only costs the time again next run."""
    with contextlib.suppress(OSError, ValueError, EOFError, MemoryError):
        bank = np.load(path)
        if (bank.dtype == np.uint8 and bank.shape == tuple(shape)
                and (valid is None or valid(bank))):
            return bank
    bank = make()
    with contextlib.suppress(OSError, DigitnetError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.save(tmp, bank)
    return bank


def download_mnist(url: str = MNIST_URL, sha256: str = MNIST_SHA256) -> Path:
    """Keras' mnist.npz in the cache, downloaded once and verified; a bad download is deleted."""
    target = cache_dir() / "mnist.npz"
    if target.is_file() and file_sha256(target) == sha256:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{target.parent}: cannot make the download cache folder "
                        f"({os_reason(error)}); set ${CACHE_DIR_ENV} to a folder, or "
                        f"${DATA_DIR_ENV} to a local copy of MNIST") from None
    log.info("Downloading MNIST from %s to %s (set $%s to use a local copy)", url, target,
             DATA_DIR_ENV)
    handle, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(handle)
    try:
        urllib.request.urlretrieve(url, tmp)
        found = file_sha256(Path(tmp))
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


# ---- splits -------------------------------------------------------------------------------------


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], the models' input."""
    scaled = images.astype(np.float32)
    scaled /= PIXEL_MAX  # in place: one float32 copy of the images, not two
    return scaled[..., None]


FORWARD_CHUNK = 1000  # images per forward pass: bounded memory for any model


def forward(model, images: np.ndarray, then=np.asarray, chunk: int = FORWARD_CHUNK) -> np.ndarray:
    """`then` of `model`'s outputs for `images`, called directly a chunk at a time.

    No predict function is compiled (for one pass over the data that cost more than the pass),
    and uint8 (N, 28, 28) images become model input one chunk at a time, never all at once;
    float32 images are taken as model input already. Every call sees `chunk` images (a short
    last chunk is padded, and its padding dropped): JAX compiles each op for the shapes it
    sees, so one shape is compiled once. `then` turns each chunk's outputs into the numpy rows
    kept (by default, the outputs themselves).
    """
    def rows(start: int) -> np.ndarray:
        part = images[start: start + chunk]
        count = len(part)
        if 0 < count < chunk:
            part = np.concatenate([part, np.zeros((chunk - count, *part.shape[1:]), part.dtype)])
        part = to_model_input(part) if part.dtype == np.uint8 else part
        return then(model(part, training=False))[:count]

    return np.concatenate([rows(start) for start in range(0, max(len(images), 1), chunk)])


def split_validation(mnist: Mnist, validation_size: int, seed: int) -> Splits:
    """Hold out a seeded random `validation_size` images of the training set for validation."""
    count = len(mnist.x_train)
    if count < 2:
        raise DataError(f"{mnist.source}: only {count} training image; at least 2 are needed "
                        f"(one to train on, one to validate)")
    if not 0 < validation_size < count:
        raise DataError(f"data.validation_size: expected 1..{count - 1} (the {count} training "
                        f"images of {mnist.source} less one), received {validation_size}")
    order = np.random.default_rng(seed).permutation(len(mnist.x_train))
    val, train = order[:validation_size], order[validation_size:]
    return Splits(
        x_train=mnist.x_train[train], y_train=mnist.y_train[train].astype(np.int32),
        x_val=mnist.x_train[val], y_val=mnist.y_train[val].astype(np.int32),
        x_test=mnist.x_test, y_test=mnist.y_test.astype(np.int32),
        train_index=train,
    )
