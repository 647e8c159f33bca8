"""What may change when a run resumes, and when there is nothing left to train.

The checkpoint format and state.json are the run directory's (digitnet/runs/layout.py); this
module holds only the resume policy. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from digitnet.config import Config, _require, load_config, read_config, to_dict
from digitnet.errors import InputError
from digitnet.runs import layout

# Config keys a resumed run may change: when to stop, and where the (hash-checked) data is.
RESUMABLE_KEYS = ("training.epochs", "training.early_stopping_patience", "data.source")


# ---- the config of a resumed run ----------------------------------------------------------------


RESUMED = "resumed run"  # how errors name the run being resumed
DIFFERENCES_SHOWN = 3  # config keys named when a resume would change more


def resume_config(run_dir: str | Path, config_file: str | None = None,
                  overrides: tuple[str, ...] = (), shortcuts: dict | None = None) -> Config:
    """The config to resume `run_dir` with: the run's own, changed only where that is allowed.

    The config file, overrides and shortcuts apply on top of the run's config; only the keys
    in RESUMABLE_KEYS may end up different.

    Args:
      run_dir: the run directory to resume.
      config_file, overrides, shortcuts: as for `load_config`.

    Returns:
      The checked config.

    Raises:
      InputError: not a run directory, a change that is not allowed, or nothing to train.
      ConfigError: a bad config, or fewer epochs than the run has trained.
    """
    run_dir = Path(run_dir)
    if not (run_dir / layout.CONFIG_FILE).is_file():
        raise InputError(RESUMED, run_dir, f"no {layout.CONFIG_FILE} (not a digitnet run "
                                           f"directory, or it was stopped before training started)")
    run = read_config(run_dir / layout.CONFIG_FILE)
    now = load_config(config_file, overrides, shortcuts, base=run)
    differences = config_differences(run, now)
    if differences:  # the first few: another model differs in dozens of keys
        shown = differences[:DIFFERENCES_SHOWN]
        if len(differences) > DIFFERENCES_SHOWN:
            shown.append(f"and {len(differences) - DIFFERENCES_SHOWN} more")
        raise InputError(RESUMED, run_dir, f"{'; '.join(shown)} (only "
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
    order: dict[str, int] = {}
    for key in [*before, *after]:  # a key in both keeps its place in the run's config
        order.setdefault(key, len(order))
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
    """Refuse fewer epochs than are trained, and a finished run that would not train further."""
    state = layout.read_state(run_dir, strict=True) or {}
    done, epochs = int(state.get("epoch", 0)), now.training.epochs
    check_epochs(run_dir, done, epochs)
    if state.get("status") != layout.FINISHED:
        return
    if epochs == done:
        epochs_done = f"{done} epoch" + ("" if done == 1 else "s")
        raise InputError(RESUMED, run_dir, f"already finished after {epochs_done} (set "
                                           f"training.epochs above {done} to train further)")
    if state.get("stopped_early") and \
            now.training.early_stopping_patience == run.training.early_stopping_patience:
        raise InputError(RESUMED, run_dir, f"stopped early after epoch {done} (set "
                                           f"training.early_stopping_patience larger, or 0 = off, "
                                           f"to train further)")


def check_epochs(run_dir: Path, done: int, epochs: int) -> None:
    """Refuse to plan fewer epochs than `run_dir` has already trained."""
    _require("training.epochs", epochs >= done,
             f"at least the {done} epochs {run_dir} has already trained", epochs)


def check_checkpoint_kept(run_dir: Path, snapshot) -> None:
    """Refuse to resume from nothing a run whose state.json records trained epochs: with its
    checkpoints gone, a resume would silently train from scratch over the run's models."""
    if snapshot is not None:
        return
    done = (layout.read_state(run_dir, strict=True) or {}).get("epoch", 0)
    if done > 0:
        trained = f"{done} trained epoch" + ("" if done == 1 else "s")
        raise InputError(RESUMED, run_dir, f"{layout.STATE_FILE} records {trained} but "
                                           f"{layout.CHECKPOINT_DIR}/ holds no checkpoint to "
                                           f"continue from (train it again in a new run directory)")


def check_same_data(run_dir: Path, files: dict) -> None:
    """Refuse to resume on data other than the run's (compared by sha256, not by path)."""
    recorded = layout.read_json(Path(run_dir) / layout.MANIFEST_FILE).get("data_files", {})
    for path, digest in files.items():
        if digest not in recorded.values():
            raise InputError(RESUMED, run_dir, f"{path} is not the data the run was trained on "
                                               f"(its sha256 is not in {layout.MANIFEST_FILE})")


BANK_KEY = "preprocessed_sha256"  # manifest.json: the training.augment.pipeline bank's sha256


def check_same_bank(run_dir: Path, bank: Path, digest: str) -> None:
    """Refuse to resume with a pipeline bank other than the one the run recorded (the
    preprocessing code that made the bank changed since); a run that recorded none passes."""
    recorded = layout.read_json(Path(run_dir) / layout.MANIFEST_FILE)
    if recorded.get(BANK_KEY, digest) != digest:
        raise InputError(RESUMED, run_dir, f"{bank} is not the preprocessed bank the run was "
                                           f"trained on (its sha256 is not {BANK_KEY} in "
                                           f"{layout.MANIFEST_FILE}: digitnet's preprocessing "
                                           f"changed since)")
