"""Resumable runs: the run's state file, its per-epoch checkpoints, and what may change on resume.

After each epoch training writes `checkpoints/epoch-NNNN.keras` (weights and optimizer state),
then `checkpoints/epoch-NNNN.json` (everything else a resumed run needs: best-so-far, early
stopping, the dropout RNG state, the history). The .json is written last, so it marks a complete
checkpoint; it also holds the .keras file's sha256, so a truncated or corrupt file is detected
and the previous checkpoint is used instead. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from digitnet.config import Config, from_dict, load_config, read_yaml, to_dict
from digitnet.errors import DigitnetError
from digitnet.runs import layout
from digitnet.runs.lock import is_locked

STATE_FILE = "state.json"
CHECKPOINT_DIR = "checkpoints"
RUNNING, INTERRUPTED, FINISHED, FAILED = "running", "interrupted", "finished", "failed"
# Config keys a resumed run may change: when to stop, and where the (hash-checked) data is.
RESUMABLE_KEYS = ("training.epochs", "training.early_stopping_patience", "data.source")
CHECKPOINT_NAME = re.compile(r"epoch-(\d{4,})\.(keras|json)")
TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.\w+")  # layout.atomic_path's temporary files


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


# ---- checkpoints --------------------------------------------------------------------------------


def checkpoint_file(run_dir: Path, epoch: int, suffix: str = ".keras") -> Path:
    """checkpoints/epoch-NNNN.keras (or .json) of `run_dir`."""
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}{suffix}"


def write_snapshot(run_dir: Path, snapshot: Snapshot) -> None:
    """Write the checkpoint's .json, which commits the checkpoint."""
    layout.write_json(checkpoint_file(run_dir, snapshot.epoch, ".json"),
                      dataclasses.asdict(snapshot))


def read_snapshot(run_dir: Path, epoch: int) -> Snapshot:
    """The checkpoint of `epoch`, verified against its .keras file.

    Raises:
      DigitnetError: naming the file that is missing, truncated or corrupt.
    """
    meta = checkpoint_file(run_dir, epoch, ".json")
    try:
        snapshot = Snapshot(**layout.read_json(meta))
    except TypeError:
        raise DigitnetError(f"{meta}: corrupt checkpoint description (unexpected fields)") from None
    model = checkpoint_file(run_dir, epoch)
    if not model.is_file():
        raise DigitnetError(f"{model}: missing")
    if file_sha256(model) != snapshot.sha256:
        raise DigitnetError(f"{model}: truncated or corrupt (its sha256 differs from {meta.name})")
    return snapshot


def saved_epochs(run_dir: Path) -> list[int]:
    """Epochs with a committed checkpoint (a .json), oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    names = folder.glob("epoch-*.json") if folder.is_dir() else ()
    matches = (CHECKPOINT_NAME.fullmatch(path.name) for path in names)
    return sorted(int(match[1]) for match in matches if match)


def latest_snapshot(run_dir: Path) -> Snapshot | None:
    """The newest good checkpoint, or None when no epoch was saved.

    A bad checkpoint is reported on stderr and the one before it is used.

    Raises:
      DigitnetError: checkpoints exist but none is good.
    """
    problems = []
    for epoch in reversed(saved_epochs(run_dir)):
        try:
            snapshot = read_snapshot(run_dir, epoch)
        except DigitnetError as error:
            print(f"Warning: {error}; trying the previous checkpoint", file=sys.stderr)
            problems.append(str(error))
            continue
        return snapshot
    if problems:
        raise DigitnetError(f"{problems[0]}, and no earlier checkpoint is usable (delete "
                            f"{Path(run_dir) / CHECKPOINT_DIR} to start the run again)")
    return None


def prune_checkpoints(run_dir: Path, keep: set[int]) -> None:
    """Delete every checkpoint file (and stale temporary file) whose epoch is not in `keep`."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    paths = sorted(folder.iterdir(), key=lambda p: p.suffix != ".json") if folder.is_dir() else []
    for path in paths:  # each .json first: a half-pruned checkpoint is incomplete, not corrupt
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if (match and int(match[1]) not in keep) or TEMPORARY_NAME.fullmatch(path.name):
            path.unlink(missing_ok=True)


def remove_temporaries(run_dir: Path) -> None:
    """Delete temporary files left by a process killed while writing (only while locked)."""
    for path in Path(run_dir).iterdir():
        if path.is_file() and TEMPORARY_NAME.fullmatch(path.name):
            path.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---- state.json ---------------------------------------------------------------------------------


def read_state(run_dir: Path) -> dict | None:
    """The run's state.json, or None when it is missing or unreadable (it is informational)."""
    try:
        return layout.read_json(Path(run_dir) / STATE_FILE)
    except DigitnetError:
        return None


def update_state(run_dir: Path, **fields) -> dict:
    """Merge `fields` into state.json and write it atomically; return the new state."""
    state = read_state(run_dir) or {}
    state.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    layout.write_json(Path(run_dir) / STATE_FILE, state)
    return state


def run_status(run_dir: Path) -> str | None:
    """The run's status for listing: a 'running' run whose process is gone is 'interrupted'."""
    state = read_state(run_dir)
    if state is None:
        return None
    if state.get("status") == RUNNING and not is_locked(run_dir):
        return INTERRUPTED  # killed (kill -9, power loss): resumable from its last checkpoint
    return state.get("status")


# ---- the config of a resumed run ----------------------------------------------------------------


def resume_config(run_dir: str | Path, run_dir_option: str | None = None,
                  config_file: str | None = None, overrides: tuple[str, ...] = (),
                  shortcuts: dict | None = None) -> Config:
    """The config to resume `run_dir` with: the run's own, changed only where that is allowed.

    --config, --set and the shortcuts apply on top of the run's config; only the keys in
    RESUMABLE_KEYS may end up different.

    Args:
      run_dir: the run directory given to --resume.
      run_dir_option: --run-dir, which must not be given with --resume.
      config_file, overrides, shortcuts: as for `load_config`.

    Returns:
      The checked config.

    Raises:
      DigitnetError: not a run directory, a change that is not allowed, or nothing to train.
    """
    run_dir = Path(run_dir)
    if run_dir_option is not None:
        raise DigitnetError("--run-dir: not allowed with --resume (a run resumes in its own "
                            "directory)")
    if not (run_dir / layout.CONFIG_FILE).is_file():
        raise DigitnetError(f"--resume {run_dir}: no {layout.CONFIG_FILE} (not a digitnet run "
                            f"directory, or it was stopped before training started)")
    run = from_dict(read_yaml(run_dir / layout.CONFIG_FILE))
    now = load_config(config_file, overrides, shortcuts, base=run)
    differences = config_differences(run, now)
    if differences:
        raise DigitnetError(f"--resume {run_dir}: {'; '.join(differences)} (only "
                            f"{', '.join(RESUMABLE_KEYS[:2])} may change on resume)")
    check_more_to_do(run_dir, run, now)
    return now


def config_differences(run: Config, now: Config) -> list[str]:
    """'key differs (run: a, now: b)' for each value that differs outside RESUMABLE_KEYS."""
    before, after = flatten(to_dict(run)), flatten(to_dict(now))
    return [f"{key} differs (run: {show(before, key)}, now: {show(after, key)})"
            for key in sorted(before.keys() | after.keys(), key=key_order(before, after))
            if key not in RESUMABLE_KEYS and show(before, key) != show(after, key)]


def show(values: dict, key: str) -> str:
    """A config value as the message shows it; 'none' where one side lacks the key."""
    return repr(values[key]) if key in values else "none"


def key_order(before: dict, after: dict):
    """Sort keys as they appear in the config (run first), not alphabetically."""
    order = {key: index for index, key in enumerate([*before, *after])}
    return lambda key: order[key]


def flatten(value, prefix: str = "") -> dict:
    """Every leaf of nested dicts and lists by its dotted key: {'model.layers.1.units': 256}."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    out = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_more_to_do(run_dir: Path, run: Config, now: Config) -> None:
    """Refuse --epochs below what is trained, and a finished run that would not train further."""
    state = read_state(run_dir) or {}
    done, epochs = int(state.get("epoch", 0)), now.training.epochs
    if epochs < done:
        raise DigitnetError(f"--epochs {epochs}: expected at least the {done} epochs {run_dir} "
                            f"has already trained")
    if state.get("status") != FINISHED:
        return
    if epochs == done:
        raise DigitnetError(f"--resume {run_dir}: already finished after {done} epochs (pass "
                            f"--epochs N, more than {done}, to train further)")
    if state.get("stopped_early") and \
            now.training.early_stopping_patience == run.training.early_stopping_patience:
        raise DigitnetError(f"--resume {run_dir}: stopped early after epoch {done} (pass "
                            f"--set training.early_stopping_patience=N, larger or 0 = off, to "
                            f"train further)")


def check_same_data(run_dir: Path, files: dict) -> None:
    """Refuse to resume on data other than the run's (compared by sha256, not by path)."""
    recorded = layout.read_json(Path(run_dir) / layout.MANIFEST_FILE).get("data_files", {})
    for path, digest in files.items():
        if digest not in recorded.values():
            raise DigitnetError(f"--resume {run_dir}: {path} is not the data the run was trained "
                                f"on (its sha256 is not in {layout.MANIFEST_FILE})")
