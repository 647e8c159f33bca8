"""Build the Keras model from the config: pure, no compile, fit or I/O."""

from __future__ import annotations

import math
import os

import keras

from digitnet import config as cfg
from digitnet.errors import first_line

INPUT_SHAPE = (28, 28, 1)  # MNIST: one grey channel, values in [0, 1]


def build_layer(layer: cfg.Layer) -> keras.layers.Layer:
    """One Keras layer for one config layer."""
    if isinstance(layer, cfg.Flatten):
        return keras.layers.Flatten()
    if isinstance(layer, cfg.Dense):
        return keras.layers.Dense(layer.units, activation=layer.activation)
    if isinstance(layer, cfg.Conv2D):
        return keras.layers.Conv2D(layer.filters, layer.kernel_size, activation=layer.activation,
                                   padding=layer.padding)
    if isinstance(layer, cfg.MaxPool):
        return keras.layers.MaxPooling2D(layer.pool_size)
    if isinstance(layer, cfg.Dropout):
        return keras.layers.Dropout(layer.rate)
    if isinstance(layer, cfg.BatchNorm):
        return keras.layers.BatchNormalization()
    raise TypeError(f"unknown layer config {layer!r}")


def build_model(model_config: cfg.ModelConfig) -> keras.Sequential:
    """The classifier: 28x28x1 images in, ten digit probabilities out.

    Args:
      model_config: the layers, top to bottom; the last is Dense 10 softmax.

    Returns:
      An uncompiled `keras.Sequential`.
    """
    layers = [build_layer(layer) for layer in model_config.layers]
    return keras.Sequential([keras.Input(INPUT_SHAPE), *layers], name="digitnet")


# ---- checks before anything is written ---------------------------------------------------------

BYTES_PER_PARAMETER = 16  # float32 weights, their gradients and the optimizer's two moments
BYTES_PER_ACTIVATION = 8  # float32 outputs of each layer and their gradients, per image


def machine_memory() -> int:
    """Bytes of memory this machine has."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parameter_count(layer: cfg.Layer, shape: tuple) -> int:
    """Trainable and running weights of `layer` on input `shape` (no batch axis)."""
    if isinstance(layer, cfg.Dense):
        return (shape[-1] + 1) * layer.units
    if isinstance(layer, cfg.Conv2D):
        return (layer.kernel_size ** 2 * shape[-1] + 1) * layer.filters
    if isinstance(layer, cfg.BatchNorm):
        return 4 * shape[-1]
    return 0


CHECKED: set[tuple[str, int]] = set()  # (model config, batch size) checked in this process


def check_model(model_config: cfg.ModelConfig, batch_size: int) -> None:
    """Check that the model builds and fits in memory, before any file of a run is written.

    Each layer's output shape comes from Keras' own shape inference on a one-image input, and
    its memory from its parameter count and output size, before any weight is allocated; then
    the model is built.

    Raises:
      ConfigError: naming the layer that cannot take its input or that takes the model past
        this machine's memory, or saying why the model's output is not ten probabilities.
    """
    checked = (repr(model_config), batch_size)
    if checked in CHECKED:  # the CLI checks before it makes the run directory, training again
        return
    shape = (1, *INPUT_SHAPE)
    parameters = activations = 0
    for index, layer in enumerate(model_config.layers):
        key = f"model.layers.{index} ({layer.type})"
        check_input(layer, shape[1:], key)
        try:
            out = tuple(build_layer(layer).compute_output_shape(shape))
        except Exception as error:  # Keras raises ValueError, TypeError... for a bad shape
            raise cfg.ConfigError(f"{key}: cannot take input of shape {shape[1:]} "
                                  f"({first_line(error, 120)})") from None
        if any(side is not None and side < 1 for side in out):
            raise cfg.ConfigError(f"{key}: its output of shape {out[1:]} is empty")
        parameters += parameter_count(layer, shape[1:])
        activations += math.prod(out[1:])
        check_memory(key, parameters, activations * batch_size)
        shape = out
    if shape[1:] != (cfg.NUM_CLASSES,):
        hint = "" if any(isinstance(layer, cfg.Flatten) for layer in model_config.layers) else \
            " (add {type: flatten} before the first dense layer)"
        raise cfg.ConfigError(f"model.layers: the model outputs shape {shape[1:]} for each image, "
                              f"expected ({cfg.NUM_CLASSES},){hint}")
    try:
        build_model(model_config)
    except Exception as error:
        raise cfg.ConfigError(f"model.layers: cannot build the model ({first_line(error)})") \
            from None
    CHECKED.add(checked)


def check_input(layer: cfg.Layer, shape: tuple, key: str) -> None:
    """Say in the config's words why a convolution or pooling layer cannot take `shape`."""
    window = {cfg.Conv2D: "kernel_size", cfg.MaxPool: "pool_size"}.get(type(layer))
    if window is None:
        return
    if len(shape) != 3:
        raise cfg.ConfigError(f"{key}: needs an image of shape (height, width, channels), "
                              f"receives shape {shape} (it cannot follow flatten or dense)")
    side = getattr(layer, window)
    if getattr(layer, "padding", "valid") == "valid" and min(shape[:2]) < side:
        raise cfg.ConfigError(f"{key}: its input of shape {shape} is smaller than its "
                              f"{window} {side}")


def check_memory(key: str, parameters: int, activations: int) -> None:
    """Refuse a model whose training would need more memory than the machine has."""
    needed = parameters * BYTES_PER_PARAMETER + activations * BYTES_PER_ACTIVATION
    available = machine_memory()
    if needed > available:
        raise cfg.ConfigError(
            f"{key}: the model needs about {needed / 2**30:,.1f} GiB to train ({parameters:,} "
            f"parameters, {activations:,} layer outputs per batch), more than this machine's "
            f"{available / 2**30:,.1f} GiB")
