"""Keras on JAX: a numpy input pipeline, JAX augmentation, keras.distribution.DataParallel over
several devices or processes, and the LiteRT export in a TensorFlow subprocess."""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import math
import os
import sys
import weakref
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np

from digitnet.config import NUM_CLASSES, AugmentConfig, TrainingConfig
from digitnet.data import PIXEL_MAX
from digitnet.errors import DigitnetError, InputError, first_line
from digitnet.training.augment import only_shifts
from digitnet.training.cluster import LostProcess
from digitnet.training.devices import Placement, choose, describe
from digitnet.training.optim import eager_learning_rate

NAME = "jax"
HEARTBEAT_SECONDS = 20  # a process silent this long is dead: the others stop with an error


def versions() -> dict:
    return {"jax": jax.__version__, "jaxlib": jax.lib.__version__}


def join_cluster(cluster) -> None:
    """Join the other processes of a multi-process job (before any JAX computation).

    What keras.distribution.initialize does (jax.distributed.initialize), with a heartbeat
    timeout, and with gloo for collectives between CPU processes.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(cluster.coordinator, cluster.num_processes,
                                   cluster.process_id, initialization_timeout=120,
                                   heartbeat_timeout_seconds=HEARTBEAT_SECONDS)
    except Exception as error:  # jaxlib raises its own XlaRuntimeError
        raise InputError("coordinator", cluster.coordinator, f"cannot join the "
                         f"{cluster.num_processes} processes as process {cluster.process_id} "
                         f"({first_line(error)})") from None


def select_devices(device: str, count: int | None) -> Placement:
    """The first `count` devices of the chosen kind (on every process of a multi-process job).

    Several CPU devices exist only when XLA_FLAGS=--xla_force_host_platform_device_count=N is
    set before JAX starts, as the tests do.
    """
    if device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    gpus = local_devices("gpu")
    kind, found = choose(device, count, gpus, local_devices("cpu"), "JAX")
    per_process = len(found)
    chosen = [d for d in jax.devices(found[0].platform)
              if d in found or local_index(d) < per_process]
    names = [str(d) for d in chosen]
    return Placement(describe(kind, names), tuple(chosen))


def local_devices(platform: str) -> list:
    """This process's devices of `platform` ("cpu" or "gpu"), none when JAX has no such backend."""
    try:
        return jax.local_devices(backend=platform)
    except RuntimeError:
        return []


def local_index(device) -> int:
    """The device's position among its own process's devices."""
    return [d.id for d in jax.devices(device.platform)
            if d.process_index == device.process_index].index(device.id)


def seed_everything(seed: int, jit_compile: bool) -> None:
    """Seed Python, numpy and Keras' JAX RNG; XLA's CPU kernels are deterministic as they are."""
    keras.utils.set_random_seed(seed)


def keep_tensorflow_out() -> None:
    """Tell Keras TensorFlow is not there, so that its `tf.available` checks (seeding, saving)
    do not import it: 4 s and 400 MB that a JAX run does not use (Keras' LazyModule)."""
    from keras.src.utils import module_utils

    module_utils.tensorflow._available = False


if keras.backend.backend() == "jax":  # imported by a TensorFlow process, e.g. the tests: leave it
    keep_tensorflow_out()


def jit_compile(training: TrainingConfig) -> bool:
    """Always: Keras on JAX without jit runs op by op, tens of times slower."""
    return True


def distribution(devices: tuple):
    """keras.distribution.DataParallel's scope over several devices (or processes).

    Each process feeds its own slice of every batch (training_batches), so the automatic
    sharding of tf.data datasets is off.
    """
    if len(devices) < 2:
        return contextlib.nullcontext()
    parallel = keras.distribution.DataParallel(devices=list(devices), auto_shard_dataset=False)
    return data_parallel(parallel)


@contextlib.contextmanager
def data_parallel(parallel):
    """The distribution's scope; in a multi-process job, a lost process becomes an error."""
    with parallel.scope():
        try:
            yield
        except Exception as error:
            if jax.process_count() == 1 or isinstance(error, DigitnetError):
                raise
            raise lost_process_error(error) from None


def exit_now() -> None:
    """Leave with status 1 at once, past JAX's shutdown (it aborts when a process is gone)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def lost_process_error(error: Exception) -> LostProcess:
    """Name the process(es) whose loss broke a collective, and make this one exit cleanly.

    The coordinator says who is still alive; with two processes it is the other one. JAX's
    shutdown at exit waits for every process and aborts when one is gone, so this process
    leaves with os._exit after the error is printed (atexit runs the last handler first).
    """
    count, me = jax.process_count(), jax.process_index()
    lost = [process for process in range(count) if process != me]
    if count > 2:
        with contextlib.suppress(Exception):  # the coordinator itself may be the one lost
            from jax._src.distributed import global_state

            live = global_state.client.get_live_nodes(list(range(count)))
            lost = [process for process in range(count) if process not in live] or lost
    atexit.register(exit_now)
    # XLA puts the cause after a long preamble on the first line: keep what follows it
    reason = first_line(error, limit=10_000).rsplit("Error dispatching computation: ", 1)[-1]
    reason = reason[:200]
    names = ", ".join(str(process) for process in lost)
    return LostProcess(f"lost process {names} of {count} ({reason}); the run is saved at its "
                       f"last completed epoch, and every process can resume it.")


def learning_rate(optimizer) -> float:
    """The rate of the optimizer's next step, from one compiled evaluation of its schedule.

    Keras evaluates a schedule eagerly, and on JAX each evaluation compiled the schedule's
    lax.cond anew (0.1-0.2 s, twice an epoch: history and TensorBoard). Compiled once, the
    value can differ from the eager one in the last bit.
    """
    schedule = optimizer._learning_rate  # Keras' attribute; .learning_rate evaluates it eagerly
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return eager_learning_rate(optimizer)
    if schedule not in COMPILED_SCHEDULES:
        COMPILED_SCHEDULES[schedule] = jax.jit(schedule.__call__)
    return float(COMPILED_SCHEDULES[schedule](optimizer.iterations.value))


COMPILED_SCHEDULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fuse_adam(optimizer):
    """Keras' own Adam: under jit, XLA fuses its element-wise ops already."""
    return optimizer


def training_batches(x, y, training: TrainingConfig, first_epoch: int, steps: int,
                     outliers=None, preprocessed=None):
    """An endless stream of shuffled one-hot batches, epoch after epoch, made on the device.

    Each epoch's order is a pure function of (seed, epoch) and each batch's augmentation and
    outliers (`training.outliers` of the batch: non-digits with uniform targets) of (seed, global
    step), so a resumed run sees exactly the batches an uninterrupted run would. In a
    multi-process job each process yields its own contiguous slice of every global batch; the
    random draws are made for the whole batch and sliced, so the job trains on the same images
    as one process would. With `preprocessed` (row i: predict's preprocessing of x[i]) and
    `training.augment.pipeline` > 0, each digit is swapped for that version of itself with that
    probability, drawn by the global step: the batch makers see the two as one bank of digits.
    """
    batch, process, processes = training.batch_size, jax.process_index(), jax.process_count()
    extra = round(training.outliers * batch) if outliers is not None else 0
    total = batch + extra
    local = slice(process * total // processes, (process + 1) * total // processes)
    count = len(x)
    swap = training.augment.pipeline if preprocessed is not None else 0.0
    if swap:  # row count + i: x[i] as predict's preprocessing gives it to the model
        x, y = np.concatenate([x, preprocessed]), np.concatenate([y, y])
    make = batch_maker(x, y, outliers if extra else None, training, extra, local)
    step = first_epoch * steps
    for epoch in itertools.count(first_epoch):
        order = np.random.default_rng([training.seed, epoch]).permutation(count)
        for rows in order[: steps * batch].reshape(steps, batch):
            if swap:
                chosen = np.random.default_rng([training.seed, step, 2]).random(batch) < swap
                rows = np.where(chosen, rows + count, rows)
            pick = (np.random.default_rng([training.seed, step, 1]).integers(
                0, len(outliers), extra) if extra else NO_ROWS)
            yield make(rows.astype(np.int32), pick.astype(np.int32), np.int32(step))
            step += 1


NO_ROWS = np.zeros(0, np.int32)


def batch_maker(x, y, outliers, training: TrainingConfig, extra: int, local: slice):
    """fn(image rows, outlier picks, global step) -> this process's (images, one-hot targets)
    of the batch (batch_size digits, then `extra` outliers), as JAX arrays, made by one compiled
    call on the device.

    The uint8 images, the outlier images (or None) and the one-hot targets go to the device
    once; each batch sends its indices only. Gathering the rows in numpy and sending 180 KB a
    batch took about 0.4 ms of the Python thread a step, the time the train step waits for it
    (bench/jax_steps.py). The outliers' target is the uniform distribution ("any digit,
    equally"). The images are converted to float32 (`to_unit`) and augmented by the step's key;
    when jitter is the only augmentation (the default config), `shifted_batch_maker` makes the
    same batches with less work.
    """
    total = training.batch_size + extra
    others, targets = host_banks(x, y, outliers)
    if only_shifts(training.augment):
        return shifted_batch_maker(x, others, targets, training, total, local)
    prepare = preparer(training, total, local)
    uniform = np.repeat(targets[-1:], extra, axis=0)
    held = (jnp.asarray(x), jnp.asarray(targets[:-1]), jnp.asarray(others))

    @jax.jit
    def make(held, rows, pick, step):
        images, targets, others = held
        batch, labels = images[rows], targets[rows]
        if len(uniform):  # outlier exposure
            batch = jnp.concatenate([batch, others[pick]])
            labels = jnp.concatenate([labels, jnp.asarray(uniform)])
        return prepare(batch[local], step), labels[local]

    return lambda rows, pick, step: make(held, rows, pick, step)


def host_banks(x, y, outliers) -> tuple[np.ndarray, np.ndarray]:
    """What both batch makers send to the device, in numpy: the outliers (uint8, an empty
    (0, 28, 28) bank without them), and the target table: the one-hot targets of `y`, then one
    row of the outliers' target, the uniform distribution ("any digit, equally")."""
    others = outliers if outliers is not None else np.zeros((0, 28, 28), np.uint8)
    targets = np.concatenate([np.eye(NUM_CLASSES, dtype=np.float32)[y],
                              np.full((1, NUM_CLASSES), 1 / NUM_CLASSES, np.float32)])
    return others, targets


def shifted_batch_maker(x, others, targets, training: TrainingConfig, total: int,
                        local: slice):
    """`batch_maker` when jitter is the only augmentation, or there is none: the same batches,
    bit for bit, from one gather of 28x28 windows.

    The digits and outliers go to the device once, as one bank of uint8 images padded by the
    jitter's pixels; an image shifted by whole pixels is a window of its padded copy. numpy
    works out each row's (image, top, left, target row) from the step's jitter offsets, which
    are drawn `OFFSET_STEPS` steps at a time by one compiled call (a permutation is a sort,
    0.1-0.3 ms when drawn in each batch's call), and the device gathers the windows and
    converts them to float32: no gather of rows, then a pad and a gather of shifted rows, on
    float32 four times the bytes. In bench/jax_steps.py it took 0.2-0.35 ms less CPU time a
    step than the general path (docs/speed.md). `others` and `targets` are `host_banks`'.
    """
    from digitnet.training.augment import jitter_rows

    pixels = training.augment.jitter_pixels
    side = 2 * pixels + 1
    padded = np.zeros((len(x) + len(others), 28 + 2 * pixels, 28 + 2 * pixels), np.uint8)
    padded[: len(x), pixels: pixels + 28, pixels: pixels + 28] = x
    padded[len(x):, pixels: pixels + 28, pixels: pixels + 28] = others
    bank = jnp.asarray(padded)
    targets = jnp.asarray(targets)  # the last row: the outliers' uniform target
    slices = jitter_rows(total, pixels)  # all the first offset (no shift) without jitter
    offsets = offset_drawer(training.seed, pixels)
    drawn = {}

    @jax.jit
    def make(bank, targets, spec):
        def window(start):
            return jax.lax.dynamic_slice(bank, (start[0], start[1], start[2]), (1, 28, 28))[0]

        return to_unit(jax.vmap(window)(spec[:, :3]))[..., None], targets[spec[:, 3]]

    def make_batch(rows, pick, step):
        block, index = divmod(int(step), OFFSET_STEPS)
        if drawn.get("block") != block:
            drawn.update(block=block, offsets=offsets(block))
        shift = drawn["offsets"][index][slices]
        spec = np.stack([np.concatenate([rows, pick + len(x)]), shift // side, shift % side,
                         np.concatenate([rows, np.full(len(pick), len(x))])], 1)
        return make(bank, targets, spec[local].astype(np.int32))

    return make_batch


OFFSET_STEPS = 256  # the jitter offsets of this many steps are drawn by one call


def offset_drawer(seed: int, pixels: int):
    """fn(block) -> numpy (OFFSET_STEPS, shifts): the jitter offsets of the global steps
    block * OFFSET_STEPS onwards, each `augmenter`'s draw for its step, bit for bit."""
    shifts = (2 * pixels + 1) ** 2

    @jax.jit
    def draw(steps):
        def one(step):
            return jax.random.permutation(jitter_key(step_key(seed, step)), shifts)

        return jax.vmap(one)(steps)

    def offsets(block: int) -> np.ndarray:
        if not pixels:
            return np.zeros((OFFSET_STEPS, 1), np.int32)
        first = block * OFFSET_STEPS
        return np.asarray(draw(jnp.arange(first, first + OFFSET_STEPS, dtype=jnp.int32)))

    return offsets


def step_key(seed: int, step):
    """The random key of a global step's augmentation."""
    return jax.random.fold_in(jax.random.key(seed), step)


def jitter_key(key):
    """The jitter's own key from the step's (as in TensorFlow: the other draws stay as they
    were when jitter is added)."""
    return jax.random.fold_in(key, 7)


def to_unit(images):
    """uint8 images -> float32 in [0, 1], bit for bit numpy's images / 255 (data.to_model_input;
    to run under jax.jit).

    XLA turns a division by the constant 255 into a product by 1/255, which differs from the
    quotient in the last bit for 126 of the 256 values. Element-wise and exact instead:
    x / 255 = x * 0x01010101 / (2**32 - 1) = (x * 0x01010101 + x / 255) * 2**-32, so float32's
    rounding of the integer x * 0x01010101 (exact in uint32) plus one where the fraction
    x / 255 lies strictly between 0 and 1 (0 < x < 255), times 2**-32 (exact), is the quotient
    rounded once, as numpy's is; tests/test_backends.py checks all 256 values. (A lookup in a
    table of numpy's values was a second gather on every batch.)
    """
    count = images.astype(jnp.uint32)
    nudge = ((count > 0) & (count < int(PIXEL_MAX))).astype(jnp.uint32)
    return (count * jnp.uint32(0x01010101) + nudge).astype(jnp.float32) * jnp.float32(2.0**-32)


def preparer(training: TrainingConfig, batch: int, local: slice):
    """fn(uint8 images, global step) -> the model's float32 input, augmented (to run under
    jax.jit; `batch_maker` compiles it with the batch's gathering).

    The step's random key is made inside (made eagerly, JAX's key ops took 0.5 ms a batch).
    """
    augment = augmenter(training.augment, batch, local) if training.augment.enabled else None

    def prepare(images, step):
        images = to_unit(images)[..., None]
        if augment is None:
            return images
        return augment(images, step_key(training.seed, step))

    return prepare


def augmenter(augment: AugmentConfig, batch: int, local: slice):
    """fn(images, key) (to run under jax.jit) applying digitnet.training.augment's warps in JAX."""
    from digitnet.training.augment import (
        ELASTIC_GRID,
        LINE_DRAWS,
        elastic_field,
        inverse_transforms,
        jitter_rows,
        line_ink,
    )

    shifts = (2 * augment.jitter_pixels + 1) ** 2
    rows = jitter_rows(batch, augment.jitter_pixels)[local] if augment.jitter_pixels else None

    limits = (math.radians(augment.rotation_degrees), math.radians(augment.shear_degrees),
              augment.scale, augment.shift_pixels, augment.shift_pixels)

    def run(images, key):
        keys = jax.random.split(key, 6)
        draws = [jax.random.uniform(k, (batch,), minval=-limit, maxval=limit)[local]
                 for k, limit in zip(keys, limits)]
        angle, shear, zoom, shift_x, shift_y = draws
        if any(limits) or augment.elastic_pixels:
            transforms = inverse_transforms(jnp, angle, shear, 1.0 + zoom, shift_x, shift_y)
            field = (0.0, 0.0)
            if augment.elastic_pixels:  # its own key, as in TensorFlow
                noise = jax.random.uniform(jax.random.fold_in(key, 8),
                                           (batch, ELASTIC_GRID, ELASTIC_GRID, 2),
                                           minval=-1.0, maxval=1.0)[local]
                field = elastic_field(jnp, noise, augment.elastic_pixels)
            images = warp(images, transforms, field)
        if augment.thickness > 0:
            draw = jax.random.uniform(keys[5], (batch,))[local][:, None, None, None]
            images = vary_thickness(images, augment.thickness, draw)
        if augment.lines > 0:  # its own key, as in TensorFlow
            draws = jax.random.uniform(jax.random.fold_in(key, 9), (batch, LINE_DRAWS))[local]
            images = jnp.maximum(images, line_ink(jnp, draws, augment.lines)[..., None])
        if rows is not None:  # its own key, as in TensorFlow: the others stay as they were
            offsets = jax.random.permutation(jitter_key(key), shifts)
            images = jitter(images, augment.jitter_pixels, offsets, rows)
        return jnp.clip(images, 0.0, 1.0)

    return run


def warp(images, transforms, field=(0.0, 0.0)):
    """Bilinear warp of (N, 28, 28, 1) images by 8-parameter inverse affine transforms, plus a
    per-pixel displacement field (x, y), each (N, 28, 28) (augment.elastic_field's)."""
    from digitnet.training.augment import source_points

    def one(image, source_x, source_y):
        return jax.scipy.ndimage.map_coordinates(image[..., 0], [source_y, source_x], order=1,
                                                 mode="constant", cval=0.0)[..., None]

    return jax.vmap(one)(images, *source_points(transforms, *field))


def jitter(images, pixels: int, offsets, rows):
    """augment.jitter in JAX: row i shifted by whole pixels, by the offset offsets[rows[i]]
    (an index into the (2 * pixels + 1) ** 2 shifts); the uncovered border is zeros."""
    side = 2 * pixels + 1
    padded = jnp.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))

    def one(image, offset):
        return jax.lax.dynamic_slice(image, (offset // side, offset % side, 0), (28, 28, 1))

    return jax.vmap(one)(padded, offsets[rows])


def vary_thickness(images, probability: float, draw):
    """Thicken (2x2 dilation) or thin (2x2 erosion) each image with `probability` / 2 each."""
    pool = functools.partial(jax.lax.reduce_window, init_value=-jnp.inf,
                             computation=jax.lax.max, window_dimensions=(1, 2, 2, 1),
                             window_strides=(1, 1, 1, 1),
                             padding=((0, 0), (0, 1), (0, 1), (0, 0)))
    thick, thin = pool(images), -pool(-images)
    return jnp.where(draw < probability / 2, thick, jnp.where(draw < probability, thin, images))


def prepare_export() -> None:
    """Start the LiteRT converter's process unless `digitnet train` started it first: it
    imports TensorFlow while this one calibrates the model (digitnet/export/converter.py)."""
    from digitnet.export import converter

    converter.start()


def start_litert_export(model, keras_path: Path, tflite_path: Path):
    """Convert the saved .keras file under TensorFlow, in the converter process (Keras converts
    to LiteRT only on the TensorFlow backend, and it is fixed per process)."""
    from digitnet.export import converter

    return converter.convert(keras_path, tflite_path)


def abandon_export(tflite_path: Path) -> None:
    """End the converter (none is left writing in the run directory, none is waited for) and
    remove its partial file."""
    from digitnet.export import converter

    converter.abandon(tflite_path)
