"""Train a model from a config into a run directory, then test it.

The entry point is `train_and_evaluate(config, run_dir, ...)`; everything else is a stage of it.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet import __version__, rundir
from digitnet.config import Config, TrainingConfig, save_config
from digitnet.data import Splits, load_mnist, resolve_source, split_validation
from digitnet.devices import select_device
from digitnet.errors import DigitnetError
from digitnet.export import export_litert, litert_path


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    metrics: dict


def seed_everything(seed: int, jit_compile: bool) -> None:
    """Seed Python, numpy and the backend in one place.

    TensorFlow's op-determinism switch turns XLA off, so it is used only without jit_compile;
    XLA's CPU kernels are deterministic for a fixed machine and thread count (tested).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if not jit_compile:
        tf.config.experimental.enable_op_determinism()


def make_schedule(training: TrainingConfig, epoch_steps: int):
    """Learning rate per step: linear warm-up to the peak, then constant or cosine to zero."""
    import keras

    warmup = int(training.warmup_epochs * epoch_steps)
    total = training.epochs * epoch_steps
    if training.schedule == "constant" and warmup == 0:
        return training.learning_rate
    decay_steps = max(total - warmup, 1) if training.schedule == "cosine" else 10**12
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else training.learning_rate,
        decay_steps=decay_steps, alpha=0.0,
        warmup_target=training.learning_rate if warmup else None, warmup_steps=warmup)


def make_optimizer(training: TrainingConfig, epoch_steps: int):
    import keras

    rate = make_schedule(training, epoch_steps)
    if training.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    if training.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=training.weight_decay)
    if training.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)


def compile_model(model, training: TrainingConfig, num_examples: int) -> None:
    """Attach optimizer, loss and metric; labels are one-hot so label smoothing applies."""
    import keras

    model.compile(
        optimizer=make_optimizer(training, steps_per_epoch(num_examples, training)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=training.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=training.jit_compile,
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


def training_batches(x: np.ndarray, y: np.ndarray, training: TrainingConfig, first_epoch: int):
    """An endless tf.data stream of shuffled one-hot batches, epoch after epoch.

    Each epoch's order is a pure function of (seed, epoch), so a resumed run sees exactly the
    batches an uninterrupted run would have seen.
    """
    import tensorflow as tf

    from digitnet.augment import augment_batch

    batch = training.batch_size
    steps = steps_per_epoch(len(x), training)
    images = tf.constant(x)
    labels = tf.one_hot(tf.constant(y), 10)

    def epoch_order(epoch):
        seed = tf.stack([tf.constant(training.seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(len(x)), seed=seed)
        batches = tf.reshape(order[: steps * batch], (steps, batch))
        return tf.data.Dataset.from_tensor_slices(batches)

    def gather(step, idx):
        batch_images = tf.gather(images, idx)
        if training.augment.enabled:  # seeded by the global step: identical after a resume
            seed = tf.stack([tf.constant(training.seed, tf.int64), step])
            batch_images = augment_batch(batch_images, training.augment, seed)
        return batch_images, tf.gather(labels, idx)

    return (tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_order)
            .enumerate(start=first_epoch * steps)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def fit(model, splits: Splits, config: Config, run_dir: Path, first_epoch: int = 0,
        callbacks: tuple = ()) -> float:
    """Run `model.fit` for the configured epochs; return the seconds it took."""
    from digitnet.validation import EagerValidation

    training = config.training
    started = time.perf_counter()
    model.fit(
        training_batches(splits.x_train, splits.y_train, training, first_epoch),
        steps_per_epoch=steps_per_epoch(len(splits.x_train), training),
        epochs=training.epochs, initial_epoch=first_epoch,
        callbacks=[EagerValidation(splits.x_val, splits.y_val), *callbacks],
        shuffle=False,  # training_batches already shuffles, reproducibly
        verbose=1 if sys.stdout.isatty() else 2,  # no carriage returns in a log file
    )
    return time.perf_counter() - started


def measure(model, splits: Splits) -> dict:
    """Loss and accuracy of `model` on the train, val and test splits."""
    metrics = {}
    for name, x, y in (("train", splits.x_train, splits.y_train),
                       ("val", splits.x_val, splits.y_val),
                       ("test", splits.x_test, splits.y_test)):
        probabilities = model.predict(x, batch_size=1000, verbose=0)
        metrics[f"{name}_loss"] = cross_entropy(probabilities, y)
        metrics[f"{name}_accuracy"] = float(np.mean(probabilities.argmax(axis=1) == y))
    return metrics


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (no label smoothing)."""
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))


def manifest(config: Config, device: str, files: dict, command: list[str] | None) -> dict:
    """What produced the run: versions, seed, device, data hashes, command line."""
    import keras
    import tensorflow as tf

    return {
        "digitnet": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
        "python": platform.python_version(), "numpy": np.__version__,
        "platform": platform.platform(), "seed": config.training.seed, "device": device,
        "data_files": files, "command": command or sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def train_and_evaluate(config: Config, run_dir: Path, data_dir: str | None = None,
                       device: str = "auto", command: list[str] | None = None) -> TrainResult:
    """Train `config` into `run_dir` and test the best model.

    Args:
      config: the checked run configuration.
      run_dir: an empty directory that receives every file of the run.
      data_dir: --data-dir, or None for $DIGITNET_DATA_DIR, the config, or a download.
      device: "auto", "cpu" or "gpu".
      command: the command line to record in the manifest.

    Returns:
      The run directory and its final metrics.

    Raises:
      DigitnetError: bad data, an unavailable device, or an unwritable run directory.
    """
    device_name = select_device(device)
    print(f"Training on {device_name}; run directory {run_dir}", flush=True)
    seed_everything(config.training.seed, config.training.jit_compile)
    source = resolve_source(data_dir, config.data.source)
    mnist = load_mnist(source)
    # Record where the data came from, so evaluate finds it again with no arguments.
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, source=source))
    splits = split_validation(mnist, config.data.validation_size, config.training.seed)
    if config.training.batch_size > len(splits.x_train):
        raise DigitnetError(f"training.batch_size: expected at most the {len(splits.x_train)} "
                            f"training images, received {config.training.batch_size}")
    rundir.write_text(run_dir / rundir.CONFIG_FILE, save_config(config))
    rundir.write_json(run_dir / rundir.MANIFEST_FILE,
                      manifest(config, device_name, mnist.files, command))
    rundir.point_latest(run_dir)

    from digitnet.checkpoint import EpochCheckpoint
    from digitnet.model import build_model

    model = build_model(config.model)
    compile_model(model, config.training, len(splits.x_train))
    checkpoint = EpochCheckpoint(run_dir)
    seconds = fit(model, splits, config, run_dir, callbacks=(checkpoint,))
    return finish(run_dir, splits, seconds, checkpoint)


def finish(run_dir: Path, splits: Splits, seconds: float, checkpoint) -> TrainResult:
    """Test the best model and write metrics.json."""
    import keras

    best = keras.saving.load_model(run_dir / rundir.BEST_MODEL)
    export_litert(best, litert_path(run_dir / rundir.BEST_MODEL))  # predict without TensorFlow
    training_seconds = seconds - checkpoint.seconds  # file writes are not training
    metrics = {**measure(best, splits), "best_epoch": checkpoint.best_epoch,
               "epochs": checkpoint.epochs_run, "train_seconds": round(training_seconds, 3),
               "checkpoint_seconds": round(checkpoint.seconds, 3)}
    rundir.write_json(run_dir / rundir.METRICS_FILE, metrics)
    if not math.isfinite(metrics["test_loss"]):
        raise DigitnetError("training diverged: test loss is not finite (lower the learning rate)")
    return TrainResult(run_dir, metrics)
