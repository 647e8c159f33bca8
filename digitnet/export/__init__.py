"""Exporting a trained model to other runtimes, each export checked against the Keras model.

One module per format, each with the same small interface:

  FORMAT             the name `digitnet export --format` takes
  SUFFIX             the default file name's ending after the model's stem ("" for a folder)
  LIBRARIES          the packages whose versions the export's card records
  NEEDS              modules of an optional extra it needs (checked before any work)
  write(model, path, representative)
                     write the export of a Keras model at `path` (representative: training
                     images, for formats that quantize)

`pipeline` exports, verifies (`verify`) and writes the card (`card`); only a verified export
is moved into place.
"""

# The --format names, in the order the CLI lists them (pipeline.FORMATS maps each to its module;
# named here so that `digitnet export --help` imports nothing).
FORMAT_NAMES = ("saved-model", "onnx", "litert", "litert-int8")
# Every export's input is called this; otherwise Keras names it after the model's InputLayer,
# which is input_layer_1 rather than input_layer when another model was loaded first.
INPUT_NAME = "images"


def input_signature() -> list:
    """The exports' input: float32 images (N, 28, 28, 1), named INPUT_NAME."""
    import tensorflow as tf

    return [tf.TensorSpec((None, 28, 28, 1), tf.float32, name=INPUT_NAME)]
