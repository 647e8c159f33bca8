"""Config: defaults, files that hold only what they change, strict overrides."""

import dataclasses

import pytest

from digitnet.config import (
    MAX_EPOCHS,
    AugmentConfig,
    Config,
    ConfigError,
    Conv2D,
    DataConfig,
    Dense,
    Dropout,
    Flatten,
    ModelConfig,
    TrainingConfig,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from tests.conftest import REPO


def test_defaults_are_the_lesson_model_with_the_fast_recipe():
    config = load_config()
    assert [layer.type for layer in config.model.layers] == ["flatten", "dense", "dense"]
    assert config.model.layers[1] == Dense(256, "relu")
    assert config.training.batch_size == 192 and config.training.label_smoothing == 0.1


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config().training.epochs = 3


@pytest.mark.parametrize("name", ["default", "lesson", "cnn", "cnn-one-epoch"])
def test_shipped_configs_load_and_take_their_file_name(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config.name == name


def test_lesson_config_is_the_lesson_as_taught():
    training = load_config(REPO / "configs/lesson.yaml").training
    assert (training.optimizer, training.learning_rate, training.batch_size) == ("adam", 1e-3, 32)
    assert training.schedule == "constant" and training.label_smoothing == 0.0


def test_cnn_config_has_convolutions():
    layers = load_config(REPO / "configs/cnn.yaml").model.layers
    assert any(isinstance(layer, Conv2D) for layer in layers)


def test_file_holds_only_what_it_changes(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("training:\n  epochs: 2\n")
    config = load_config(path)
    assert config.training.epochs == 2
    assert config.training.batch_size == Config().training.batch_size
    assert config.name == "short"


def test_overrides_then_shortcuts_win_in_that_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  epochs: 2\n  seed: 4\n")
    config = load_config(path, ("training.epochs=3", "training.learning_rate=1e-3"),
                         {"training.epochs": 7, "training.seed": None})
    assert config.training.epochs == 7
    assert config.training.seed == 4
    assert config.training.learning_rate == 0.001


def test_override_indexes_into_the_layer_list():
    config = load_config(None, ("model.layers.1.units=512",))
    assert config.model.layers[1] == Dense(512, "relu")


def test_saved_config_round_trips():
    import yaml

    config = load_config(REPO / "configs/cnn.yaml", ("training.epochs=1",))
    assert from_dict(yaml.safe_load(save_config(config))) == config


@pytest.mark.parametrize("overrides, message", [
    (("training.epoch=3",), "training.epoch: unknown key (expected one of epochs, batch_size, "
                            "optimizer, learning_rate, schedule, warmup_epochs, weight_decay, "
                            "label_smoothing, seed, jit_compile, steps_per_execution, "
                            "early_stopping_patience, augment, outliers, backend)"),
    (("trainin.epochs=3",), "trainin: unknown key"),
    (("training.epochs=three",), "training.epochs: expected an integer, received 'three'"),
    (("training.epochs=0",), "training.epochs: expected an integer in 1..1000000, received 0"),
    (("training.epochs=2.5",), "training.epochs: expected an integer, received 2.5"),
    (("training.jit_compile=1",), "training.jit_compile: expected true or false, received 1"),
    (("training.learning_rate=fast",),
     "training.learning_rate: expected a number, received 'fast'"),
    (("training.optimizer=adagrad",),
     "training.optimizer: expected one of ('adam', 'adamw', 'sgd', 'rmsprop'), received 'adagrad'"),
    (("training.label_smoothing=1",),
     "training.label_smoothing: expected a number in [0, 1), received 1.0"),
    (("training.augment.jitter_pixels=5",),
     "training.augment.jitter_pixels: expected an integer in 0..4, received 5"),
    (("training.augment.jitter_pixels=0.5",),
     "training.augment.jitter_pixels: expected an integer, received 0.5"),
    (("training.augment.lines=1.5",),
     "training.augment.lines: expected a probability in [0, 1], received 1.5"),
    (("training.augment.lines=often",),
     "training.augment.lines: expected a number, received 'often'"),
    (("training.augment.pipeline=1.5",),
     "training.augment.pipeline: expected a probability in [0, 1], received 1.5"),
    (("data.validation_size=60000",),
     "data.validation_size: expected an integer in 1..59999, received 60000"),
    (("model.layers.7.units=3",), "model.layers.7: expected a list index in 0..2, received '7'"),
    (("model.layers.1.units=0",), "model.layers.1.units: expected an integer >= 1, received 0"),
    (("model.layers.2.units=9",),
     "model.layers: expected a last layer {type: dense, units: 10, activation: softmax}, "
     "received {'type': 'dense', 'units': 9, 'activation': 'softmax'}"),
    (("epochs",), "override 'epochs': expected section.key=value"),
    (("name=",), "name: expected a non-empty one-line label, received ''"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert str(error.value) == message


def test_unknown_layer_type_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  layers:\n    - {type: lstm, units: 3}\n")
    with pytest.raises(ConfigError, match=r"^model\.layers\.0\.type: expected one of \('flatten'"):
        load_config(path)


def test_layer_with_unknown_field_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  layers:\n    - {type: dense, unit: 3}\n")
    with pytest.raises(ConfigError, match=r"^model\.layers\.0\.unit: unknown key"):
        load_config(path)


@pytest.mark.parametrize("text, message", [
    ("training: [1, 2\n", "invalid YAML at line 2"),
    ("- 1\n- 2\n", "expected a YAML mapping of sections, received [1, 2]"),
])
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: {message}"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_to_dict_names_each_layer_type_first():
    layers = to_dict(Config())["model"]["layers"]
    assert layers[1] == {"type": "dense", "units": 256, "activation": "relu"}


@pytest.mark.parametrize("make, message", [
    (lambda: TrainingConfig(epochs=0),
     f"training.epochs: expected an integer in 1..{MAX_EPOCHS}, received 0"),
    (lambda: dataclasses.replace(TrainingConfig(), learning_rate=0.0),
     "training.learning_rate: expected a number in (0, 10), received 0.0"),
    (lambda: AugmentConfig(thickness=2.0),
     "training.augment.thickness: expected a probability in [0, 1], received 2.0"),
    (lambda: AugmentConfig(lines=-0.1),
     "training.augment.lines: expected a probability in [0, 1], received -0.1"),
    (lambda: AugmentConfig(pipeline=-0.5),
     "training.augment.pipeline: expected a probability in [0, 1], received -0.5"),
    (lambda: DataConfig(validation_size=0),
     "data.validation_size: expected an integer in 1..59999, received 0"),
    (lambda: Dense(units=0), "dense.units: expected an integer >= 1, received 0"),
    (lambda: Dropout(rate=1.0), "dropout.rate: expected a number in [0, 1), received 1.0"),
    (lambda: ModelConfig(layers=(Flatten(),)),
     "model.layers: expected a last layer {type: dense, units: 10, activation: softmax}, "
     "received {'type': 'flatten'}"),
    (lambda: Config(name=" "), "name: expected a non-empty one-line label, received ' '"),
])
def test_configs_check_themselves_when_made(make, message):
    with pytest.raises(ConfigError) as error:
        make()
    assert str(error.value) == message
