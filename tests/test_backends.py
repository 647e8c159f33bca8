"""The JAX backend end to end, and data-parallel training on two CPU devices on both backends.

The tests run on TensorFlow (conftest.py); Keras picks its backend once per process, so JAX
trainings run in child processes (tests/devices_child.py) and their run directories are read
back here, under TensorFlow: a .keras file is backend-neutral.
"""

import json
import subprocess
import sys

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
DROPOUT = ("model.layers=[{type: flatten}, {type: dense, units: 32}, {type: dropout, rate: 0.5}, "
           "{type: dense, units: 10, activation: softmax}]")
# Dropout and augmentation: their random state is part of what an exact resume restores.
JAX_SETS = TINY_OVERRIDES + ("training.batch_size=10", "training.augment.rotation_degrees=10",
                             "training.augment.thickness=0.5", DROPOUT)


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
    """Three JAX runs: two epochs straight; one epoch then --resume to two; two on two devices."""
    root = tmp_path_factory.mktemp("jax")
    straight, split, parallel = root / "straight", root / "split", root / "parallel"
    commands = [train_args(tiny_data_dir, straight, "--backend", "jax", sets=JAX_SETS),
                train_args(tiny_data_dir, split, "--backend", "jax", "--epochs", "1",
                           sets=JAX_SETS),
                ["train", "--resume", str(split), "--epochs", "2"],
                train_args(tiny_data_dir, parallel, "--backend", "jax", "--devices", "2",
                           sets=JAX_SETS)]
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
    with pytest.raises(DigitnetError, match=r"^training.backend: expected 'tensorflow' \(Keras "
                                            r"in this process was imported with it"):
        train_and_evaluate(load_config(None, ("training.backend=jax",)), run_dir,
                           str(tiny_data_dir))
    assert not run_dir.exists()


@pytest.mark.parametrize("devices, message", [
    ("0", "--devices: expected a number >= 1 or 'all', received '0'"),
    ("two", "--devices: expected a number >= 1 or 'all', received 'two'"),
    ("3", "--devices 3: expected at most the 1 CPU device TensorFlow sees"),
])
def test_bad_devices_are_one_line_errors(runs_dir, tiny_data_dir, devices, message):
    result = CliRunner().invoke(cli, train_args(tiny_data_dir, runs_dir / "x", "--devices",
                                                devices))
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"


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


def test_jax_batches_slice_each_global_batch_by_process(monkeypatch):
    """Each process of a job takes its own rows of the same global batch, augmented alike."""
    from digitnet.config import TrainingConfig
    from digitnet.training.backends import jax as jax_backend

    x = np.arange(40 * 28 * 28, dtype=np.uint32).reshape(40, 28, 28).astype(np.uint8)
    y = np.arange(40) % 10
    training = TrainingConfig(batch_size=8, seed=3, augment=AugmentConfig(rotation_degrees=10))
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
