"""The JAX backend end to end, and data-parallel training on two CPU devices on both backends.

The tests run on TensorFlow (conftest.py); Keras picks its backend once per process, so JAX
trainings run in child processes (tests/devices_child.py) and their run directories are read
back here, under TensorFlow: a .keras file is backend-neutral.
"""

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from digitnet.cli import cli
from digitnet.config import AugmentConfig, load_config
from digitnet.errors import DigitnetError
from digitnet.evaluation.evaluate import evaluate
from digitnet.inference.predict import predict
from digitnet.runs import layout
from digitnet.training.train import train_and_evaluate
from tests.conftest import REPO, TINY_OVERRIDES

CHILD = REPO / "tests" / "devices_child.py"
TRAIN_CHILD = REPO / "tests" / "train_child.py"
DROPOUT = ("model.layers=[{type: flatten}, {type: dense, units: 32}, {type: dropout, rate: 0.5}, "
           "{type: dense, units: 10, activation: softmax}]")
# Dropout and augmentation: their random state is part of what an exact resume restores. A
# constant rate: a run of 1 epoch resumed to 2 then follows the schedule of a 2-epoch run.
JAX_SETS = TINY_OVERRIDES + ("training.batch_size=10", "training.augment.rotation_degrees=10",
                             "training.augment.thickness=0.5", "training.schedule=constant",
                             DROPOUT)


def train_args(data_dir, run_dir, *extra, sets=TINY_OVERRIDES + ("training.batch_size=10",)):
    return ["train", "--data-dir", str(data_dir), "--run-dir", str(run_dir),
            *[part for text in sets for part in ("--set", text)], *extra]


def run_child(backend, commands, tmp_path):
    """Run `digitnet` commands in one child process with two CPU devices; return its stdout."""
    done = subprocess.run([sys.executable, str(CHILD), backend, json.dumps(commands)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def weights(path):
    """Every weight and optimizer variable of a .keras file."""
    model = keras.saving.load_model(path)
    return [np.asarray(v) for v in model.weights + model.optimizer.variables]


def history(run_dir):
    rows = (run_dir / layout.HISTORY_FILE).read_text().splitlines()
    return [row.rsplit(",", 1)[0] for row in rows]  # less the seconds column


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory, tiny_data_dir):
    """Three JAX runs: two epochs straight; one epoch then --resume to two; two on two devices
    (only the first exported to LiteRT: the others' tests compare weights)."""
    root = tmp_path_factory.mktemp("jax")
    straight, split, parallel = root / "straight", root / "split", root / "parallel"
    commands = [train_args(tiny_data_dir, straight, "--backend", "jax", sets=JAX_SETS),
                ["--no-litert", *train_args(tiny_data_dir, split, "--backend", "jax", "--epochs",
                                            "1", sets=JAX_SETS)],
                ["--no-litert", "train", "--resume", str(split), "--epochs", "2"],
                ["--no-litert", *train_args(tiny_data_dir, parallel, "--backend", "jax",
                                            "--devices", "2", sets=JAX_SETS)]]
    stdout = run_child("jax", commands, root)
    return {"straight": straight, "split": split, "parallel": parallel, "stdout": stdout}


def test_jax_run_has_every_file_and_never_imports_tensorflow(jax_runs):
    run_dir = jax_runs["straight"]
    names = {path.name for path in run_dir.iterdir()}
    assert {"config.yaml", "model-best.keras", "model-best.tflite", "history.csv",
            "metrics.json", "manifest.json", "tensorboard"} <= names
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backend"] == "jax" and manifest["jax"] and "tensorflow" not in manifest
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
    assert jax_runs["stdout"].strip().endswith("no tensorflow")


def test_jax_resume_is_exact(jax_runs):
    straight, split = jax_runs["straight"], jax_runs["split"]
    for ours, theirs in zip(weights(split / layout.LAST_MODEL),
                            weights(straight / layout.LAST_MODEL)):
        assert np.array_equal(ours, theirs)
    assert history(split) == history(straight)


def test_jax_run_is_evaluated_predicted_and_reported_under_tensorflow(jax_runs, tiny_data_dir,
                                                                      tmp_path):
    from digitnet.evaluation.report import write_report

    run_dir = jax_runs["straight"]
    report = evaluate(run_dir, "test", str(tiny_data_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])
    image = tmp_path / "digit.png"
    from PIL import Image

    pixels = np.full((56, 56), 255, np.uint8)
    pixels[10:46, 26:30] = 0  # a dark "1" on white paper
    Image.fromarray(pixels).save(image)
    [prediction] = list(predict([str(image)], str(run_dir), 3, 0.0))
    assert prediction.error is None and len(prediction.top_k) == 3
    assert "<html" in write_report(str(run_dir), str(tiny_data_dir)).read_text().lower()


def test_two_jax_devices_match_one(jax_runs):
    for ours, theirs in zip(weights(jax_runs["parallel"] / layout.LAST_MODEL),
                            weights(jax_runs["straight"] / layout.LAST_MODEL)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_two_tensorflow_devices_match_one(tmp_path, tiny_data_dir):
    one, two = tmp_path / "one", tmp_path / "two"
    stdout = run_child("tensorflow", [train_args(tiny_data_dir, one, "--devices", "1"),
                                      train_args(tiny_data_dir, two, "--devices", "2")],
                       tmp_path)
    assert "Training on 2 CPU devices" in stdout
    for ours, theirs in zip(weights(two / layout.LAST_MODEL), weights(one / layout.LAST_MODEL)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_resume_on_another_backend_is_refused(jax_runs):
    result = CliRunner().invoke(cli, ["train", "--resume", str(jax_runs["split"]),
                                      "--epochs", "3", "--backend", "tensorflow"])
    assert result.exit_code == 1
    assert "training.backend differs (run: 'jax', now: 'tensorflow')" in result.output


def test_a_backend_other_than_the_loaded_one_is_an_error(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # as the CLI makes it
    with pytest.raises(DigitnetError, match=r"^training.backend: expected 'tensorflow' \(Keras "
                                            r"in this process was imported with it"):
        train_and_evaluate(load_config(None, ("training.backend=jax",)), run_dir,
                           str(tiny_data_dir))
    assert not run_dir.exists()


@pytest.mark.parametrize("devices, message", [
    ("0", "--devices 0: expected a number >= 1 or 'all'"),
    ("two", "--devices two: expected a number >= 1 or 'all'"),
    ("3", "--devices 3: expected at most the 1 CPU device TensorFlow sees"),
])
def test_bad_devices_are_one_line_errors(runs_dir, tiny_data_dir, devices, message):
    result = CliRunner().invoke(cli, train_args(tiny_data_dir, runs_dir / "x", "--devices",
                                                devices))
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"


def test_both_backends_have_every_part_of_the_seam():
    """Each name the seam lists (digitnet/training/backends/__init__.py) is in both modules."""
    from digitnet.training import backends
    from digitnet.training.backends import jax as jax_backend
    from digitnet.training.backends import tensorflow as tensorflow_backend

    names = re.findall(r"^    (\w+)", backends.__doc__, re.MULTILINE)
    assert {"NAME", "start_litert_export", "abandon_export", "join_cluster"} <= set(names)
    for module in (tensorflow_backend, jax_backend):
        assert [name for name in names if not hasattr(module, name)] == [], module.__name__


def test_jax_augmentation_draws_the_same_warps_as_tensorflow():
    """The JAX warp and stroke changes are TensorFlow's ops, given the same random draws."""
    import jax.numpy as jnp
    import tensorflow as tf

    from digitnet.training import augment
    from digitnet.training.backends import jax as jax_backend

    rng = np.random.default_rng(0)
    images = rng.random((6, 28, 28, 1), dtype=np.float32)
    draws = [rng.uniform(-0.3, 0.3, 6).astype(np.float32) for _ in range(5)]
    angle, shear, zoom, shift_x, shift_y = draws
    transforms = augment.inverse_transforms(tf, angle, shear, 1 + zoom, 3 * shift_x, 3 * shift_y)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[28, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    ours = jax_backend.warp(jnp.asarray(images), jnp.asarray(transforms.numpy()))
    np.testing.assert_allclose(np.asarray(ours), expected.numpy(), atol=1e-5)
    noise = rng.uniform(-1, 1, (6, augment.ELASTIC_GRID, augment.ELASTIC_GRID, 2)).astype(
        np.float32)
    field = augment.elastic_field(tf, tf.constant(noise), 2.5)
    bent = augment.bilinear(tf, tf.constant(images), *augment.source_points(transforms, *field))
    ours = jax_backend.warp(jnp.asarray(images), jnp.asarray(transforms.numpy()),
                            augment.elastic_field(jnp, jnp.asarray(noise), 2.5))
    np.testing.assert_allclose(np.asarray(ours), bent.numpy(), atol=1e-5)
    assert not np.allclose(bent.numpy(), expected.numpy(), atol=1e-2)
    draw = np.linspace(0, 1, 6, dtype=np.float32)
    expected = augment.vary_thickness(tf, images, 0.6, tf.constant([1, 2], tf.int64))
    thick = tf.nn.max_pool2d(images, 2, 1, "SAME").numpy()
    thin = -tf.nn.max_pool2d(-images, 2, 1, "SAME").numpy()
    ours = np.asarray(jax_backend.vary_thickness(jnp.asarray(images), 0.6,
                                                 draw[:, None, None, None]))
    for index, value in enumerate(draw):
        want = thick if value < 0.3 else thin if value < 0.6 else images
        np.testing.assert_allclose(ours[index], want[index], atol=1e-6)
    assert expected.shape == images.shape


def test_jax_jitter_shifts_each_row_by_its_slices_offset():
    """training.augment.jitter_pixels on JAX: the same slices and shifts as TensorFlow's."""
    import jax
    import jax.numpy as jnp

    from digitnet.training.augment import jitter_rows
    from digitnet.training.backends import jax as jax_backend

    images = np.random.default_rng(0).random((10, 28, 28, 1), dtype=np.float32)
    offsets = np.array([4, 0, 8, 1, 7, 2, 6, 3, 5])  # the 9 one-pixel shifts, in drawn order
    rows = jitter_rows(10, 1)
    assert list(rows) == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    ours = np.asarray(jax_backend.jitter(jnp.asarray(images), 1, jnp.asarray(offsets), rows))
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for index, row in enumerate(rows):
        top, left = divmod(offsets[row], 3)
        np.testing.assert_array_equal(ours[index], padded[index, top:top + 28, left:left + 28])
    run = jax_backend.augmenter(AugmentConfig(jitter_pixels=1), 10, slice(None))
    assert not np.allclose(np.asarray(run(jnp.asarray(images), jax.random.key(0))), images)
    run = jax_backend.augmenter(AugmentConfig(elastic_pixels=2.0), 10, slice(None))
    bent = np.asarray(run(jnp.asarray(images), jax.random.key(0)))
    assert not np.allclose(bent, images)
    np.testing.assert_array_equal(bent, np.asarray(run(jnp.asarray(images), jax.random.key(0))))


def test_jax_lines_are_tensorflows_lines():
    """training.augment.lines on JAX: the same arithmetic as TensorFlow's for the same draws,
    drawn over the digit from the step's own key."""
    import jax
    import jax.numpy as jnp
    import tensorflow as tf

    from digitnet.training.augment import LINE_DRAWS, line_ink
    from digitnet.training.backends import jax as jax_backend

    draws = np.random.default_rng(4).random((12, LINE_DRAWS)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(line_ink(jnp, jnp.asarray(draws), 0.5)),
                               line_ink(tf, tf.constant(draws), 0.5).numpy(), atol=1e-5)
    images = np.random.default_rng(0).random((10, 28, 28, 1), dtype=np.float32) * 0.2
    run = jax_backend.augmenter(AugmentConfig(lines=1.0), 10, slice(None))
    out = np.asarray(run(jnp.asarray(images), jax.random.key(0)))
    assert np.all(out >= images) and ((out - images) > 0.25).any(axis=(1, 2, 3)).all()
    np.testing.assert_array_equal(out, np.asarray(run(jnp.asarray(images), jax.random.key(0))))


@pytest.mark.parametrize("augment", [AugmentConfig(rotation_degrees=10),
                                     AugmentConfig(jitter_pixels=2)])
def test_jax_batches_slice_each_global_batch_by_process(monkeypatch, augment):
    """Each process of a job takes its own rows of the same global batch, augmented alike."""
    from digitnet.config import TrainingConfig
    from digitnet.training.backends import jax as jax_backend

    x = np.arange(40 * 28 * 28, dtype=np.uint32).reshape(40, 28, 28).astype(np.uint8)
    y = np.arange(40) % 10
    training = TrainingConfig(batch_size=8, seed=3, augment=augment)
    whole = [b for _, b in zip(range(6), jax_backend.training_batches(x, y, training, 1, 5))]
    parts = []
    for process in (0, 1):
        monkeypatch.setattr(jax_backend.jax, "process_index", lambda p=process: p)
        monkeypatch.setattr(jax_backend.jax, "process_count", lambda: 2)
        parts.append([b for _, b in zip(range(6), jax_backend.training_batches(x, y, training,
                                                                               1, 5))])
    for (images, labels), first, second in zip(whole, *parts):
        np.testing.assert_allclose(np.concatenate([first[0], second[0]]), images, atol=1e-6)
        assert np.array_equal(np.concatenate([first[1], second[1]]), labels)


def test_jax_batches_made_on_the_device_are_the_defined_ones():
    """Each batch, gathered on the device from its indices, is bit for bit the definition: the
    epoch's (seed, epoch) order, outliers drawn by (seed, step) with uniform targets, numpy's
    uint8 / 255; with jitter, each slice of rows is its images shifted by one whole-pixel
    offset. Resuming at epoch 1 gives epoch 1's batches."""
    from digitnet.config import TrainingConfig
    from digitnet.data import to_model_input
    from digitnet.training.augment import jitter_rows
    from digitnet.training.backends import jax as jax_backend

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 23)
    others = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    training = TrainingConfig(batch_size=5, seed=3, outliers=0.4)
    batches = jax_backend.training_batches(x, y, training, 0, 4, others)
    resumed = jax_backend.training_batches(x, y, training, 1, 4, others)
    for step in range(8):
        epoch, row = divmod(step, 4)
        rows = np.random.default_rng([3, epoch]).permutation(23)[row * 5: row * 5 + 5]
        pick = np.random.default_rng([3, step, 1]).integers(0, 7, 2)
        images, labels = next(batches)
        assert np.array_equal(np.asarray(images),
                              to_model_input(np.concatenate([x[rows], others[pick]])))
        assert np.array_equal(np.asarray(labels)[:5], np.eye(10, dtype=np.float32)[y[rows]])
        assert np.array_equal(np.asarray(labels)[5:], np.full((2, 10), 0.1, np.float32))
        if epoch == 1:
            again = next(resumed)
            assert np.array_equal(np.asarray(again[0]), np.asarray(images))
    jittered = dataclasses.replace(training, augment=AugmentConfig(jitter_pixels=1))
    images, _ = next(jax_backend.training_batches(x, y, jittered, 0, 4, others))
    rows = np.random.default_rng([3, 0]).permutation(23)[:5]
    pick = np.random.default_rng([3, 0, 1]).integers(0, 7, 2)
    padded = np.pad(to_model_input(np.concatenate([x[rows], others[pick]])),
                    ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifts = [(top, left) for top in range(3) for left in range(3)]
    slices = jitter_rows(7, 1)
    chosen = [[shift for shift in shifts
               if np.array_equal(np.asarray(images)[i],
                                 padded[i, shift[0]:shift[0] + 28, shift[1]:shift[1] + 28])]
              for i in range(7)]
    assert all(chosen)  # every row is its image shifted by whole pixels
    for index in range(7):  # rows of one slice share one shift
        same = [i for i in range(7) if slices[i] == slices[index]]
        assert set.intersection(*(set(chosen[i]) for i in same))
    assert not np.array_equal(np.asarray(images), padded[:, 1:29, 1:29])


def test_jax_batches_swap_that_share_of_the_digits_for_their_pipeline_versions(monkeypatch):
    """training.augment.pipeline on JAX: each digit is its preprocessed version where the step's
    draw (seed, step, 2) says so, its label unchanged; the outliers stay as they were; the
    batches from one gather of windows (jitter alone) are the general path's."""
    from digitnet.config import TrainingConfig
    from digitnet.data import to_model_input
    from digitnet.training.backends import jax as jax_backend

    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 23)
    preprocessed = 255 - x
    others = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    training = TrainingConfig(batch_size=5, seed=3, outliers=0.4,
                              augment=AugmentConfig(pipeline=0.5))
    batches = jax_backend.training_batches(x, y, training, 0, 4, others, preprocessed)
    resumed = jax_backend.training_batches(x, y, training, 1, 4, others, preprocessed)
    swapped = 0
    for step in range(8):
        epoch, row = divmod(step, 4)
        rows = np.random.default_rng([3, epoch]).permutation(23)[row * 5: row * 5 + 5]
        chosen = np.random.default_rng([3, step, 2]).random(5) < 0.5
        pick = np.random.default_rng([3, step, 1]).integers(0, 7, 2)
        digits = np.where(chosen[:, None, None], preprocessed[rows], x[rows])
        images, labels = next(batches)
        assert np.array_equal(np.asarray(images),
                              to_model_input(np.concatenate([digits, others[pick]])))
        assert np.array_equal(np.asarray(labels)[:5], np.eye(10, dtype=np.float32)[y[rows]])
        assert np.array_equal(np.asarray(labels)[5:], np.full((2, 10), 0.1, np.float32))
        swapped += chosen.sum()
        if epoch == 1:  # a resume after epoch 1 swaps the same digits: drawn by global step
            again, again_labels = next(resumed)
            assert np.array_equal(np.asarray(again), np.asarray(images))
            assert np.array_equal(np.asarray(again_labels), np.asarray(labels))
    assert 0 < swapped < 40
    jittered = dataclasses.replace(training, augment=AugmentConfig(pipeline=0.5, jitter_pixels=1))
    monkeypatch.setattr(jax_backend, "only_shifts", lambda augment: False)
    general = jax_backend.training_batches(x, y, jittered, 0, 4, others, preprocessed)
    wanted = [next(general) for _ in range(6)]
    monkeypatch.undo()
    assert jax_backend.only_shifts(jittered.augment)
    shifted = jax_backend.training_batches(x, y, jittered, 0, 4, others, preprocessed)
    for want_images, want_labels in wanted:
        images, labels = next(shifted)
        assert np.array_equal(np.asarray(images), np.asarray(want_images))
        assert np.array_equal(np.asarray(labels), np.asarray(want_labels))


def test_jax_pixels_convert_to_numpys_quotient_for_every_value():
    """uint8 -> float32 on the device is numpy's x / 255 (to_model_input) for all 256 values,
    compiled; XLA's own x / 255 differs in the last bit for some of them."""
    import jax
    import jax.numpy as jnp

    from digitnet.data import to_model_input
    from digitnet.training.backends import jax as jax_backend

    values = np.arange(256, dtype=np.uint8)
    expected = to_model_input(values[None])[0, :, 0]
    assert np.array_equal(np.asarray(jax.jit(jax_backend.to_unit)(values)), expected)
    assert not np.array_equal(np.asarray(jax.jit(lambda v: v.astype(jnp.float32) / 255)(values)),
                              expected)


@pytest.mark.parametrize("pixels", [0, 1])
def test_jax_shifted_batches_are_the_general_paths(monkeypatch, pixels):
    """With jitter alone (the default config) or no augmentation, the batches made from one
    gather of windows are bit for bit those of the general path (convert, then augment), over
    steps that cross a block of drawn offsets, with outliers and without."""
    from digitnet.config import TrainingConfig
    from digitnet.training.backends import jax as jax_backend

    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 23)
    others = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    first_epoch = jax_backend.OFFSET_STEPS // 4 - 1  # steps OFFSET_STEPS - 4 onwards
    for training in (TrainingConfig(batch_size=5, seed=3, outliers=0.4,
                                    augment=AugmentConfig(jitter_pixels=pixels)),
                     TrainingConfig(batch_size=5, seed=4, augment=AugmentConfig(
                         jitter_pixels=pixels))):
        extra = others if training.outliers else None
        # a generator makes its batch maker at the first next(): the general batches while
        # only_shifts is patched, the shifted ones after
        monkeypatch.setattr(jax_backend, "only_shifts", lambda augment: False)
        general = jax_backend.training_batches(x, y, training, first_epoch, 4, extra)
        wanted = [next(general) for _ in range(8)]
        monkeypatch.undo()
        shifted = jax_backend.training_batches(x, y, training, first_epoch, 4, extra)
        for want_images, want_labels in wanted:
            images, labels = next(shifted)
            assert np.array_equal(np.asarray(images), np.asarray(want_images))
            assert np.array_equal(np.asarray(labels), np.asarray(want_labels))


# ---- a job of two processes on 127.0.0.1 ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_job(args, tmp_path, env_of):
    """Start `digitnet train ARGS` as processes 0 and 1 of a job; env_of(i) adds environment."""
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    return [subprocess.Popen([sys.executable, str(TRAIN_CHILD), *args, *cluster,
                              "--process-id", str(process)],
                             env={**os.environ, "KERAS_BACKEND": "jax", **env_of(process)},
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for process in (0, 1)]


@pytest.fixture(scope="module")
def killed_job(tmp_path_factory, tiny_data_dir):
    """A two-process job whose process 1 is killed in epoch 2; process 0's outcome and timing."""
    root = tmp_path_factory.mktemp("job")
    run_dir, ready = root / "run", root / "ready"
    args = train_args(tiny_data_dir, run_dir, "--backend", "jax", sets=JAX_SETS)
    hold = {"DIGITNET_TEST_READY": str(ready), "DIGITNET_TEST_EPOCH": "2",
            "DIGITNET_TEST_STEP": "1", "DIGITNET_TEST_HOLD": "300"}
    first, second = start_job(["train", *args[1:]], root,
                              lambda process: hold if process == 1 else {})
    deadline = time.monotonic() + 500
    while not ready.exists():
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.2)
    second.kill()
    killed = time.monotonic()
    _, stderr = first.communicate(timeout=120)
    second.communicate()
    return {"run_dir": run_dir, "root": root, "code": first.returncode, "stderr": stderr,
            "seconds": time.monotonic() - killed}


def test_a_lost_process_stops_the_job_with_an_error_naming_it(killed_job):
    assert killed_job["code"] == 1
    assert killed_job["seconds"] < 60
    [line] = [line for line in killed_job["stderr"].splitlines() if line.startswith("Error:")]
    assert line.startswith("Error: lost process 1 of 2 (")
    assert line.endswith(f"Resume with: digitnet train --resume {killed_job['run_dir']}")
    assert "Traceback" not in killed_job["stderr"]
    state = json.loads((killed_job["run_dir"] / "state.json").read_text())
    assert state["status"] == "failed" and state["epoch"] == 1


def test_the_job_resumes_to_identical_weights_equal_to_one_process(killed_job, jax_runs):
    root, run_dir = killed_job["root"], killed_job["run_dir"]
    jobs = start_job(["train", "--resume", str(run_dir)], root,
                     lambda process: {"DIGITNET_TEST_WEIGHTS": str(root / f"w{process}.npz"),
                                      "DIGITNET_TEST_NO_LITERT": "1"})  # tested in jax_runs
    for job in jobs:
        _, stderr = job.communicate(timeout=600)
        assert job.returncode == 0, stderr[-3000:]
    zero, one = np.load(root / "w0.npz"), np.load(root / "w1.npz")
    assert len(zero.files) == 4  # two Dense layers' kernels and biases
    for name in zero.files:
        assert np.array_equal(zero[name], one[name])  # every process holds the same weights
    single = keras.saving.load_model(jax_runs["straight"] / layout.LAST_MODEL).weights
    for name, weight in zip(zero.files, single):
        np.testing.assert_allclose(zero[name], np.asarray(weight), rtol=0, atol=1e-5)
    assert len(history(run_dir)) == 3  # the header and epochs 1 and 2


# ---- device selection, including the GPU paths no test machine here has ------------------------


@pytest.mark.parametrize("device, count, kind, chosen", [
    ("auto", 1, "GPU", ["g0"]), ("auto", None, "GPU", ["g0", "g1"]),
    ("gpu", 2, "GPU", ["g0", "g1"]), ("cpu", None, "CPU", ["c0"]),
])
def test_device_choice_prefers_gpus_unless_told(device, count, kind, chosen):
    from digitnet.training.devices import choose

    assert choose(device, count, ["g0", "g1"], ["c0"], "JAX") == (kind, chosen)


@pytest.mark.parametrize("device, count, gpus, message", [
    ("gpu", 1, [], "device gpu: JAX sees no GPU on this machine"),
    ("auto", 3, ["g0", "g1"], "devices 3: expected at most the 2 GPU devices JAX sees"),
])
def test_device_choice_refuses_what_is_not_there(device, count, gpus, message):
    from digitnet.training.devices import choose

    with pytest.raises(DigitnetError, match=f"^{message}"):
        choose(device, count, gpus, ["c0"], "JAX")


def test_device_descriptions():
    from digitnet.training.devices import describe

    assert describe("CPU", ["/device:CPU:0"]) == "CPU"
    assert describe("GPU", ["cuda:0"]) == "GPU:0 (cuda:0)"
    assert describe("GPU", ["cuda:0", "cuda:1"]) == "2 GPU devices (cuda:0, cuda:1)"


def test_batch_must_split_evenly_over_devices():
    from digitnet.training.devices import check_batch

    check_batch(192, 0.0, 4)
    check_batch(192, 0.25, 4)  # 240 images with the outliers
    with pytest.raises(DigitnetError, match=r"^training.batch_size: expected a batch \(with "
                                            r"training.outliers: 221 images\) that splits evenly "
                                            r"over the 2 devices, received 192$"):
        check_batch(192, 0.15, 2)


@pytest.mark.parametrize("options, message", [
    (("localhost", 2, 0), "coordinator localhost: expected HOST:PORT"),
    (("127.0.0.1:1", 2, 2), "process id 2: expected 0..1"),
])
def test_bad_cluster_values_are_named(options, message):
    from digitnet.training.cluster import make_cluster

    with pytest.raises(DigitnetError, match=f"^{message}$"):
        make_cluster(*options)


@pytest.mark.parametrize("args, message", [
    (("--coordinator", "127.0.0.1:1", "--num-processes", "2"),
     "--process-id: expected with the other options of a multi-process job"),
    (("--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "3"),
     "--process-id 3: expected 0..1"),
])
def test_bad_cluster_options_are_one_line_errors(runs_dir, tiny_data_dir, args, message):
    result = CliRunner().invoke(cli, [*train_args(tiny_data_dir, runs_dir / "x"), *args])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {message}")
    assert not (runs_dir / "x").exists()


def test_a_multi_process_job_names_its_run_directory(runs_dir):
    result = CliRunner().invoke(cli, ["train", "--coordinator", "127.0.0.1:1", "--num-processes",
                                      "2", "--process-id", "0"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: --run-dir: expected for a multi-process job")


def test_cluster_options_come_from_the_environment(runs_dir, tiny_data_dir, monkeypatch):
    monkeypatch.setenv("DIGITNET_COORDINATOR", "127.0.0.1:1")
    monkeypatch.setenv("DIGITNET_NUM_PROCESSES", "2")
    monkeypatch.setenv("DIGITNET_PROCESS_ID", "0")
    result = CliRunner().invoke(cli, train_args(tiny_data_dir, runs_dir / "x"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: --num-processes 2: training across processes needs "
                                    "training.backend: jax")
    assert not (runs_dir / "x").exists()
