"""Test environment: TensorFlow backend on the CPU, quiet logs, tiny seeded MNIST-shaped data."""

import contextlib
import gzip
import os
import shutil
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the same numbers on every machine

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A tiny config that trains in a second or two: 40 training images, batch 5, no XLA compile.
TINY_OVERRIDES = (
    "training.epochs=2", "training.batch_size=5", "training.jit_compile=false",
    "training.steps_per_execution=2", "data.validation_size=10", "training.warmup_epochs=0",
)


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: digit d is a bright bar at rows 2d..2d+3, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count, dtype=np.uint8) % 10
    images = rng.integers(0, 40, size=(count, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels):
        image[4 + 2 * label: 7 + 2 * label, 4:24] = 255
    return images, labels


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Serialise a uint8 array as IDX."""
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(folder: Path, train: int = 50, test: int = 20, gz: bool = True) -> Path:
    """Write the four MNIST IDX files of synthetic digits into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train, 1), ("t10k", test, 2)):
        images, labels = synthetic_digits(count, seed)
        for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            payload = idx_bytes(array, magic)
            name = f"{split}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
            else:
                (folder / name).write_bytes(payload)
    return folder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A folder of tiny synthetic MNIST IDX files (50 train, 20 test)."""
    return write_idx_dir(tmp_path_factory.mktemp("tiny-mnist"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data_dir) -> Path:
    """A finished tiny training run directory, shared by tests that only read it."""
    from digitnet.config import load_config
    from digitnet.training.train import train_and_evaluate

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    run_dir.mkdir()
    with runs_root(run_dir.parent):
        train_and_evaluate(load_config(None, TINY_OVERRIDES), run_dir, str(tiny_data_dir))
    return run_dir


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the tiny run, without any evaluation other tests may have written."""
    copy = shutil.copytree(tiny_run, tmp_path / "run")
    for path in [*copy.glob("evaluation-*.json"), copy / "plots", copy / "report.html"]:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return copy


@contextlib.contextmanager
def runs_root(path: Path):
    """Point $DIGITNET_RUNS_DIR (where runs/latest lives) at `path` for a session fixture."""
    old = os.environ.get("DIGITNET_RUNS_DIR")
    os.environ["DIGITNET_RUNS_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DIGITNET_RUNS_DIR")
        else:
            os.environ["DIGITNET_RUNS_DIR"] = old


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """A private runs/ root for a test (runs/latest lives here)."""
    root = tmp_path / "runs"
    monkeypatch.setenv("DIGITNET_RUNS_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST: $DIGITNET_DATA_DIR, else ../shared/data/mnist; skips if neither exists."""
    configured = os.environ.get("DIGITNET_DATA_DIR")
    if configured:
        return Path(configured)
    beside = SHARED_DATA / "mnist"
    if not beside.is_dir():
        pytest.skip("full-MNIST test: set DIGITNET_DATA_DIR to a folder of the MNIST IDX files "
                    f"(none at {beside} either)")
    return beside


@pytest.fixture(scope="session")
def default_mnist_run(tmp_path_factory, mnist_dir) -> Path:
    """configs/default.yaml trained once on full MNIST; shared by the quality tests."""
    from digitnet.config import load_config
    from digitnet.training.train import train_and_evaluate

    run_dir = tmp_path_factory.mktemp("mnist-run") / "default"
    run_dir.mkdir()
    with runs_root(run_dir.parent):
        train_and_evaluate(load_config(REPO / "configs/default.yaml"), run_dir, str(mnist_dir))
    return run_dir


@pytest.fixture(scope="session")
def realdigits_dir() -> Path:
    """The labelled real images, read in place; skips when they are not beside the repo."""
    folder = Path(os.environ.get("DIGITNET_REALDIGITS_DIR", SHARED_DATA / "realdigits-dev"))
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"no realdigits-dev at {folder} (set DIGITNET_REALDIGITS_DIR)")
    return folder
