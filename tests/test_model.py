"""The model builder: shapes and pinned parameter counts."""

import numpy as np

from digitnet.config import load_config
from digitnet.training.model import build_model
from tests.conftest import REPO


def test_lesson_model_has_the_lessons_layers_and_parameters():
    model = build_model(load_config().model)
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten", "Dense", "Dense"]
    assert model.count_params() == 784 * 256 + 256 + 256 * 10 + 10  # 203,530


def test_outputs_are_ten_probabilities_that_sum_to_one():
    model = build_model(load_config().model)
    probabilities = np.asarray(model(np.random.default_rng(0).random((4, 28, 28, 1))))
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_cnn_config_builds():
    model = build_model(load_config(REPO / "configs/cnn.yaml").model)
    assert model.output_shape == (None, 10)
    assert model.count_params() == 225034


def test_a_model_checked_once_is_not_built_again(monkeypatch):
    """The CLI checks the model before it makes the run directory and training checks it
    again: the second check is free."""
    from digitnet.training import model as model_module

    built = []
    monkeypatch.setattr(model_module, "CHECKED", set())
    monkeypatch.setattr(model_module, "build_model",
                        lambda config: built.append(config) or build_model(config))
    config = load_config().model
    model_module.check_model(config, 64)
    model_module.check_model(config, 64)
    model_module.check_model(config, 128)  # another batch size is another memory check
    assert len(built) == 2
