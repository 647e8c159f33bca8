"""LiteRT with full-integer post-training quantization: int8 weights, activations, input and
output; about a quarter of the float file, for microcontrollers and integer-only accelerators.

The input is quantized with scale 1/255 and zero point -128 (a uint8 pixel minus 128), the
output with scale 1/256 and zero point -128; both are in the file (and in the card).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from digitnet.backend import silenced_stderr
from digitnet.export import input_signature

FORMAT = "litert-int8"
SUFFIX = "-int8.tflite"
LIBRARIES = ("tensorflow", "ai-edge-litert")
NEEDS = ()  # nothing beyond the base install


def write(model, path: Path, representative: np.ndarray) -> None:
    """Write `model` quantized to int8 at `path`, calibrated on `representative` images.

    Args:
      model: a built Keras model taking (N, 28, 28, 1) float32 images.
      path: the .tflite file to write.
      representative: float32 (N, 28, 28, 1) training images that set the activation ranges.
    """
    import tensorflow as tf

    def samples():
        for image in representative:
            yield [image[None]]

    # the converter chats on stdout, and its C++ quantizer on stderr
    with contextlib.redirect_stdout(io.StringIO()), silenced_stderr():
        model.export(str(path), format="litert", verbose=False, input_signature=input_signature(),
                     optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=samples,
                     target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                     inference_input_type=tf.int8, inference_output_type=tf.int8)
