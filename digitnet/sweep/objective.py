"""One trial: sample the parameters, train them as a normal run directory, return val_accuracy.

The trial trains through `train_and_evaluate`, so runs/<sweep>/trial-0007/ is a run like any
other (`digitnet runs`, `evaluate`, `report` and `predict` all take it). After each saved epoch a
Keras callback reports val_accuracy to the trial and stops the run when the pruner says so or
when the training-time cap is passed; the run then finishes normally with the epochs it has.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from pathlib import Path

import keras
import optuna

from digitnet.config import ConfigError
from digitnet.data import DataError
from digitnet.errors import DigitnetError, first_line
from digitnet.runs.layout import WriteError
from digitnet.sweep.spec import Param, SweepSpec
from digitnet.sweep.study import SURPLUS_ATTR, has_place
from digitnet.training.interrupt import InterruptGuard, TrainingInterrupted
from digitnet.training.train import train_and_evaluate

LOG_FILE = "train.log"  # a trial's Keras output: the terminal shows only the results table


class RunDirTaken(DigitnetError):
    """The trial's run directory already holds a run (of a study since deleted)."""


# Errors that are not the trial's fault: the sweep stops and the trial is queued again.
STOP_ERRORS = (TrainingInterrupted, DataError, WriteError, RunDirTaken)


class TrialFailed(Exception):
    """The trial's config or training failed (recorded on the trial); the sweep goes on."""


def trial_dir(sweep_dir: Path, number: int) -> Path:
    return sweep_dir / f"trial-{number:04d}"


class ReportToTrial(keras.callbacks.Callback):
    """After each saved epoch: report val_accuracy; stop if pruned or over the time cap."""

    def __init__(self, trial, max_train_seconds: float):
        super().__init__()
        self.trial = trial
        self.max_seconds = max_train_seconds
        self.pruned_after = 0  # the epoch after which the pruner stopped the trial
        self.over_cap = False
        self.started = time.perf_counter()

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float(logs["val_accuracy"]), epoch + 1)
        if self.max_seconds and time.perf_counter() - self.started > self.max_seconds:
            self.over_cap = True
            self.model.stop_training = True
        elif self.trial.should_prune():
            self.pruned_after = epoch + 1
            self.model.stop_training = True


class Objective:
    """The function Optuna calls for each trial of the study."""

    def __init__(self, spec: SweepSpec, sweep_dir: Path, data_dir: str | None,
                 guard: InterruptGuard):
        self.spec = spec
        self.sweep_dir = sweep_dir
        self.data_dir = data_dir
        self.guard = guard
        self.trial_number: int | None = None  # the trial in progress, to queue it if stopped
        # Each trial builds new models: TensorFlow would warn about retracing on every one.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)

    def __call__(self, trial) -> float:
        self.trial_number = trial.number
        if not has_place(trial.study, trial.number, self.spec.trials):
            trial.set_user_attr(SURPLUS_ATTR, True)  # another worker took the last place
            raise TrialFailed("the study already has all its trials")
        self.guard.check()  # a Ctrl-C that came between trials
        params = suggest(trial, self.spec.space)
        try:
            return self.train(trial, params)
        except STOP_ERRORS as error:
            trial.set_user_attr("stopped", stop_reason(error))
            raise
        except DigitnetError as error:  # this trial's config or training: the sweep goes on
            trial.set_user_attr("error", first_line(error))
            raise TrialFailed(str(error)) from None

    def train(self, trial, params: dict) -> float:
        """Train the trial's run; record its metrics on the trial; prune or return val_accuracy."""
        try:
            config = self.spec.trial_config(params)
        except ConfigError as error:  # e.g. warmup_epochs above a sampled epochs
            raise DigitnetError(f"parameters {params}: {error}") from None
        run_dir = trial_dir(self.sweep_dir, trial.number)
        if run_dir.is_dir() and any(run_dir.iterdir()):
            raise RunDirTaken(f"{run_dir}: already holds a run, not of this study (was "
                              f"{self.sweep_dir}'s study deleted?); move {self.sweep_dir} "
                              f"away, or name another study")
        trial.set_user_attr("run_dir", str(run_dir))
        reporter = ReportToTrial(trial, self.spec.objective.max_train_seconds)
        with trial_log(run_dir):
            metrics = train_and_evaluate(config, run_dir, self.data_dir,
                                         callbacks=(reporter,)).metrics
        keras.backend.clear_session()  # trials in one process would otherwise pile up graphs
        for key in ("val_accuracy", "test_accuracy", "train_seconds", "epochs"):
            trial.set_user_attr(key, metrics[key])
        cap = self.spec.objective.max_train_seconds
        if reporter.over_cap or (cap and metrics["train_seconds"] > cap):
            trial.set_user_attr("pruned", f"over the {cap:g} s training-time cap")
            raise optuna.TrialPruned()
        if reporter.pruned_after:
            trial.set_user_attr("pruned", f"pruned after epoch {reporter.pruned_after}")
            raise optuna.TrialPruned()
        return metrics[self.spec.objective.metric]


def suggest(trial, space: dict[str, Param]) -> dict:
    """Draw every searched key's value for `trial` (a retried trial gets its old values)."""
    params = {}
    for key, param in space.items():
        if param.type == "choice":
            params[key] = trial.suggest_categorical(key, list(param.values))
        elif param.type == "int":
            params[key] = trial.suggest_int(key, param.low, param.high, step=param.step or 1,
                                            log=param.log)
        else:
            params[key] = trial.suggest_float(key, param.low, param.high, step=param.step,
                                              log=param.log)
    return params


@contextlib.contextmanager
def trial_log(run_dir: Path):
    """Send the trial's output to RUN_DIR/train.log: Keras' per-epoch lines and digitnet's
    progress records. The terminal keeps the sweep's own records (the table) and warnings."""
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("digitnet")
    with open(run_dir / LOG_FILE, "a", encoding="utf-8") as out, \
            contextlib.redirect_stdout(out):
        to_file = logging.StreamHandler(out)
        to_file.addFilter(lambda record: not is_sweep_record(record))
        terminal = list(logger.handlers)
        for handler in terminal:
            handler.addFilter(keep_on_terminal)
        logger.addHandler(to_file)
        try:
            yield
        finally:
            logger.removeHandler(to_file)
            for handler in terminal:
                handler.removeFilter(keep_on_terminal)


def is_sweep_record(record: logging.LogRecord) -> bool:
    return record.name.startswith(__package__)


def keep_on_terminal(record: logging.LogRecord) -> bool:
    return is_sweep_record(record) or record.levelno >= logging.WARNING


def stop_reason(error: BaseException) -> str:
    """Why the sweep stopped, in a few words (not train's advice to resume the run)."""
    if isinstance(error, TrainingInterrupted):
        return f"interrupted by {signal.Signals(error.signum).name}"
    return first_line(error)
