"""Train a model from a config into a run directory, then test it.

The entry point is `train_and_evaluate(config, run_dir, ...)`; everything else is a stage of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitnet import __version__
from digitnet.config import Config, TrainingConfig, read_config, save_config
from digitnet.data import (
    Splits,
    forward,
    load_mnist,
    resolve_source,
    split_validation,
)
from digitnet.errors import DigitnetError, first_line
from digitnet.runs import layout
from digitnet.runs.layout import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    Snapshot,
    checkpoint_file,
    read_state,
    update_state,
)
from digitnet.runs.lock import RunLock
from digitnet.training import backends
from digitnet.training.cluster import Cluster, LostProcess
from digitnet.training.devices import Placement, check_batch, parse_devices
from digitnet.training.interrupt import InterruptGuard, TrainingInterrupted
from digitnet.training.optim import make_optimizer
from digitnet.training.resume import (
    BANK_KEY,
    check_checkpoint_kept,
    check_epochs,
    check_more_to_do,
    check_same_bank,
    check_same_data,
)

if TYPE_CHECKING:
    from digitnet.training.preprocessed import Bank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    metrics: dict


@dataclass(frozen=True)
class RunData:
    """What a run trains on."""

    config: Config  # with data.source set to where the data was read
    files: dict  # path -> sha256 of each file read, for the manifest
    splits: Splits
    bank: Bank | None = None  # training.augment.pipeline's bank of splits.x_train; None: off


@dataclass(frozen=True)
class PreparedRun:
    """A run ready to train: its files written (or restored) and its data loaded."""

    config: Config  # with data.source resolved
    splits: Splits
    snapshot: Snapshot | None  # the checkpoint to resume from; None for a new run
    placement: Placement  # the devices to train on
    preprocessed: np.ndarray | None = None  # fit's training.augment.pipeline bank; None: off


def seed_everything(seed: int, jit_compile: bool) -> None:
    """Seed Python, numpy and the backend in one place (and make its kernels deterministic)."""
    backends.current().seed_everything(seed, jit_compile)


def compile_model(model, training: TrainingConfig, num_examples: int) -> None:
    """Attach optimizer, loss and metric; labels are one-hot so label smoothing applies."""
    import keras

    model.compile(
        optimizer=make_optimizer(training, steps_per_epoch(num_examples, training)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=training.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=backends.current().jit_compile(training),
        steps_per_execution=steps_per_execution(num_examples, training),
    )


def steps_per_execution(num_examples: int, training: TrainingConfig) -> int:
    """Steps per compiled call, never more than one epoch's batches."""
    return max(min(training.steps_per_execution, num_examples // training.batch_size), 1)


def steps_per_epoch(num_examples: int, training: TrainingConfig) -> int:
    """Full batches per epoch, a multiple of steps_per_execution.

    Keras runs whole executions, so an epoch of another length would overshoot into the next
    and shift the learning-rate schedule. The few images left over are reshuffled into later
    epochs.
    """
    per_call = steps_per_execution(num_examples, training)
    return max(num_examples // training.batch_size // per_call * per_call, 1)


def training_batches(x: np.ndarray, y: np.ndarray, training: TrainingConfig, first_epoch: int,
                     outliers: np.ndarray | None = None, preprocessed: np.ndarray | None = None):
    """The backend's endless stream of shuffled one-hot batches from uint8 images, epoch after
    epoch; each epoch's order is a pure function of (seed, epoch), so a resume is exact. With
    `outliers` (uint8 non-digits) and `training.outliers` > 0, each batch also gets that share
    of them, drawn by the global step, with the uniform distribution as their target (outlier
    exposure). With `preprocessed` (uint8, row i what predict's preprocessing makes of x[i]) and
    `training.augment.pipeline` > 0, each digit of a batch is that version of itself with that
    probability, drawn by the global step."""
    return backends.current().training_batches(x, y, training, first_epoch,
                                               steps_per_epoch(len(x), training), outliers,
                                               preprocessed)


def fit(model, splits: Splits, config: Config, first_epoch: int = 0,
        callbacks: tuple = (), preprocessed: np.ndarray | None = None) -> float:
    """Run `model.fit` for the configured epochs; return the seconds it took. `preprocessed`:
    the training.augment.pipeline bank of splits.x_train (None: made or read here)."""
    from digitnet.training.validation import EagerValidation

    training = config.training
    outliers = None
    if training.outliers:  # made before the clock starts: data, not training
        from digitnet.training.outliers import outlier_images  # drawing code: on a cache miss

        outliers = outlier_images(training.seed)
    if training.augment.pipeline and preprocessed is None:  # the same: made once, then cached
        from digitnet.training.preprocessed import training_bank

        preprocessed = training_bank(splits.x_train, splits.y_train).rows
    started = time.perf_counter()
    model.fit(
        training_batches(splits.x_train, splits.y_train, training, first_epoch, outliers,
                         preprocessed),
        steps_per_epoch=steps_per_epoch(len(splits.x_train), training),
        epochs=training.epochs, initial_epoch=first_epoch,
        callbacks=[EagerValidation(splits.x_val, splits.y_val), *callbacks],
        shuffle=False,  # training_batches already shuffles, reproducibly
        verbose=progress_verbosity(),
    )
    return time.perf_counter() - started


def progress_verbosity() -> int:
    """Keras' progress while digitnet's logger shows INFO: a bar on a terminal, else a line per
    epoch (no carriage returns in a log file); none when it is quieter (`digitnet train -q`)."""
    if not log.isEnabledFor(logging.INFO):
        return 0
    return 1 if sys.stdout.isatty() else 2


def measure(model, splits: Splits) -> dict:
    """Loss and accuracy of `model` on the train, val and test splits."""
    from digitnet.evaluation.evaluate import cross_entropy

    metrics = {}
    for name, x, y in (("train", splits.x_train, splits.y_train),
                       ("val", splits.x_val, splits.y_val),
                       ("test", splits.x_test, splits.y_test)):
        probabilities = forward(model, x)
        metrics[f"{name}_loss"] = cross_entropy(probabilities, y)
        metrics[f"{name}_accuracy"] = float(np.mean(probabilities.argmax(axis=1) == y))
    return metrics


def manifest(config: Config, device: str, files: dict, command: list[str] | None) -> dict:
    """What produced the run: versions, seed, device, data hashes, command line."""
    import keras

    backend = backends.current()
    return {
        "digitnet": __version__, "backend": backend.NAME, **backend.versions(),
        "keras": keras.__version__,
        "python": platform.python_version(), "numpy": np.__version__,
        "platform": platform.platform(), "seed": config.training.seed, "device": device,
        "data_files": files, "command": command or sys.argv,
        "started": time.strftime(layout.TIME_FORMAT),
    }


def train_and_evaluate(config: Config, run_dir: Path, data_dir: str | None = None,
                       device: str = "auto", command: list[str] | None = None,
                       resume: bool = False, tensorboard: bool = True,
                       callbacks: tuple = (), devices: str | int | None = 1,
                       cluster: Cluster | None = None) -> TrainResult:
    """Train `config` into `run_dir`, or continue it, then test the best model.

    SIGINT and SIGTERM stop training at the next step and mark the run interrupted; its last
    completed epoch is already saved, and `resume=True` continues from there exactly.

    Args:
      config: the checked run configuration (resuming: from `resume.resume_config`).
      run_dir: an empty directory that receives every file of the run, or the run to resume.
      data_dir: an IDX folder or .npz, or None for $DIGITNET_DATA_DIR, the config, or a
        download.
      device: "auto", "cpu" or "gpu".
      devices: how many devices of that kind train data-parallel, or "all".
      cluster: this process's place in a multi-process job (JAX), or None for a lone process.
      command: the command line to record in the manifest.
      resume: continue `run_dir` from its last good checkpoint.
      tensorboard: log each epoch's loss, accuracy and learning rate to RUN_DIR/tensorboard/.
      callbacks: extra Keras callbacks, run after each epoch is saved (a sweep's pruner).

    Returns:
      The run directory and its final metrics.

    Raises:
      TrainingInterrupted: SIGINT or SIGTERM arrived; the run is saved and resumable.
      DigitnetError: bad data, an unavailable device, an unwritable run directory (a full
        disk), another process training in `run_dir`, or no usable checkpoint to resume.
    """
    run_dir = Path(run_dir)
    try:
        if cluster is not None:
            backends.check_loaded(config.training.backend)
            backends.current().join_cluster(cluster)
            if not cluster.writes:
                return train_beside(config, run_dir, data_dir, device, resume, devices)
        with InterruptGuard() as guard, RunLock(run_dir):
            run = prepare(config, run_dir, data_dir, device, command, resume, devices,
                          guard.check)
            try:
                return train_prepared(run.config, run_dir, run.splits, run.snapshot, guard,
                                      tensorboard, callbacks, run.placement,
                                      preprocessed=run.preprocessed)
            except TrainingInterrupted as stop:
                raise mark_interrupted(run_dir, stop) from None
            except BaseException as error:
                raise mark_failed(run_dir, error) from None
    except BaseException:
        if cluster is None or cluster.writes:  # process 0 made it, process 0 alone removes it
            remove_if_empty(run_dir)  # refused before writing anything: leave no empty run
        raise


def train_beside(config: Config, run_dir: Path, data_dir: str | None, device: str, resume: bool,
                 devices: str | int | None) -> TrainResult:
    """A process other than 0 of a job: train in step with process 0 without writing `run_dir`.

    It runs the same stages in a private scratch copy of the run (so it takes the same
    decisions: resume epoch, early stopping), skips the test and export, and deletes the copy.
    """
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="digitnet-process-")) / run_dir.name
    try:
        if resume:
            shutil.copytree(run_dir, scratch, ignore=shutil.ignore_patterns(".*"))
        else:
            scratch.mkdir()
        with InterruptGuard() as guard:
            run = prepare(config, scratch, data_dir, device, None, resume, devices,
                          guard.check)
            train_prepared(run.config, scratch, run.splits, run.snapshot, guard,
                           tensorboard=False, placement=run.placement, test=False,
                           preprocessed=run.preprocessed)
    finally:
        shutil.rmtree(scratch.parent, ignore_errors=True)
    return TrainResult(run_dir, {})


def remove_if_empty(folder: Path) -> None:
    """Remove `folder` if it holds nothing."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def prepare(config: Config, run_dir: Path, data_dir: str | None, device: str,
            command: list[str] | None, resume: bool,
            devices: str | int | None = 1, check: Callable[[], None] | None = None
            ) -> PreparedRun:
    """Load the data and write (or, resuming, check and restore) the run's files. `check`:
    called while the training.augment.pipeline bank is made (InterruptGuard.check); nothing
    is written before it is made."""
    layout.check_latest()  # before any file is written: a refused run leaves nothing behind
    if not resume:
        layout.check_no_run(run_dir)
    backends.check_loaded(config.training.backend)
    from digitnet.training.model import check_model

    check_model(config.model, config.training.batch_size)  # the CLI checks before it makes run_dir
    backend = backends.current()
    placement = backend.select_devices(device, parse_devices(devices))
    check_batch(config.training.batch_size, config.training.outliers, len(placement.devices))
    device_name = placement.description
    seed_everything(config.training.seed, config.training.jit_compile)
    if resume:
        # Checked again under the lock: the run may have finished since the CLI looked.
        check_more_to_do(run_dir, read_config(run_dir / layout.CONFIG_FILE), config)
        data_dir = resume_source(data_dir, config)
    data = load_data(config, data_dir, check)
    config = data.config
    log.info("Training on %s; run directory %s", device_name, run_dir)
    info = manifest(config, device_name, data.files, command)
    if data.bank is not None:
        info[BANK_KEY] = data.bank.sha256
    snapshot = resume_run(run_dir, config, info, data.bank) if resume else None
    if not resume:
        layout.write_json(run_dir / layout.MANIFEST_FILE, info)
    layout.write_text(run_dir / layout.CONFIG_FILE, save_config(config))
    update_state(run_dir, **initial_state(config, snapshot))
    # runs/latest moves once the run has a model (checkpoint.py)
    return PreparedRun(config, data.splits, snapshot, placement,
                       data.bank.rows if data.bank is not None else None)


def resume_source(data_dir: str | None, config: Config) -> str | None:
    """Resuming: `data_dir`, else the run's own data while it is there, else the usual order.

    The run's source goes before $DIGITNET_DATA_DIR here (not for evaluate): a resumed run
    must train on the very data it started with.
    """
    source = config.data.source
    if data_dir or not (source == "download" or Path(source).exists()):
        return data_dir
    return source


def load_data(config: Config, data_dir: str | None, check: Callable[[], None] | None = None,
              bank: bool = True) -> RunData:
    """Load and split the data; the config records the source it came from. With
    training.augment.pipeline > 0 (and `bank`), also the bank (made or read from the cache;
    `check` is called while it is made: a signal stops the making)."""
    source = resolve_source(data_dir, config.data.source)
    mnist = load_mnist(source)
    # Record where the data came from, so evaluate finds it again with no arguments.
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, source=source))
    splits = split_validation(mnist, config.data.validation_size, config.training.seed)
    if config.training.batch_size > len(splits.x_train):
        raise DigitnetError(f"training.batch_size: expected at most the {len(splits.x_train)} "
                            f"training images, received {config.training.batch_size}")
    made = None
    if bank and config.training.augment.pipeline:
        from digitnet.training.preprocessed import training_bank

        made = training_bank(mnist.x_train, mnist.y_train, splits.train_index, check)
    return RunData(config, mnist.files, splits, made)


def resume_run(run_dir: Path, config: Config, info: dict, bank: Bank | None = None):
    """Check the data (and the pipeline bank), find the last good checkpoint and put the run's
    files back to it."""
    from digitnet.training.checkpoint import restore_run_files

    check_same_data(run_dir, info["data_files"])
    if bank is not None:
        check_same_bank(run_dir, bank.path, bank.sha256)
    snapshot = layout.latest_snapshot(run_dir)
    check_checkpoint_kept(run_dir, snapshot)
    done = snapshot.epoch if snapshot else 0
    check_epochs(run_dir, done, config.training.epochs)
    restore_run_files(run_dir, snapshot)
    recorded = layout.read_json(run_dir / layout.MANIFEST_FILE)
    recorded.setdefault("resumed", []).append(
        {"after_epoch": done, "device": info["device"], "command": info["command"],
         "started": info["started"]})
    if BANK_KEY in info:  # a run stopped before its bank was recorded: recorded now
        recorded.setdefault(BANK_KEY, info[BANK_KEY])
    layout.write_json(run_dir / layout.MANIFEST_FILE, recorded)
    log.info("Resuming after epoch %d of %d", done, config.training.epochs)
    return snapshot


def initial_state(config: Config, snapshot) -> dict:
    """state.json as a run (re)starts: running, from `snapshot`'s epoch or from the start."""
    return {"status": RUNNING, "epoch": snapshot.epoch if snapshot else 0,
            "epochs": config.training.epochs,
            "best_epoch": snapshot.best_epoch if snapshot else 0,
            "best_val_accuracy": snapshot.best_val_accuracy if snapshot else None,
            "stopped_early": False,
            "checkpoint": str(checkpoint_file(Path(), snapshot.epoch)) if snapshot else None,
            "message": "", "pid": os.getpid()}


def train_prepared(config: Config, run_dir: Path, splits: Splits, snapshot,
                   guard: InterruptGuard, tensorboard: bool = True,
                   callbacks: tuple = (), placement: Placement | None = None,
                   test: bool = True, preprocessed: np.ndarray | None = None) -> TrainResult:
    """Build the model (restored from `snapshot`), train the remaining epochs, test it.
    `preprocessed`: the training.augment.pipeline bank of splits.x_train (PreparedRun's)."""
    from digitnet.training.checkpoint import EpochCheckpoint, StopOnSignal, restore_checkpoint
    from digitnet.training.model import build_model

    with backends.current().distribution(placement.devices if placement else ()):
        model = build_model(config.model)
        compile_model(model, config.training, len(splits.x_train))
        if snapshot is not None:
            restore_checkpoint(model, run_dir, snapshot)
        # test=False: a private copy of the run (train_beside), which runs/latest never names
        checkpoint = EpochCheckpoint(run_dir, config.training, snapshot, moves_latest=test)
        guard.check()
        seconds = 0.0
        if checkpoint.epochs_run < config.training.epochs and not checkpoint.stopped_early:
            seconds = fit(model, splits, config, first_epoch=checkpoint.epochs_run,
                          callbacks=(checkpoint, StopOnSignal(guard),
                                     *tensorboard_callbacks(run_dir, tensorboard), *callbacks),
                          preprocessed=preprocessed)
    guard.check()
    if not test:
        return TrainResult(run_dir, {})
    # The model in memory holds the best epoch's weights when that was the last one trained
    # here; on one device only (spread over devices or processes, it is read back from its file,
    # as a computation on a job's arrays would wait for every process).
    alone = placement is None or len(placement.devices) <= 1
    best_here = seconds and checkpoint.best_epoch == checkpoint.epochs_run
    result = finish(run_dir, splits, seconds, checkpoint, model if alone and best_here else None)
    update_state(run_dir, status=FINISHED, stopped_early=checkpoint.stopped_early, message="")
    return result


def tensorboard_callbacks(run_dir: Path, enabled: bool) -> tuple:
    """The TensorBoard logger for `run_dir` (placed after the checkpoint: it logs saved epochs)."""
    from digitnet.training.tensorboard_log import EpochScalars

    return (EpochScalars(run_dir / layout.TENSORBOARD_DIR),) if enabled else ()


def mark_interrupted(run_dir: Path, stop: TrainingInterrupted) -> TrainingInterrupted:
    """Mark the run interrupted; return the exception to raise, which says how to resume."""
    name = signal.Signals(stop.signum).name
    with contextlib.suppress(DigitnetError):  # a full disk: state.json keeps saying running
        update_state(run_dir, status=INTERRUPTED, message=f"interrupted by {name}")
    planned = (read_state(run_dir) or {}).get("epochs")
    interrupted = TrainingInterrupted(
        stop.signum, f"Interrupted by {name}: {run_dir} is saved after epoch "
                     f"{last_saved_epoch(run_dir)} of {planned}.")
    interrupted.resumable = run_dir
    return interrupted


def mark_failed(run_dir: Path, error: BaseException) -> BaseException:
    """Mark the run failed; return the exception to raise (a failed write says how to resume)."""
    reason = first_line(error)
    with contextlib.suppress(DigitnetError):  # a full disk may refuse state.json too
        update_state(run_dir, status=FAILED, message=reason)
    if isinstance(error, LostProcess):
        error.resumable = run_dir
    if not isinstance(error, layout.WriteError):
        return error
    kept = layout.WriteError(f"{error}; the run is kept at epoch {last_saved_epoch(run_dir)} "
                             f"and can be resumed once there is room")
    kept.resumable = run_dir
    return kept


def last_saved_epoch(run_dir: Path) -> int:
    """The newest committed checkpoint's epoch (0: none), where a resume would start."""
    return max(layout.saved_epochs(run_dir), default=0)


def calibrate_best(best, run_dir: Path, splits: Splits) -> dict:
    """Fit the temperature on the validation split and fold it into model-best.keras.

    model-best.keras is always a copy of an uncalibrated checkpoint when this runs (a resume
    copies it back from checkpoints/), so the fit starts from the trained logits every time.
    """
    from digitnet.evaluation.calibration import calibrate_model

    calibration = calibrate_model(best, (splits.x_val, splits.y_val),
                                  (splits.x_test, splits.y_test))
    layout.save_model(best, run_dir / layout.BEST_MODEL)
    return calibration


def prepare_export() -> None:
    """Start what `start_litert_export` will need, unless started already (JAX: the TensorFlow
    process that converts, which `digitnet train` starts first)."""
    backends.current().prepare_export()


def start_litert_export(model, path: Path, source: Path):
    """Start writing `path` (.tflite) for `model`, saved as `source`, the backend's way.

    Returns:
      A function that waits until `path` is written, records `source` beside it and returns
      the record (`layout.write_export_record`).
    """
    from digitnet.export import litert

    written = backends.current().start_litert_export(model, Path(source), Path(path))

    def wait() -> dict:
        written()
        return layout.write_export_record(path, source, litert.FORMAT)

    return wait


def finish(run_dir: Path, splits: Splits, seconds: float, checkpoint,
           trained=None) -> TrainResult:
    """Calibrate and test the best model, export it to LiteRT and write metrics.json.

    `trained`: the model in memory when it holds the best checkpoint's weights (it is then
    used in place of loading model-best.keras again).
    """
    import keras

    prepare_export()
    best = trained if trained is not None else keras.saving.load_model(run_dir / layout.BEST_MODEL)
    calibration = calibrate_best(best, run_dir, splits)
    # the converter process (when there is one) converts model-best.keras while this one tests
    exported = start_litert_export(best, run_dir / layout.BEST_LITERT, run_dir / layout.BEST_MODEL)
    try:
        measured = measure(best, splits)
        record = exported()
    except BaseException:  # failed, stuck, killed or interrupted: no converter, no partial file
        backends.current().abandon_export(run_dir / layout.BEST_LITERT)
        raise
    training_seconds = checkpoint.training_seconds(seconds)  # file writes are not training
    metrics = {**measured, "temperature": calibration["temperature"],
               "calibration": calibration, "best_epoch": checkpoint.best_epoch,
               "epochs": checkpoint.epochs_run, "stopped_early": checkpoint.stopped_early,
               "train_seconds": round(training_seconds, 3),
               "checkpoint_seconds": round(checkpoint.seconds, 3),
               # the model these numbers measured: `runs`, `report` and `serve` show them only
               # while model-best.keras is still that model
               "keras_sha256": record["source"]["sha256"]}  # hashed once, for both
    layout.write_json(run_dir / layout.METRICS_FILE, metrics)
    if not math.isfinite(metrics["test_loss"]):
        raise DigitnetError("training diverged: test loss is not finite (lower the learning rate)")
    return TrainResult(run_dir, metrics)
