"""Build the Keras model from the config: pure, no compile, fit or I/O."""

from __future__ import annotations

import keras

from digitnet import config as cfg

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
