"""Per-epoch bookkeeping during fit: history CSV, best and last models, all written atomically."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import keras

from digitnet import rundir

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                   "seconds")


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: append the history row, save the last model and the best (val_accuracy)."""

    def __init__(self, run_dir: Path, rows: list | None = None, best: float = -1.0):
        super().__init__()
        self.run_dir = run_dir
        self.rows = list(rows or [])
        self.best = best
        self.best_epoch = int(max(self.rows, key=lambda r: r["val_accuracy"])["epoch"]) \
            if self.rows else 0
        self.seconds = 0.0  # time spent writing files, reported apart from training time

    @property
    def epochs_run(self) -> int:
        return len(self.rows)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.rows.append(self.history_row(epoch, logs))
        started = time.perf_counter()
        if logs["val_accuracy"] > self.best:
            self.best, self.best_epoch = float(logs["val_accuracy"]), epoch + 1
            rundir.save_model(self.model, self.run_dir / rundir.BEST_MODEL)
        rundir.save_model(self.model, self.run_dir / rundir.LAST_MODEL)
        rundir.write_text(self.run_dir / rundir.HISTORY_FILE, history_csv(self.rows))
        self.seconds += time.perf_counter() - started

    def history_row(self, epoch: int, logs: dict) -> dict:
        optimizer = self.model.optimizer
        rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        row = {"epoch": epoch + 1, "learning_rate": rate,
               "seconds": round(time.perf_counter() - self.epoch_started, 3)}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            row[key] = float(logs[key])
        return row


def history_csv(rows: list[dict]) -> str:
    """The history rows as CSV text with a header."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
