"""One tiny end-to-end training run: the run directory and what it holds."""

import csv
import json
import os

import pytest
import yaml

from digitnet.config import load_config
from digitnet.errors import DigitnetError
from digitnet.runs import layout
from digitnet.training.train import train_and_evaluate
from tests.conftest import TINY_OVERRIDES


def test_run_directory_holds_everything_needed_later(tiny_run, tiny_data_dir):
    names = {path.name for path in tiny_run.iterdir()}
    assert {"config.yaml", "model-best.keras", "model-last.keras", "history.csv",
            "metrics.json", "manifest.json"} <= names
    assert not [name for name in names if name.startswith(".")]  # no temporary files left


def test_config_yaml_is_the_resolved_config(tiny_run, tiny_data_dir):
    saved = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert saved["training"]["batch_size"] == 5
    assert saved["data"]["source"] == str(tiny_data_dir)  # evaluate finds the data again


def test_history_has_one_row_per_epoch(tiny_run):
    rows = list(csv.DictReader((tiny_run / "history.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                             "learning_rate", "seconds"]
    assert all(float(row["seconds"]) > 0 for row in rows)


def test_metrics_json_shows_that_the_tiny_data_was_learned(tiny_run):
    """The synthetic digits are learnable (a bar whose row is the label): 2 epochs on 40 images
    must get nearly all right, far from chance (10%, loss ln 10 = 2.3)."""
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        assert metrics[f"{split}_accuracy"] >= 0.9, metrics
        # calibration may make a perfectly separated tiny split's probabilities exactly 1
        assert 0 <= metrics[f"{split}_loss"] < 0.5, metrics
    assert metrics["epochs"] == 2 and metrics["train_seconds"] > 0
    assert 1 <= metrics["best_epoch"] <= 2


def test_manifest_records_versions_seed_device_and_data(tiny_run):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    for key in ("digitnet", "tensorflow", "keras", "python", "numpy", "command"):
        assert manifest[key]
    assert manifest["seed"] == 0 and manifest["device"] == "CPU"
    assert len(manifest["data_files"]) == 4
    assert all(len(digest) == 64 for digest in manifest["data_files"].values())


def tiny_config(*extra):
    return load_config(None, TINY_OVERRIDES + extra)


def test_same_config_and_seed_give_the_same_metrics(runs_dir, tiny_data_dir):
    first = train_and_evaluate(tiny_config(), layout.new_run_dir("a"), str(tiny_data_dir))
    second = train_and_evaluate(tiny_config(), layout.new_run_dir("b"), str(tiny_data_dir))
    drop = ("train_seconds", "checkpoint_seconds", "keras_sha256")  # .keras zips hold a time
    assert {k: v for k, v in first.metrics.items() if k not in drop} == \
           {k: v for k, v in second.metrics.items() if k not in drop}
    assert os.readlink(runs_dir / "latest").endswith("b")


def test_training_learns_the_synthetic_digits(runs_dir, tiny_data_dir):
    config = tiny_config("training.epochs=6", "training.learning_rate=0.01")
    result = train_and_evaluate(config, layout.new_run_dir("learn"), str(tiny_data_dir))
    assert result.metrics["test_accuracy"] >= 0.9


def test_default_run_dir_is_timestamped_under_runs(runs_dir):
    path = layout.new_run_dir(None)
    assert path.parent == runs_dir and path.name[:8].isdigit()
    assert layout.new_run_dir(None) != path  # two runs in the same second do not collide


def test_non_empty_run_dir_is_refused(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("x")
    with pytest.raises(DigitnetError) as error:
        layout.new_run_dir(tmp_path / "old")
    assert str(error.value) == (f"run directory {tmp_path / 'old'}: already exists and is not "
                                f"empty (choose a new directory, or resume the run in it)")


def test_batch_larger_than_the_data_is_refused(runs_dir, tiny_data_dir):
    with pytest.raises(DigitnetError) as error:
        train_and_evaluate(tiny_config("training.batch_size=41"), layout.new_run_dir("big"),
                           str(tiny_data_dir))
    assert str(error.value) == ("training.batch_size: expected at most the 40 training images, "
                                "received 41")


def test_gpu_without_gpu_is_an_error(runs_dir, tiny_data_dir):
    with pytest.raises(DigitnetError, match="^device gpu: TensorFlow sees no GPU"):
        train_and_evaluate(tiny_config(), layout.new_run_dir("gpu"), str(tiny_data_dir),
                           device="gpu")


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    layout.write_json(target, {"good": 1})
    with pytest.raises(RuntimeError), layout.atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("crash while writing")
    assert json.loads(target.read_text()) == {"good": 1}
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]


def test_training_batches_are_model_input_from_uint8_images():
    """Each batch is float32 (B, 28, 28, 1) equal to to_model_input of the drawn images."""
    import numpy as np

    from digitnet.config import TrainingConfig
    from digitnet.data import to_model_input
    from digitnet.training.train import training_batches

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(30)  # a tag that says which image a batch row is
    labels = rng.integers(0, 10, 30).astype(np.int32)
    batches = training_batches(images, labels, TrainingConfig(batch_size=5, seed=1), 0)
    drawn = []
    for batch_images, batch_labels in batches.take(6):  # one epoch
        batch_images, batch_labels = batch_images.numpy(), batch_labels.numpy()
        assert batch_images.dtype == np.float32 and batch_images.shape == (5, 28, 28, 1)
        index = np.rint(batch_images[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(batch_images, to_model_input(images[index]))
        np.testing.assert_array_equal(batch_labels, np.eye(10)[labels[index]])
        drawn.extend(index)
    assert sorted(drawn) == list(range(30))  # an epoch draws every image once


def test_training_batches_with_outliers_and_jitter_are_the_defined_ones():
    """The default recipe's batches, bit for bit: the (seed, epoch) order, outliers drawn by
    (seed, step) with uniform targets, uint8 / 255, then each slice of jitter_rows shifted by
    the offset drawn for it; a resume at epoch 1 gives epoch 1's batches."""
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from digitnet.config import AugmentConfig, TrainingConfig
    from digitnet.data import to_model_input
    from digitnet.training.augment import jitter_rows
    from digitnet.training.train import training_batches

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 23).astype(np.int32)
    others = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    training = TrainingConfig(batch_size=5, seed=3, outliers=0.4,
                              augment=AugmentConfig(jitter_pixels=1))
    fold_in = tf.random.experimental.stateless_fold_in

    def defined(step):
        epoch, row = divmod(step, 4)  # 4 batches of 5 per epoch
        order = tf.random.experimental.stateless_shuffle(
            tf.range(23), tf.constant([3, epoch], tf.int64)).numpy()
        rows = order[row * 5: row * 5 + 5]
        seed = tf.constant([3, step], tf.int64)
        pick = tf.random.stateless_uniform([2], fold_in(seed, 1), 0, 7, tf.int32).numpy()
        padded = np.pad(to_model_input(np.concatenate([x[rows], others[pick]])),
                        ((0, 0), (1, 1), (1, 1), (0, 0)))
        offsets = tf.random.experimental.stateless_shuffle(tf.range(9), fold_in(seed, 7)).numpy()
        shifts = [divmod(offsets[index], 3) for index in jitter_rows(7, 1)]
        images = np.stack([image[top: top + 28, left: left + 28]
                           for image, (top, left) in zip(padded, shifts)])
        labels = np.concatenate([np.eye(10, dtype=np.float32)[y[rows]],
                                 np.full((2, 10), 0.1, np.float32)])
        return images, labels

    batches = training_batches(x, y, training, 0, others).take(8)
    resumed = iter(training_batches(x, y, training, 1, others).take(4))
    for step, (images, labels) in enumerate(batches):
        expected_images, expected_labels = defined(step)
        np.testing.assert_array_equal(images.numpy(), expected_images)
        np.testing.assert_array_equal(labels.numpy(), expected_labels)
        if step >= 4:
            np.testing.assert_array_equal(next(resumed)[0].numpy(), expected_images)
    unjittered = dataclasses.replace(training, augment=AugmentConfig())
    plain = next(iter(training_batches(x, y, unjittered, 0, others)))[0].numpy()
    assert not np.array_equal(plain, defined(0)[0])  # the jitter moved some rows


def test_training_batches_are_built_without_autograph(monkeypatch):
    """tf.data traces the pipeline's functions as they are: autograph's rewrite of their source
    changes no op there and took 0.7 s of every run's first epoch."""
    import numpy as np
    from tensorflow.python.autograph.impl import api

    from digitnet.config import AugmentConfig, TrainingConfig
    from digitnet.training.train import training_batches

    converted = []
    convert = api._convert_actual

    def recording(entity, program_ctx):
        converted.append(getattr(entity, "__qualname__", repr(entity)))
        return convert(entity, program_ctx)

    monkeypatch.setattr(api, "_convert_actual", recording)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    training = TrainingConfig(batch_size=4, seed=1, outliers=0.5,
                              augment=AugmentConfig(jitter_pixels=1))
    batches = training_batches(images, rng.integers(0, 10, 12), training, 0, images[:3])
    assert next(iter(batches))[0].shape == (6, 28, 28, 1)
    assert converted == []
