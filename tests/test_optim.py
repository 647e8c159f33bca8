"""The optimizer: the fused Adam kernel follows Keras' Adam, and saved models stay plain Keras."""

import json
import zipfile

import keras
import numpy as np
import pytest

from digitnet.config import TrainingConfig
from digitnet.training.optim import fuse_adam, make_optimizer


def train_steps(optimizer, steps: int = 20) -> list[np.ndarray]:
    """Weights of a small seeded MLP after `steps` updates with `optimizer` on fixed batches."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = rng.normal(size=(6, 12)).astype("float32")
        y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=6)]
        model.train_on_batch(x, y)
    return model.get_weights()


@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.Adam(1e-2),
    lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.05),
    lambda: keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=15, warmup_target=1e-2, warmup_steps=5)),
])
def test_fused_adam_takes_the_same_steps_as_keras_adam(make):
    keras_weights = train_steps(make())
    fused_weights = train_steps(fuse_adam(make()))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(train_steps(make(), 0), keras_weights))
    assert moved > 0.05  # the steps did change the weights
    for fused, plain in zip(fused_weights, keras_weights):
        np.testing.assert_allclose(fused, plain, atol=1e-6)


def test_adam_config_builds_a_fused_adam():
    optimizer = make_optimizer(TrainingConfig(), epoch_steps=10)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert "update_step" in vars(optimizer)  # bound on the instance, not a subclass


def test_saved_model_holds_plain_keras_adam(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=make_optimizer(TrainingConfig(), epoch_steps=10),
                  loss="categorical_crossentropy")
    model.train_on_batch(np.ones((2, 4), "float32"), np.eye(2, dtype="float32"))
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        saved = json.loads(archive.read("config.json"))["compile_config"]["optimizer"]
    assert (saved["module"], saved["class_name"]) == ("keras.optimizers", "Adam")
    assert type(keras.saving.load_model(tmp_path / "m.keras").optimizer) is keras.optimizers.Adam
