"""The run directory: atomic writes, the `latest` pointer, and finding a run's model.

A run directory holds everything needed to use a run later, so evaluate and predict rebuild from
it rather than from today's defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from digitnet.errors import DigitnetError

RUNS_DIR_ENV = "DIGITNET_RUNS_DIR"
CONFIG_FILE = "config.yaml"
BEST_MODEL = "model-best.keras"
LAST_MODEL = "model-last.keras"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
LATEST = "latest"


class WriteError(DigitnetError):
    """A file of the run could not be written (a full disk, a read-only directory)."""


def runs_root() -> Path:
    """Where new runs go and where `latest` lives: $DIGITNET_RUNS_DIR or ./runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


def new_run_dir(run_dir: str | Path | None) -> Path:
    """The directory for a new run: `run_dir`, or runs/<timestamp> (unique)."""
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise DigitnetError(f"--run-dir {path}: already exists and is not empty "
                                f"(choose a new directory, or use --resume to continue it)")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = runs_root() / stamp
        suffix = 1
        while path.exists():
            suffix += 1
            path = runs_root() / f"{stamp}-{suffix}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path beside `target`; on success fsync it and rename it over `target`.

    A crash or an error leaves the previous `target` untouched and removes the temporary file.

    Raises:
      WriteError: naming `target`, for an OSError while writing it (e.g. a full disk).
    """
    target = Path(target)
    tmp = None
    try:
        handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                       suffix=target.suffix or ".tmp")
        os.close(handle)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; keep the usual permissions
        yield Path(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as error:
        reason = error.strerror or (str(error).strip() or type(error).__name__).splitlines()[0]
        raise WriteError(f"{target}: cannot write ({reason})") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: dict) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def save_model(model, path: str | Path) -> None:
    """Save a Keras model (weights and optimizer state) atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def copy_file(source: str | Path, target: str | Path) -> None:
    """Copy `source` over `target` atomically."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def point_latest(run_dir: Path) -> None:
    """Make runs/latest a symlink to `run_dir`, replacing the old one atomically."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    link = root / LATEST
    target = os.path.relpath(run_dir.resolve(), root.resolve())
    tmp = root / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def resolve_run(path: str | Path | None) -> Path:
    """The run directory named by `path`, or runs/latest when None."""
    if path is None:
        latest = runs_root() / LATEST
        if not latest.exists():
            raise DigitnetError(f"no run found at {latest} (train one with `digitnet train`, "
                                f"or pass a run directory or a .keras file)")
        return latest.resolve()
    path = Path(path)
    if not path.exists():
        raise DigitnetError(f"{path}: no such run directory or model file")
    return path


def resolve_model(path: str | Path | None) -> tuple[Path, Path | None]:
    """(model file, run directory or None) for a run directory, a model file, or runs/latest."""
    path = resolve_run(path)
    if path.is_dir():
        model = path / BEST_MODEL
        if not model.is_file():
            raise DigitnetError(f"{path}: no {BEST_MODEL} in this run directory "
                                f"(is it a digitnet run that finished an epoch?)")
        return model, path
    if path.suffix not in (".keras", ".tflite"):
        raise DigitnetError(f"{path}: expected a run directory, a .keras or a .tflite model file")
    run_dir = path.parent if (path.parent / CONFIG_FILE).is_file() else None
    return path, run_dir


def read_json(path: Path) -> dict:
    """A JSON object from `path`, with a one-line error if it is missing or corrupt."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DigitnetError(f"{path}: not found") from None
    except (OSError, ValueError) as error:
        raise DigitnetError(f"{path}: unreadable or corrupt JSON ({error})") from None
