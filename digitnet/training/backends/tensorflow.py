"""Keras on TensorFlow: tf.data input, TensorFlow augmentation, the fused Adam kernel,
MirroredStrategy over several devices, and the LiteRT export in this process."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from digitnet.config import NUM_CLASSES, TrainingConfig
from digitnet.data import PIXEL_MAX
from digitnet.training.devices import Placement, choose, describe
from digitnet.training.optim import eager_learning_rate

NAME = "tensorflow"


def versions() -> dict:
    return {"tensorflow": tf.__version__}


def select_devices(device: str, count: int | None) -> Placement:
    """Make only the chosen kind of device visible; return the first `count` of them.

    Several CPU devices exist only as logical devices made before TensorFlow starts
    (tf.config.set_logical_device_configuration), as the tests do.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" or not gpus:
        tf.config.set_visible_devices([], "GPU")
    kind, found = choose(device, count,
                         [d.name for d in tf.config.list_logical_devices("GPU")] if gpus else [],
                         [d.name for d in tf.config.list_logical_devices("CPU")], "TensorFlow")
    physical = [gpu.name for gpu in gpus][: len(found)] if kind == "GPU" else found
    return Placement(describe(kind, physical), tuple(found))


def seed_everything(seed: int, jit_compile: bool) -> None:
    """Seed Python, numpy and TensorFlow.

    TensorFlow's op-determinism switch turns XLA off, so it is used only without jit_compile;
    XLA's CPU kernels are deterministic for a fixed machine and thread count (tested).
    """
    keras.utils.set_random_seed(seed)
    if not jit_compile:
        tf.config.experimental.enable_op_determinism()


def jit_compile(training: TrainingConfig) -> bool:
    return training.jit_compile


def distribution(devices: tuple):
    """MirroredStrategy's scope over several devices (build, compile and fit inside it)."""
    if len(devices) < 2:
        return contextlib.nullcontext()
    ops = tf.distribute.ReductionToOneDevice() if "CPU" in devices[0] else None
    return tf.distribute.MirroredStrategy(list(devices), cross_device_ops=ops).scope()


def learning_rate(optimizer) -> float:
    """The rate of the optimizer's next step (its schedule evaluated eagerly)."""
    return eager_learning_rate(optimizer)


def fuse_adam(optimizer: keras.optimizers.Adam) -> keras.optimizers.Adam:
    """Make `optimizer` update each variable with TensorFlow's one-pass Adam kernel.

    Keras' Adam updates each variable with about ten element-wise ops; one pass takes 10% off the
    default recipe's epoch time (bench/fused_adam.py). The same arithmetic as Keras' Adam
    (AdamW's decay is applied before it, as in Keras). Only this instance's method changes, not
    its class, so saved models hold a plain Keras Adam that loads anywhere.
    """
    if not optimizer.amsgrad:
        optimizer.update_step = types.MethodType(fused_adam_update, optimizer)
    return optimizer


def fused_adam_update(self, gradient, variable, learning_rate):
    """Keras' `Adam.update_step` as one `ResourceApplyAdam` op per variable."""
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    index = self._get_variable_index(variable)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=self._momentums[index].handle,
        v=self._velocities[index].handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


def training_batches(x, y, training: TrainingConfig, first_epoch: int, steps: int,
                     outliers=None, preprocessed=None):
    """An endless tf.data stream of shuffled one-hot batches, epoch after epoch.

    `x` holds uint8 images (N, 28, 28); each batch becomes float32 (B, 28, 28, 1) in [0, 1] as
    it is drawn, the same values as `to_model_input`, so the pipeline holds a quarter of the
    bytes (copying 172 MB of float32 into TensorFlow took 0.2 s of every run's first epoch).
    Each epoch's order is a pure function of (seed, epoch), so a resumed run sees exactly the
    batches an uninterrupted run would have seen. With `outliers` (uint8 non-digits) and
    `training.outliers` > 0, each batch also gets that share of them, drawn by the global step,
    with the uniform distribution as their target (outlier exposure). With `preprocessed` (row i:
    predict's preprocessing of x[i]) and `training.augment.pipeline` > 0, each digit is swapped
    for that version of itself with that probability, drawn by the global step. With the jitter
    alone, `shifted_rows` shifts the rows as they are gathered, the same pixels as `jitter`.
    """
    from digitnet.training.augment import augment_batch, jitter_offsets, only_shifts

    batch, count = training.batch_size, len(x)
    swap = training.augment.pipeline if preprocessed is not None else 0.0
    bank = np.concatenate([x, preprocessed]) if swap else x  # row count + i: x[i]'s
    images = rows_of(bank)
    labels = tf.one_hot(tf.constant(y), NUM_CLASSES)

    @tf.autograph.experimental.do_not_convert  # see `gather`
    def epoch_order(epoch):
        seed = tf.stack([tf.constant(training.seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(len(x)), seed=seed)
        batches = tf.reshape(order[: steps * batch], (steps, batch))
        return tf.data.Dataset.from_tensor_slices(batches)

    extra = round(training.outliers * batch) if outliers is not None else 0
    others = rows_of(outliers) if extra else None
    shifted = None  # or the jitter alone, done with the gather
    pixels = training.augment.jitter_pixels
    if pixels > 0 and only_shifts(training.augment):
        shifted = shifted_rows(bank, outliers if extra else None, pixels)

    # Plain Python: tf.data's autograph rewrite of these functions' source (their `if`s and
    # `for`s run on Python values, so it changes no op) took 0.7 s of every run's first epoch.
    @tf.autograph.experimental.do_not_convert
    def gather(step, idx):
        seed = tf.stack([tf.constant(training.seed, tf.int64), step])
        rows = idx
        if swap:  # these digits as predict's preprocessing gives them to the model
            chosen = tf.random.stateless_uniform(
                [batch], tf.random.experimental.stateless_fold_in(seed, 2)) < swap
            rows = tf.where(chosen, idx + count, idx)
        batch_labels, pick = tf.gather(labels, idx), tf.zeros([0], tf.int32)
        if extra:  # outlier exposure: non-digits whose target is "any digit, equally"
            pick = tf.random.stateless_uniform(
                [extra], tf.random.experimental.stateless_fold_in(seed, 1), 0, len(outliers),
                tf.int32)
            uniform = tf.fill([extra, NUM_CLASSES], 1 / NUM_CLASSES)  # no digit at all
            batch_labels = tf.concat([batch_labels, uniform], 0)
        if shifted is not None:  # the jitter's offsets, drawn as augment_batch draws them
            batch_images = shifted(rows, pick, jitter_offsets(tf, pixels, seed))
        else:
            batch_images = images(rows)
            if extra:
                batch_images = tf.concat([batch_images, others(pick)], 0)
        batch_images = (tf.cast(batch_images, tf.float32) / PIXEL_MAX)[..., None]
        if training.augment.enabled and shifted is None:  # seeded by the global step: identical
            batch_images = augment_batch(batch_images, training.augment, seed)  # after a resume
        return batch_images, batch_labels

    # No autotuning: its background thread made tearing the pipeline down take up to 2 s.
    options = tf.data.Options()
    options.autotune.enabled = False
    return (tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_order)
            .enumerate(start=first_epoch * steps)
            .map(gather)
            .prefetch(2)
            .with_options(options))


def shifted_rows(digits, others, pixels: int):
    """fn(rows, picks, offsets) -> uint8 tensor: `digits[rows]` then `others[picks]`, each slice
    of jitter_rows shifted by its offset as augment.jitter shifts it, in one numpy call.

    The same pixels as gathering, converting to float32, then `jitter` (its pad, a slice per
    offset and a concat) and `augment_batch`'s clip, which changes nothing in [0, 1]: those
    tf ops ran on the pipeline's thread beside the training step on 2 cores (the default
    recipe's 1,120 batches alone: 2.75 s of iterating before, 2.0 s after).
    """
    from digitnet.training.augment import jitter_rows

    side = 2 * pixels + 1

    def take(rows, picks, offsets):
        taken = digits[rows] if others is None else np.concatenate([digits[rows], others[picks]])
        padded = np.pad(taken, ((0, 0), (pixels, pixels), (pixels, pixels)))
        shifted = np.empty_like(taken)
        start = 0
        for index, size in enumerate(np.bincount(jitter_rows(len(taken), pixels))):
            top, left = divmod(int(offsets[index]), side)
            shifted[start: start + size] = padded[start: start + size, top: top + 28,
                                                  left: left + 28]
            start += size
        return shifted

    def rows(indices, picks, offsets):
        taken = tf.numpy_function(take, [indices, picks, offsets], tf.as_dtype(digits.dtype),
                                  stateful=False)
        taken.set_shape([indices.shape[0] + picks.shape[0], 28, 28])
        return taken

    return rows


def rows_of(array):
    """fn(indices) -> the tensor of `array`'s rows at `indices`, gathered by numpy.

    The array stays numpy's alone. As a tensor (tf.constant) it was held three more times:
    tf.constant kept two copies, and tf.data copies every tensor its functions use when it
    rewrites the pipeline's graph, which op determinism makes it do (130 MB in all for the 43 MB
    of training images, measured). numpy's gather of a batch costs about what TensorFlow's did.
    """
    def take(indices):
        return array[indices]

    def rows(indices):
        taken = tf.numpy_function(take, [indices], tf.as_dtype(array.dtype), stateful=False)
        taken.set_shape(indices.shape.concatenate(array.shape[1:]))
        return taken

    return rows


def prepare_export() -> None:
    """Nothing to start: the export runs in this process."""


def start_litert_export(model, keras_path: Path, tflite_path: Path) -> Callable[[], None]:
    """Convert the loaded model here and now (a TensorFlow run starts no converter process:
    digitnet/export/converter.py's `start_early`)."""
    from digitnet.export.litert import export_litert as export

    export(model, tflite_path)
    return lambda: None


def abandon_export(tflite_path: Path) -> None:
    """Nothing to end: `start_litert_export` wrote the file before it returned."""


def join_cluster(cluster) -> None:
    """Several processes: not on TensorFlow (MultiWorkerMirroredStrategy fails in Keras 3's fit,
    keras-team/keras#20585)."""
    from digitnet.errors import InputError
    from digitnet.training.cluster import NEEDS_JAX

    raise InputError("number of processes", cluster.num_processes, NEEDS_JAX)
