"""The run directory: the name of every file in it, state.json, the checkpoint format, atomic
writes, the `latest` pointer, and finding a run's model.

A run directory holds everything needed to use a run later, so evaluate and predict rebuild from
it rather than from today's defaults:

    config.yaml          the resolved config          manifest.json   what produced the run
    state.json           status, epoch, best so far   metrics.json    final scores (finished runs)
    history.csv          one row per epoch            model-best.keras, model-last.keras
    model-best.tflite    LiteRT export of the best    model-best.tflite.json  what it was made from
    checkpoints/         epoch-NNNN.keras + .json
    evaluation-<split>.json, plots/, report.html      tensorboard/    per-epoch scalars
    .lock                held while a process trains  (and <runs root>/latest: the newest run)

After each epoch training writes `checkpoints/epoch-NNNN.keras` (weights and optimizer state),
then `checkpoints/epoch-NNNN.json` (everything else a resumed run needs: best-so-far, early
stopping, the dropout RNG state, the history). The .json is written last, so it marks a complete
checkpoint; it also holds the .keras file's sha256, so a truncated or corrupt file is detected
and the previous checkpoint is used instead. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from digitnet.errors import DigitnetError, InputError, os_reason
from digitnet.inputs import not_regular_reason

log = logging.getLogger(__name__)

RUNS_DIR_ENV = "DIGITNET_RUNS_DIR"
LATEST = "latest"  # in the runs root: a symlink to the newest run
KERAS_SUFFIX, LITERT_SUFFIX = ".keras", ".tflite"
CONFIG_FILE = "config.yaml"
BEST_MODEL = "model-best" + KERAS_SUFFIX
LAST_MODEL = "model-last" + KERAS_SUFFIX
BEST_LITERT = "model-best" + LITERT_SUFFIX  # the export of BEST_MODEL (see litert_path)
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.json"
CHECKPOINT_DIR = "checkpoints"
PLOTS_DIR = "plots"
REPORT_FILE = "report.html"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".lock"
# state.json's "status"
RUNNING, INTERRUPTED, FINISHED, FAILED = "running", "interrupted", "finished", "failed"
CHECKPOINT_NAME = re.compile(r"epoch-(\d{4,})\.(keras|json)")
TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.\w+")  # atomic_path's temporary files
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"  # state.json: updated; manifest.json: started; cards: created
# what predict and evaluate accept as a model file, besides a SavedModel folder (digitnet export)
MODEL_SUFFIXES = (KERAS_SUFFIX, LITERT_SUFFIX, ".onnx")
SAVED_MODEL_FILE = "saved_model.pb"  # marks a SavedModel folder
NUMBER, INTEGER, TEXT, FLAG, NONE = (int, float), int, str, bool, type(None)
# What each field of state.json and metrics.json holds; a hand-edited file that breaks this makes
# the run broken (`fields_problem`) rather than a traceback later.
STATE_FIELDS = {
    "status": TEXT, "epoch": INTEGER, "epochs": INTEGER, "best_epoch": INTEGER,
    "best_val_accuracy": (*NUMBER, NONE), "stopped_early": FLAG, "checkpoint": (TEXT, NONE),
    "message": TEXT, "pid": INTEGER, "updated": TEXT,
}
METRICS_FIELDS = {
    **{f"{split}_{name}": NUMBER for split in ("train", "val", "test")
       for name in ("loss", "accuracy")},
    "best_epoch": INTEGER, "epochs": INTEGER, "stopped_early": FLAG, "train_seconds": NUMBER,
    "checkpoint_seconds": NUMBER, "keras_sha256": TEXT,
}
TYPE_NAMES = {int: "an integer", float: "a number", str: "text", bool: "true or false",
              NONE: "null"}


class WriteError(DigitnetError):
    """A file of the run could not be written (a full disk, a read-only directory)."""


def litert_path(keras_path: str | Path) -> Path:
    """The LiteRT export that sits beside a .keras file: model-best.keras -> model-best.tflite."""
    return Path(keras_path).with_suffix(LITERT_SUFFIX)


def export_record(export: str | Path) -> Path:
    """The record written with an export: model-best.tflite -> model-best.tflite.json."""
    export = Path(export)
    return export.with_name(export.name + ".json")


def write_export_record(export: str | Path, source: str | Path, format_name: str) -> dict:
    """Record which .keras file `export` was made from (both sha256s) beside it; return the
    record.

    The model-file gate (digitnet/inference/modelfile.py) uses an export in place of its .keras
    file only while both hashes still match, so a replaced .keras is never answered by a stale
    export. The keys are those of the card `digitnet export` writes to the same file, so that a
    re-export of the run's LiteRT model keeps it answering.
    """
    record = {"format": format_name, "sha256": file_sha256(export),
              "source": {"file": Path(source).name, "sha256": file_sha256(source)}}
    write_json(export_record(export), record)
    return record


def evaluation_file(run_dir: str | Path, split: str) -> Path:
    """RUN_DIR/evaluation-<split>.json: the saved `digitnet evaluate` report of a split."""
    return Path(run_dir) / f"evaluation-{split}.json"


def runs_root() -> Path:
    """Where new runs go and where `latest` lives: $DIGITNET_RUNS_DIR or ./runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


def new_run_dir(run_dir: str | Path | None) -> Path:
    """Create the directory for a new run: `run_dir`, or runs/<timestamp> (unique).

    Raises:
      DigitnetError: it exists and is not empty, or it cannot be created (under /proc, on a
        read-only disk, below a file, a dangling or looping link).
    """
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InputError("run directory", path, "already exists and is not empty (choose a "
                                                    "new directory, or resume the run in it)")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = runs_root() / stamp
        suffix = 1
        while path.exists():
            suffix += 1
            path = runs_root() / f"{stamp}-{suffix}"
    make_dir(path, "the run directory")
    return path


def check_no_run(run_dir: str | Path) -> None:
    """Refuse to start a new run where another one has written its files: checked again under
    the run's lock, since two `digitnet train` given one empty directory both found it empty.

    Raises:
      InputError: `run_dir` holds a config.yaml or state.json.
    """
    if any((Path(run_dir) / name).exists() for name in (CONFIG_FILE, STATE_FILE)):
        raise InputError("run directory", run_dir, "already holds a run (started there "
                                                   "meanwhile); choose a new directory, or "
                                                   "resume the run in it")


def make_dir(path: Path, what: str) -> None:
    """mkdir -p `path`, or a one-line DigitnetError naming it and the reason."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = link_problem(path) or os_reason(error)
        raise DigitnetError(f"{path}: cannot create {what} ({reason})") from None


def link_problem(path: Path) -> str | None:
    """Why a symbolic link at `path` leads nowhere (dangling, or a loop), or None."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as error:
        return "a symbolic link to nothing" if error.errno == errno.ENOENT else os_reason(error)
    return None


def temporary_prefix(target: Path) -> str:
    """How `atomic_path`'s temporary files beside `target` begin (a dot hides them)."""
    return f".{target.name}."


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
        handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=temporary_prefix(target),
                                       suffix=target.suffix or ".tmp")
        os.close(handle)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; keep the usual permissions
        yield Path(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as error:
        raise WriteError(f"{target}: cannot write ({os_reason(error)})") from None
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


def check_latest() -> None:
    """Refuse to start a run whose `latest` could not be pointed at it.

    Raises:
      DigitnetError: runs/latest exists and is not a symbolic link (a real folder or file).
    """
    problem = latest_problem()
    if problem:
        raise DigitnetError(problem)


def latest_problem() -> str | None:
    """Why runs/latest cannot be (re)pointed, or None."""
    link = latest_link()
    if link.exists() and not link.is_symlink():
        return (f"{link}: not a symbolic link (digitnet points it at the newest run); move it "
                f"away or set ${RUNS_DIR_ENV} to another folder")
    return None


def latest_link() -> Path:
    """runs/latest: the link to the newest run, in the runs root."""
    return runs_root() / LATEST


def point_latest(run_dir: Path) -> None:
    """Make runs/latest a symlink to `run_dir`, replacing the old one atomically.

    Training calls it once the run has a usable model (model-best.keras), never before.

    Raises:
      DigitnetError: `latest` is not a link, or the runs folder cannot be written.
    """
    problem = latest_problem()
    if problem:
        raise DigitnetError(problem)
    root = runs_root()
    link = root / LATEST
    tmp = root / f".{LATEST}.{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(run_dir.resolve(), root.resolve())
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as error:
        raise WriteError(f"{link}: cannot point it at {run_dir} ({os_reason(error)})") from None
    finally:
        with contextlib.suppress(OSError):  # a read-only runs folder refuses even this
            tmp.unlink(missing_ok=True)


def resolve_run(path: str | Path | None) -> Path:
    """The run directory named by `path`, or runs/latest when None. A link to a run (runs/latest
    named on the command line too) is followed: that link moves with every run, and outputs
    should name the run that answered."""
    if path is None:
        latest = latest_link()
        if not latest.exists():
            raise DigitnetError(f"no run found at {latest} (train one with `digitnet train`, "
                                f"or pass a run directory or a .keras file)")
        return latest.resolve()
    path = Path(path)
    if not path.exists():
        raise DigitnetError(f"{path}: no such run directory or model file")
    return path.resolve() if path.is_symlink() and path.is_dir() else path


@dataclass(frozen=True)
class ResolvedModel:
    """The model a user named, found: its file (or SavedModel folder) and its run."""

    path: Path  # the model file: a run's model-best.keras, a named file or SavedModel folder
    run_dir: Path | None  # the run directory it belongs to, or None for a bare file


def resolve_model(path: str | Path | None) -> ResolvedModel:
    """The model file and its run directory (or None) for a run directory, a model file, a
    SavedModel folder (`digitnet export`'s), or runs/latest."""
    path = resolve_run(path)
    saved_model = (path / SAVED_MODEL_FILE).is_file()
    if path.is_dir() and not saved_model:
        model = path / BEST_MODEL
        if not model.is_file():
            raise DigitnetError(f"{path}: no {BEST_MODEL} in this run directory "
                                f"(is it a digitnet run that finished an epoch?)")
        return ResolvedModel(model, path)
    if not saved_model and path.suffix not in MODEL_SUFFIXES:
        raise DigitnetError(f"{path}: expected a run directory, a SavedModel folder, or a "
                            f"{', '.join(MODEL_SUFFIXES)} model file")
    reason = None if saved_model else not_regular_reason(path)
    if reason is not None:  # reading a named pipe would wait for a writer forever
        raise DigitnetError(f"{path}: model file {reason}")
    run_dir = path.parent if (path.parent / CONFIG_FILE).is_file() else None
    return ResolvedModel(path, run_dir)


def model_replaced(run_dir: Path, metrics: dict, keras_sha256: str | None = None) -> bool:
    """Whether the run's model-best.keras is no longer the model its metrics.json measured (a
    file copied over it). `keras_sha256`: the file's, when the caller has hashed it already.
    Runs of older versions, whose metrics.json records no sha256, are taken as they are."""
    recorded = metrics.get("keras_sha256")
    if not isinstance(recorded, str):
        return False
    if keras_sha256 is None:
        try:
            keras_sha256 = file_sha256(Path(run_dir) / BEST_MODEL)
        except OSError:
            return True
    return keras_sha256 != recorded


def fields_problem(mapping, fields: dict) -> str | None:
    """What is wrong with a run file's JSON object (`fields`: key -> type(s)), or None."""
    if not isinstance(mapping, dict):
        return f"expected a JSON object, received {type(mapping).__name__}"
    for key, kinds in fields.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        value = mapping.get(key)
        wrong_bool = isinstance(value, bool) and bool not in kinds  # True is an int to Python
        if key in mapping and (wrong_bool or not isinstance(value, kinds)):
            expected = " or ".join(dict.fromkeys(TYPE_NAMES[kind] for kind in kinds))
            return f"{key}: expected {expected}, received {short_repr(value)}"
    return None


def short_repr(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: messages stay one short line."""
    return shorten(repr(value), limit)


def shorten(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with '...' where it was cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_json(path: Path) -> dict:
    """A JSON object from `path`, with a one-line error if it is missing or corrupt."""
    reason = not_regular_reason(path)
    if reason is not None:  # a named pipe would wait for a writer forever
        raise DigitnetError(f"{path}: {reason}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DigitnetError(f"{path}: not found") from None
    except (OSError, ValueError) as error:
        raise DigitnetError(f"{path}: unreadable or corrupt JSON ({error})") from None
    problem = fields_problem(value, {})  # a hand-edited `[]` or `1`: every caller reads keys
    if problem:
        raise DigitnetError(f"{path}: {problem}")
    return value


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---- state.json ---------------------------------------------------------------------------------


def read_state(run_dir: str | Path, strict: bool = False) -> dict | None:
    """The run's state.json, or None when it is missing.

    Args:
      strict: raise for a corrupt or hand-edited state.json (resuming decides from it); else
        return None for it too (listing and status updates treat it as informational).

    Raises:
      DigitnetError: (strict only) naming state.json and what is wrong with it.
    """
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = read_json(path)
    except DigitnetError:
        if strict:
            raise
        return None
    problem = fields_problem(state, STATE_FIELDS)
    if problem and strict:
        raise DigitnetError(f"{path}: {problem}")
    return None if problem else state


def update_state(run_dir: str | Path, **fields) -> dict:
    """Merge `fields` into state.json and write it atomically; return the new state.

    The one writer of state.json. Its fields: status (RUNNING, INTERRUPTED, FINISHED, FAILED),
    epoch and epochs (done and planned), best_epoch, best_val_accuracy, stopped_early, checkpoint
    (the newest, relative to the run), message (why it stopped), pid, updated.
    """
    state = read_state(run_dir) or {}
    state.update(fields, updated=time.strftime(TIME_FORMAT))
    write_json(Path(run_dir) / STATE_FILE, state)
    return state


# ---- checkpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint's .json: what a resumed run restores besides the .keras file's contents."""

    epoch: int  # epochs completed
    sha256: str  # of the .keras file
    steps: int  # optimizer iterations, checked after loading
    best_epoch: int
    best_val_accuracy: float
    epochs_without_improvement: int  # early stopping's counter
    rng: list  # each Keras SeedGenerator's state (dropout), in model.variables order
    history: list  # the history.csv rows of epochs 1..epoch
    train_seconds: float  # so far, checkpoint writes excluded
    checkpoint_seconds: float  # so far


def checkpoint_file(run_dir: str | Path, epoch: int, suffix: str = KERAS_SUFFIX) -> Path:
    """checkpoints/epoch-NNNN.keras (or .json) of `run_dir`."""
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}{suffix}"


def write_checkpoint(run_dir: str | Path, model, snapshot: Snapshot) -> Snapshot:
    """Save `model` as the checkpoint of `snapshot.epoch`, then commit it with its .json.

    Returns:
      `snapshot` with the sha256 of the .keras file written.
    """
    path = checkpoint_file(run_dir, snapshot.epoch)
    path.parent.mkdir(exist_ok=True)
    save_model(model, path)
    snapshot = dataclasses.replace(snapshot, sha256=file_sha256(path))
    write_json(checkpoint_file(run_dir, snapshot.epoch, ".json"), dataclasses.asdict(snapshot))
    return snapshot  # from here on, the run resumes from this epoch


def read_snapshot(run_dir: str | Path, epoch: int) -> Snapshot:
    """The checkpoint of `epoch`, verified against its .keras file.

    Raises:
      DigitnetError: naming the file that is missing, truncated or corrupt.
    """
    meta = checkpoint_file(run_dir, epoch, ".json")
    try:
        snapshot = Snapshot(**read_json(meta))
    except TypeError:
        raise DigitnetError(f"{meta}: corrupt checkpoint description (unexpected fields)") from None
    model = checkpoint_file(run_dir, epoch)
    if not model.is_file():
        raise DigitnetError(f"{model}: missing")
    if file_sha256(model) != snapshot.sha256:
        raise DigitnetError(f"{model}: truncated or corrupt (its sha256 differs from {meta.name})")
    return snapshot


def saved_epochs(run_dir: str | Path) -> list[int]:
    """Epochs with a committed checkpoint (a .json), oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    names = folder.glob("epoch-*.json") if folder.is_dir() else ()
    matches = (CHECKPOINT_NAME.fullmatch(path.name) for path in names)
    return sorted(int(match[1]) for match in matches if match)


def latest_snapshot(run_dir: str | Path) -> Snapshot | None:
    """The newest good checkpoint, or None when no epoch was saved.

    A bad checkpoint is logged as a warning and the one before it is used.

    Raises:
      DigitnetError: checkpoints exist but none is good.
    """
    problems = []
    for epoch in reversed(saved_epochs(run_dir)):
        try:
            snapshot = read_snapshot(run_dir, epoch)
        except DigitnetError as error:
            log.warning("%s; trying the previous checkpoint", error)
            problems.append(str(error))
            continue
        return snapshot
    if problems:
        raise DigitnetError(f"{problems[0]}, and no earlier checkpoint is usable (delete "
                            f"{Path(run_dir) / CHECKPOINT_DIR} to start the run again)")
    return None


def prune_checkpoints(run_dir: str | Path, keep: set[int]) -> None:
    """Delete every checkpoint file (and stale temporary file) whose epoch is not in `keep`."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    paths = sorted(folder.iterdir(), key=lambda p: p.suffix != ".json") if folder.is_dir() else []
    for path in paths:  # each .json first: a half-pruned checkpoint is incomplete, not corrupt
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if (match and int(match[1]) not in keep) or TEMPORARY_NAME.fullmatch(path.name):
            path.unlink(missing_ok=True)


def remove_temporaries(run_dir: str | Path) -> None:
    """Delete temporary files left by a process killed while writing (only while locked)."""
    for path in Path(run_dir).iterdir():
        if path.is_file() and TEMPORARY_NAME.fullmatch(path.name):
            path.unlink(missing_ok=True)
