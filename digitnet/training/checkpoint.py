"""Per-epoch bookkeeping during fit: checkpoints, history CSV, best and last models, run state.

Every file is written atomically; digitnet/runs/layout.py owns the files and the checkpoint
format.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import keras
import numpy as np

from digitnet.config import TrainingConfig
from digitnet.errors import DigitnetError, first_line
from digitnet.runs import layout
from digitnet.runs.layout import Snapshot, checkpoint_file, prune_checkpoints
from digitnet.training.interrupt import InterruptGuard
from digitnet.training.optim import current_learning_rate

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                   "seconds")


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: a resumable checkpoint, then the last and best models, history and state.

    Also stops training early once val_accuracy has not improved for `early_stopping_patience`
    epochs. Given a Snapshot, it continues that checkpoint's history, best and patience counter.
    """

    def __init__(self, run_dir: Path, training: TrainingConfig, snapshot: Snapshot | None = None,
                 moves_latest: bool = True):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.patience = training.early_stopping_patience
        self.rows = list(snapshot.history) if snapshot else []
        self.best = snapshot.best_val_accuracy if snapshot else -1.0
        self.best_epoch = snapshot.best_epoch if snapshot else 0
        self.wait = snapshot.epochs_without_improvement if snapshot else 0
        self.previous = snapshot  # the last committed checkpoint: pruning keeps it and its best
        self.prior_train_seconds = snapshot.train_seconds if snapshot else 0.0
        self.prior_seconds = snapshot.checkpoint_seconds if snapshot else 0.0
        self.seconds = self.prior_seconds  # time spent writing files, reported apart
        self.fit_started = time.perf_counter()
        # runs/latest moves here once this run has a model (never to a private copy of a run)
        self.pointed_latest = not moves_latest

    @property
    def epochs_run(self) -> int:
        return len(self.rows)

    @property
    def stopped_early(self) -> bool:
        """Whether val_accuracy has not improved for `patience` epochs (patience 0: never)."""
        return 0 < self.patience <= self.wait

    def training_seconds(self, fit_seconds: float) -> float:
        """Training time of all sessions: this one's time in fit, less its file writes."""
        return self.prior_train_seconds + fit_seconds - (self.seconds - self.prior_seconds)

    def on_train_begin(self, logs=None):
        self.fit_started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.rows.append(self.history_row(epoch, logs))
        self.track_best(epoch + 1, float(logs["val_accuracy"]))
        started = time.perf_counter()
        self.save(epoch + 1, started)
        self.seconds += time.perf_counter() - started
        if self.stopped_early:
            log.info("Stopping early: val_accuracy has not improved for %d epochs "
                     "(best %.4f after epoch %d)", self.wait, self.best, self.best_epoch)
            self.model.stop_training = True

    def track_best(self, epoch: int, val_accuracy: float) -> None:
        """Update the best epoch and early stopping's count of epochs without improvement."""
        if val_accuracy > self.best:
            self.best, self.best_epoch, self.wait = val_accuracy, epoch, 0
        else:
            self.wait += 1

    def save(self, epoch: int, started: float) -> None:
        """Write the checkpoint and commit it; then the last and best models, history, state."""
        snapshot = layout.write_checkpoint(self.run_dir, self.model,
                                           self.snapshot(epoch, started))
        model_file = checkpoint_file(self.run_dir, epoch)
        if self.best_epoch == epoch:
            layout.copy_file(model_file, self.run_dir / layout.BEST_MODEL)
        if not self.pointed_latest and (self.run_dir / layout.BEST_MODEL).is_file():
            layout.point_latest(self.run_dir)  # only now: a run without a model is never latest
            self.pointed_latest = True
        layout.copy_file(model_file, self.run_dir / layout.LAST_MODEL)
        layout.write_text(self.run_dir / layout.HISTORY_FILE, history_csv(self.rows))
        layout.update_state(self.run_dir, epoch=epoch, best_epoch=self.best_epoch,
                     best_val_accuracy=self.best, stopped_early=self.stopped_early,
                     checkpoint=str(model_file.relative_to(self.run_dir)))
        prune_checkpoints(self.run_dir, keep_epochs(snapshot, self.previous))
        self.previous = snapshot

    def snapshot(self, epoch: int, started: float) -> Snapshot:
        """Everything besides the .keras file that a resumed run restores (sha256 filled in by
        `layout.write_checkpoint`)."""
        session = started - self.fit_started - (self.seconds - self.prior_seconds)
        return Snapshot(
            epoch=epoch, sha256="",
            steps=int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
            best_epoch=self.best_epoch, best_val_accuracy=self.best,
            epochs_without_improvement=self.wait, rng=rng_state(self.model),
            history=list(self.rows), train_seconds=self.prior_train_seconds + session,
            checkpoint_seconds=self.seconds)

    def history_row(self, epoch: int, logs: dict) -> dict:
        optimizer = self.model.optimizer
        rate = current_learning_rate(optimizer)
        row = {"epoch": epoch + 1, "learning_rate": rate,
               "seconds": round(time.perf_counter() - self.epoch_started, 3)}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            row[key] = float(logs[key])
        return row


class StopOnSignal(keras.callbacks.Callback):
    """Raise TrainingInterrupted at the first safe point after SIGINT or SIGTERM.

    Safe points are the end of a step (the partial epoch is dropped: runs resume at epoch
    boundaries) and the start of an epoch (the previous one is saved by then).
    """

    def __init__(self, guard: InterruptGuard):
        super().__init__()
        self.guard = guard

    def on_epoch_begin(self, epoch, logs=None):
        self.guard.check()

    def on_train_batch_end(self, batch, logs=None):
        self.guard.check()


def keep_epochs(snapshot: Snapshot, previous: Snapshot | None) -> set[int]:
    """The checkpoints to keep: the last two, and the best model as of each of them."""
    keep = {snapshot.epoch, snapshot.best_epoch}
    if previous is not None:
        keep |= {previous.epoch, previous.best_epoch}
    return keep


def rng_variables(model) -> list:
    """The model's random-generator states (dropout's SeedGenerators), which .keras omits."""
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


def rng_state(model) -> list:
    """The RNG states as JSON-ready lists of integers."""
    return [np.asarray(variable.numpy()).tolist() for variable in rng_variables(model)]


def restore_checkpoint(model, run_dir: Path, snapshot: Snapshot) -> None:
    """Load a checkpoint into a compiled model: weights, optimizer and RNG state.

    The optimizer comes from today's config, so a larger --epochs rebuilds the schedule, and
    takes the saved moments and iteration count: the schedule continues from the same step.

    Args:
      model: the model built and compiled from the run's config.
      run_dir: the run directory.
      snapshot: the checkpoint to load (from `latest_snapshot`).

    Raises:
      DigitnetError: the checkpoint cannot be loaded or does not fit the model.
    """
    path = checkpoint_file(run_dir, snapshot.epoch)
    model.optimizer.build(model.trainable_variables)  # so load_weights fills its variables
    try:
        model.load_weights(path)
    except Exception as error:  # Keras raises many types for a bad archive
        raise DigitnetError(f"{path}: cannot load checkpoint ({first_line(error)})") from None
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    variables = rng_variables(model)
    if steps != snapshot.steps or len(variables) != len(snapshot.rng):
        raise DigitnetError(f"{path}: does not fit the model (optimizer at step {steps}, "
                            f"expected {snapshot.steps})")
    for variable, state in zip(variables, snapshot.rng):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def restore_run_files(run_dir: Path, snapshot: Snapshot | None) -> None:
    """Put the run directory back to `snapshot`'s epoch: later checkpoints go, and history.csv,
    model-last.keras and model-best.keras are rewritten from the checkpoints."""
    layout.remove_temporaries(run_dir)
    if snapshot is None:
        prune_checkpoints(run_dir, set())
        return
    prune_checkpoints(run_dir, set(range(snapshot.epoch + 1)))
    layout.write_text(run_dir / layout.HISTORY_FILE, history_csv(snapshot.history))
    layout.copy_file(checkpoint_file(run_dir, snapshot.epoch), run_dir / layout.LAST_MODEL)
    restore_best_model(run_dir, snapshot)


def restore_best_model(run_dir: Path, snapshot: Snapshot) -> None:
    """Copy the checkpoint of the best epoch so far to model-best.keras."""
    if snapshot.best_epoch == 0:  # no epoch had a finite val_accuracy
        return
    try:
        best = snapshot if snapshot.best_epoch == snapshot.epoch else \
            layout.read_snapshot(run_dir, snapshot.best_epoch)
    except DigitnetError as error:
        log.warning("%s; keeping %s as it is", error, layout.BEST_MODEL)
        return
    layout.copy_file(checkpoint_file(run_dir, best.epoch), run_dir / layout.BEST_MODEL)


def history_csv(rows: list[dict]) -> str:
    """The history rows as CSV text with a header."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
