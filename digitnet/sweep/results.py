"""What a sweep found: the table printed as trials finish, best.yaml, and trials as rows.

Nothing here trains; the table rows and best.yaml come from the study's records alone, so any
worker (on any machine) can write them for the whole study.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import yaml

from digitnet.config import save_config
from digitnet.runs import layout
from digitnet.sweep.spec import SweepSpec
from digitnet.sweep.study import SURPLUS_ATTR

log = logging.getLogger(__name__)
BEST_FILE = "best.yaml"
FIXED_COLUMNS = (("trial", "TRIAL", 5), ("state", "STATE", 11), ("val_accuracy", "VAL ACC", 7),
                 ("train_seconds", "TRAIN S", 7), ("epochs", "EPOCHS", 6))
FORMATS = {"val_accuracy": ".4f", "test_accuracy": ".4f", "train_seconds": ".1f"}
_params: list[str] = []  # the searched keys, set by print_header for the rows that follow


def column_name(key: str) -> str:
    """A searched key without its section: training.learning_rate -> learning_rate."""
    return key.split(".", 1)[-1]


def print_header(spec: SweepSpec) -> None:
    """The table's header line; the rows follow as trials finish (print_row)."""
    _params[:] = list(spec.space)
    cells = [title.ljust(width) for _, title, width in FIXED_COLUMNS]
    cells += [column_name(key).ljust(param_width(key)) for key in _params]
    log.info("%s", "  ".join(cells + ["NOTE"]))


def param_width(key: str) -> int:
    return max(len(column_name(key)), 8)


def print_row(trial) -> None:
    """One finished trial as a table row."""
    row = trial_row(trial)
    cells = [format_cell(row[key], FORMATS.get(key)).ljust(width)
             for key, _, width in FIXED_COLUMNS]
    keys = _params or list(trial.params)
    cells += [format_cell(trial.params.get(key)).ljust(param_width(key)) for key in keys]
    log.info("%s", "  ".join(cells + [row["note"]]).rstrip())


def trial_row(trial) -> dict:
    """A trial's number, state, metrics and note, as plain values."""
    attrs = trial.user_attrs
    state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed",
             "RUNNING": "running", "WAITING": "queued"}[trial.state.name]
    if attrs.get("stopped"):
        state = "interrupted"
    notes = []
    retried = trial.system_attrs.get("failed_trial")
    if retried is not None:
        notes.append(f"retry of {retried}")
    for key in ("pruned", "error", "stopped"):
        if attrs.get(key):
            notes.append(attrs[key])
    if attrs.get("stopped"):
        notes.append("queued again")
    return {"trial": trial.number, "state": state, "val_accuracy": attrs.get("val_accuracy"),
            "test_accuracy": attrs.get("test_accuracy"),
            "train_seconds": attrs.get("train_seconds"), "epochs": attrs.get("epochs"),
            "run_dir": attrs.get("run_dir"), "params": dict(trial.params),
            "note": "; ".join(notes)}


def format_cell(value, spec: str | None = None) -> str:
    """A value as text: `spec` for numbers when given, else 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and spec:
        return format(value, spec)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def study_rows(study) -> list[dict]:
    """Every trial that trained or was queued (surplus trials never did), by number."""
    return [trial_row(t) for t in study.get_trials(deepcopy=False)
            if not t.user_attrs.get(SURPLUS_ATTR)]


def best_trial(study):
    """The complete trial with the highest objective, or None."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return max(complete, key=lambda t: (t.value, -t.number), default=None)


def write_best_config(spec: SweepSpec, study, sweep_dir: Path) -> Path | None:
    """Write SWEEP_DIR/best.yaml: the base config with the best trial's values, for
    `digitnet train --config`. None when no trial has completed yet."""
    best = best_trial(study)
    if best is None:
        return None
    config = dataclasses.replace(spec.trial_config(best.params), name=f"{spec.name}-best")
    header = (f"# The best of sweep {spec.name}: trial {best.number}, val_accuracy "
              f"{best.value:.4f} ({best.user_attrs.get('run_dir', '?')}).\n"
              f"# Train it with: digitnet train --config {sweep_dir / BEST_FILE}\n")
    params = yaml.safe_dump({"searched": best.params}, sort_keys=False)
    body = "# " + params.replace("\n", "\n# ").rstrip("# ") + "\n"
    path = sweep_dir / BEST_FILE
    layout.write_text(path, header + body + save_config(config))
    return path
