"""`digitnet runs`: the runs in a folder, newest first, with a status for each.

Describing a run never fails: a missing or corrupt file makes the run `broken` and names the
file, so one bad directory cannot hide the others. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import yaml

from digitnet.config import parse_yaml
from digitnet.errors import DigitnetError, os_reason
from digitnet.runs import layout
from digitnet.runs.layout import FINISHED, INTERRUPTED, RUNNING, read_state
from digitnet.runs.lock import is_locked

BROKEN = "broken"
# Any of these marks a folder as a run (.lock: a training that has not written a file yet).
RUN_FILES = (layout.CONFIG_FILE, layout.MANIFEST_FILE, layout.METRICS_FILE, layout.STATE_FILE,
             layout.LOCK_FILE)
COLUMNS = {"run": "RUN", "status": "STATUS", "config": "CONFIG", "epochs": "EPOCHS",
           "test_accuracy": "TEST ACC", "train_seconds": "TRAIN S", "date": "DATE"}
NUMBER_FORMATS = {"test_accuracy": ".4f", "train_seconds": ".1f"}
DATE_SHOWN = "%Y-%m-%d %H:%M"  # a run's start as tables and the report show it
REPLACED_NOTE = (f"{layout.BEST_MODEL} was replaced after training; its test accuracy is "
                 f"unknown until `digitnet evaluate` measures it")


def list_runs(root: str | Path | None = None) -> list[dict]:
    """Describe every run in `root`, newest first.

    Args:
      root: the folder holding the runs; None for runs/ ($DIGITNET_RUNS_DIR), where a folder
        that does not exist yet means no runs.

    Returns:
      One `describe_run` dict per run directory (the `latest` link and other folders skipped);
      empty when there are none.

    Raises:
      DigitnetError: a `root` given is missing or not a folder.
    """
    folder = runs_folder(root)
    if root is None and not folder.exists():
        return []
    if not folder.exists():
        raise DigitnetError(f"{folder}: no such folder (train a run with `digitnet train`, or "
                            f"pass the folder that holds your runs)")
    if not folder.is_dir():
        raise DigitnetError(f"{folder}: not a folder (expected the folder that holds your runs)")
    try:
        runs = [path for path in folder.iterdir() if is_run_dir(path)]
    except OSError as error:  # a folder this user may not read
        raise DigitnetError(f"{folder}: cannot list the folder ({os_reason(error)})") from None
    return [describe_run(path) for path in sorted(runs, key=started_at, reverse=True)]


def runs_folder(root: str | Path | None) -> Path:
    """The folder `digitnet runs` lists: `root`, else runs/ ($DIGITNET_RUNS_DIR)."""
    return layout.runs_root() if root is None else Path(root)


def is_run_dir(path: Path) -> bool:
    """A folder holding any of a run's files; `latest` and other links are pointers, not runs."""
    try:
        return (path.is_dir() and not path.is_symlink() and not path.name.startswith(".")
                and any((path / name).exists() for name in RUN_FILES))
    except OSError:  # a folder this user may not look into: not one of theirs to list
        return False


def describe_run(run_dir: Path) -> dict:
    """The run's name, status, config name, epochs, test accuracy, training time and start.

    `status` is running, interrupted, failed, finished, or broken (`problem` says why); test
    accuracy and training time are given for finished runs only, and the test accuracy only
    while model-best.keras is the model training measured (`note` says when it is not).
    """
    run_dir = Path(run_dir)
    config, config_problem = read_mapping(run_dir / layout.CONFIG_FILE, parse_yaml)  # no aliases
    config_problem = config_problem or run_config_problem(config)
    manifest, manifest_problem = read_mapping(run_dir / layout.MANIFEST_FILE, json.loads)
    metrics, metrics_problem = read_mapping(run_dir / layout.METRICS_FILE, json.loads,
                                            layout.METRICS_FIELDS)
    state_problem = None
    if (run_dir / layout.STATE_FILE).exists():  # runs of older versions have none
        _, state_problem = read_mapping(run_dir / layout.STATE_FILE, json.loads,
                                        layout.STATE_FIELDS)
    status = RUNNING if is_locked(run_dir) else run_status(run_dir)
    problems = [config_problem, manifest_problem, state_problem]
    if status in (FINISHED, None):  # None: no state.json, as in runs of older versions
        problems += [metrics_problem, model_problem(run_dir)]
    problem = "; ".join(p for p in problems if p) if status != RUNNING else ""
    status = BROKEN if problem else status or FINISHED
    finished = status == FINISHED
    replaced = finished and layout.model_replaced(run_dir, metrics)
    state = read_state(run_dir) or {}
    return {
        "run": run_dir.name, "path": str(run_dir), "status": status, "problem": problem or None,
        "config": config.get("name"),
        "epochs": metrics.get("epochs") if finished else state.get("epoch"),
        "planned_epochs": nested(config, "training", "epochs") or state.get("epochs"),
        "test_accuracy": metrics.get("test_accuracy") if finished and not replaced else None,
        "train_seconds": metrics.get("train_seconds") if finished else None,
        "started": manifest.get("started"),
        "note": REPLACED_NOTE if replaced else None,
    }


def run_status(run_dir: Path) -> str | None:
    """The run's status for listing: a 'running' run whose process is gone is 'interrupted'."""
    state = read_state(run_dir)
    if state is None:
        return None
    if state.get("status") == RUNNING and not is_locked(run_dir):
        return INTERRUPTED  # killed (kill -9, power loss): resumable from its last checkpoint
    return state.get("status")


def model_problem(run_dir: Path) -> str | None:
    """What stops evaluate and predict from using a finished run's model, if anything."""
    from digitnet.inference.modelfile import keras_archive_problem  # the model-file gate's check

    if not (run_dir / layout.BEST_MODEL).is_file():
        return f"{layout.BEST_MODEL} missing"
    problem = keras_archive_problem(run_dir / layout.BEST_MODEL)
    return f"{layout.BEST_MODEL} corrupt ({problem})" if problem else None


def read_mapping(path: Path, parse, fields: dict | None = None) -> tuple[dict, str | None]:
    """(the file's mapping, None), or ({}, a short problem) when it is missing or corrupt, or
    when a key in `fields` (key -> type, see layout.fields_problem) holds another type."""
    if not path.is_file():
        return {}, f"{path.name} missing"
    try:
        value = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}, f"{path.name} unreadable or corrupt"
    if not isinstance(value, dict):
        return {}, f"{path.name} corrupt"
    problem = layout.fields_problem(value, fields or {})
    return ({}, f"{path.name} invalid ({problem})") if problem else (value, None)


def run_config_problem(config: dict) -> str | None:
    """Why the run's config.yaml would not load (a hand edit), or None."""
    from digitnet.config import from_dict

    try:
        from_dict(config)
    except DigitnetError as error:
        return f"{layout.CONFIG_FILE} invalid ({layout.shorten(str(error), 120)})"
    return None


def nested(mapping: dict, *keys):
    """mapping[k1][k2]..., or None where a level is missing or not a mapping."""
    for key in keys:
        mapping = mapping.get(key) if isinstance(mapping, dict) else None
    return mapping


def started_at(run_dir: Path) -> float:
    """When the run started (manifest.json), else the folder's modification time: the sort key."""
    manifest, _ = read_mapping(run_dir / layout.MANIFEST_FILE, json.loads)
    started = parse_started(manifest.get("started"))
    return started.timestamp() if started else run_dir.stat().st_mtime


def parse_started(text) -> datetime | None:
    try:
        return datetime.strptime(text, layout.TIME_FORMAT)  # manifest.json's "started"
    except (TypeError, ValueError):
        return None


def format_runs(runs: list[dict], root: str | Path | None = None) -> str:
    """An aligned table, one run per line, then one line per broken run saying what is wrong."""
    if not runs:
        return f"No runs in {runs_folder(root)} yet (train one with `digitnet train`)"
    rows = [list(COLUMNS.values())] + [[cell(run, key) for key in COLUMNS] for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip()
             for row in rows]
    lines += [f"{run['run']}: {run['problem'] or run['note']}" for run in runs
              if run["problem"] or run["note"]]
    return "\n".join(lines)


def cell(run: dict, key: str) -> str:
    """One table cell as text; '-' for what the run does not have."""
    if key == "epochs":
        done, planned = run["epochs"], run["planned_epochs"]
        if run["status"] == FINISHED or planned is None:
            return "-" if done is None else str(done)
        return f"{done or 0}/{planned}"
    if key == "date":
        started = parse_started(run["started"])
        return started.strftime(DATE_SHOWN) if started else "-"
    value = run[key]
    if value is None:
        return "-"
    if key in NUMBER_FORMATS and isinstance(value, (int, float)):
        return format(value, NUMBER_FORMATS[key])
    return str(value)
