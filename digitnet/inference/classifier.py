"""Load a trained model for inference: images in, ten probabilities out.

`load_classifier` is the one way to load a model (the gate): modelfile.py decides which file
answers, and this module checks that it computes what digitnet needs (one 28x28x1 input, ten
probabilities summing to 1) before any data is read. A run's `model-best.tflite` (LiteRT)
answers without importing TensorFlow, in a tenth of a second; a `.keras` file without a verified
export falls back to Keras, which takes a few seconds to import. The files
`digitnet export` writes load here too: `.onnx` (onnxruntime, no TensorFlow), int8 `.tflite`
(the interpreter, quantizing the input and dequantizing the output) and SavedModel folders
(TensorFlow, through the serving signature).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitnet.backend import available_cpus, require_extra, silenced_stderr
from digitnet.config import NUM_CLASSES
from digitnet.errors import DigitnetError, first_line
from digitnet.inference.modelfile import ModelFile, resolve_model_file

LITERT_BATCH = 256  # fixed input batch for the interpreter; the last chunk is padded
IMAGE_SHAPE = (28, 28, 1)
# How far a probe image's outputs may sum from 1 (an int8 model rounds each to 1/256).
SUM_TOLERANCE = 0.05


class KerasClassifier:
    """A saved `.keras` model; importing Keras (and TensorFlow) takes a few seconds."""

    def __init__(self, path: Path):
        from digitnet.backend import import_tensorflow_quietly

        import_tensorflow_quietly()
        import keras

        try:
            self.model = keras.saving.load_model(path, compile=False)
        except Exception as error:  # Keras raises many types for a bad archive
            raise DigitnetError(f"{path}: cannot load Keras model ({type(error).__name__}: "
                                f"{first_line(error)})") from None
        self.path = path

    def io_shapes(self) -> tuple[list, list] | None:
        """The shapes of the model's inputs and outputs (batch first, None where open)."""
        try:
            return ([tuple(t.shape) for t in self.model.inputs],
                    [tuple(t.shape) for t in self.model.outputs])
        except (AttributeError, ValueError):  # a model never called: only the probe can tell
            return None

    def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        if len(images) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        return np.asarray(self.model.predict(images, batch_size=batch_size, verbose=0))


class LiteRTClassifier:
    """A LiteRT flatbuffer run by ai-edge-litert's interpreter: no TensorFlow import."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with silenced_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate" from C++
                self.interpreter = Interpreter(model_path=str(path), num_threads=available_cpus())
        except (ValueError, RuntimeError) as error:
            raise DigitnetError(f"{path}: cannot load LiteRT model ({first_line(error)})") from None
        self.path = path
        self.input_name = self.interpreter.get_input_details()[0]["name"]
        self.input, self.input_type, self.input_scale = tensor_details(
            self.interpreter.get_input_details()[0])
        self.output, _, self.output_scale = tensor_details(self.interpreter.get_output_details()[0])
        self.batch = 0

    def io_shapes(self) -> tuple[list, list]:
        """The shapes of the model's inputs and outputs (batch first, None where open)."""
        return ([tensor_shape(d) for d in self.interpreter.get_input_details()],
                [tensor_shape(d) for d in self.interpreter.get_output_details()])

    def resize(self, batch: int) -> None:
        """Set the interpreter's input batch size (reallocates only on a change)."""
        if batch != self.batch:
            self.interpreter.resize_tensor_input(self.input, (batch, 28, 28, 1))
            with silenced_stderr():
                self.interpreter.allocate_tensors()
            self.batch = batch

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if len(images) <= LITERT_BATCH:  # one image or a few: no padding work
            return self.run(images) if len(images) else np.zeros((0, NUM_CLASSES), np.float32)
        chunks = [self.run_padded(images[i: i + LITERT_BATCH])
                  for i in range(0, len(images), LITERT_BATCH)]
        return np.concatenate(chunks)

    def run_padded(self, chunk: np.ndarray) -> np.ndarray:
        """Run a chunk at the fixed batch size, padding the last one."""
        padded = np.zeros((LITERT_BATCH, 28, 28, 1), np.float32)
        padded[: len(chunk)] = chunk
        return self.run(padded)[: len(chunk)]

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.resize(len(batch))
        self.interpreter.set_tensor(self.input, quantize(batch, self.input_type, self.input_scale))
        self.interpreter.invoke()
        return dequantize(self.interpreter.get_tensor(self.output), self.output_scale)


def tensor_details(details: dict) -> tuple[int, type, tuple[float, int]]:
    """(index, dtype, (scale, zero point)) of an interpreter tensor; scale 0 when float."""
    return details["index"], details["dtype"], details["quantization"]


def quantize(images: np.ndarray, dtype: type, scale: tuple[float, int]) -> np.ndarray:
    """Float images as a quantized model's input: round(x / scale) + zero point, clipped."""
    if not scale[0]:
        return images
    limits = np.iinfo(dtype)
    quantized = np.round(images / np.float32(scale[0])) + scale[1]
    return np.clip(quantized, limits.min, limits.max).astype(dtype)


def dequantize(values: np.ndarray, scale: tuple[float, int]) -> np.ndarray:
    """A quantized model's output as float32 probabilities: (q - zero point) * scale."""
    if not scale[0]:
        return values.copy()
    return ((values.astype(np.float32) - scale[1]) * np.float32(scale[0])).astype(np.float32)


class OnnxClassifier:
    """An ONNX file run by onnxruntime: no TensorFlow import (needs the `onnx` extra)."""

    def __init__(self, path: Path):
        require_extra("onnxruntime", "onnx", f"{path}: running ONNX models")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        try:
            self.session = onnxruntime.InferenceSession(str(path), options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for a bad file
            raise DigitnetError(f"{path}: cannot load ONNX model ({first_line(error)})") from None
        self.path = path
        self.input = self.input_name = self.session.get_inputs()[0].name

    def io_shapes(self) -> tuple[list, list]:
        """The shapes of the model's inputs and outputs (batch first, None where open: ONNX
        names an open dimension, or leaves it out)."""
        def shape(arg):
            return tuple(n if isinstance(n, int) else None for n in arg.shape)

        return ([shape(arg) for arg in self.session.get_inputs()],
                [shape(arg) for arg in self.session.get_outputs()])

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        if len(images) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        images = np.ascontiguousarray(images, dtype=np.float32)
        return self.session.run(None, {self.input: images})[0]


class SavedModelClassifier:
    """A SavedModel folder called through its `serving_default` signature, as TF Serving does."""

    def __init__(self, path: Path):
        from digitnet.backend import import_tensorflow_quietly

        import_tensorflow_quietly()
        import tensorflow as tf

        try:
            self.loaded = tf.saved_model.load(str(path))  # keeps the signature's variables alive
            self.signature = self.loaded.signatures["serving_default"]
        except Exception as error:  # TensorFlow raises many types for a bad folder
            raise DigitnetError(f"{path}: cannot load SavedModel ({type(error).__name__}: "
                                f"{first_line(error)})") from None
        self.inputs = self.signature.structured_input_signature[1]  # name -> TensorSpec
        self.outputs = self.signature.structured_outputs
        self.input = self.input_name = next(iter(self.inputs), None)
        self.output = next(iter(self.outputs), None)
        self.path = path

    def io_shapes(self) -> tuple[list, list]:
        """The shapes of the signature's inputs and outputs (batch first, None where open)."""
        return ([tuple(spec.shape.as_list()) for spec in self.inputs.values()],
                [tuple(spec.shape.as_list()) for spec in self.outputs.values()])

    def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        import tensorflow as tf

        images = np.asarray(images, dtype=np.float32)
        chunks = [self.signature(**{self.input: tf.constant(images[i: i + batch_size])})
                  [self.output].numpy() for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, NUM_CLASSES), np.float32)


# The class that runs each format of modelfile.FORMATS.
CLASSIFIERS = {"keras": KerasClassifier, "litert": LiteRTClassifier, "onnx": OnnxClassifier,
               "saved-model": SavedModelClassifier}


def tensor_shape(details: dict) -> tuple:
    """An interpreter tensor's shape, batch first; -1 (an open dimension) becomes None."""
    shape = details.get("shape_signature")
    shape = details["shape"] if shape is None or len(shape) == 0 else shape
    return tuple(None if n < 0 else int(n) for n in shape)


def load_classifier(model: str | Path | ModelFile | None, backend: str = "auto"):
    """The classifier for a model, through the model-file gate, checked to classify digits.

    Args:
      model: a run directory, a .keras, .tflite (float or int8) or .onnx file, a SavedModel
        folder, None for runs/latest, or a ModelFile from `modelfile.resolve_model_file`.
      backend: "auto" (a .keras file's verified LiteRT export when there is one, else Keras),
        "keras" or "litert"; it only matters for a .keras file.

    Returns:
      An object whose `predict(images)` maps float32 (N, 28, 28, 1) images in [0, 1] to (N, 10)
      probabilities; `path` is the file that answers and `model_file` the gate's ModelFile.

    Raises:
      DigitnetError: one line naming the file: missing, corrupt, or not a digit classifier.
    """
    model_file = resolve_model_file(model, backend)
    classifier = CLASSIFIERS[model_file.format](model_file.path)
    check_classifier(classifier, model_file.path)
    classifier.model_file = model_file
    return classifier


def check_classifier(classifier, path: Path) -> None:
    """Refuse a model that does not map one 28x28x1 image to ten probabilities summing to 1.

    Checks the declared shapes first (for a message naming them), then one probe image.
    """
    shapes = classifier.io_shapes()
    if shapes is not None:  # None: a Keras model never called, whose probe alone can tell
        inputs, outputs = shapes
        if len(inputs) != 1 or tuple(inputs[0][1:]) != IMAGE_SHAPE:
            raise DigitnetError(f"{path}: expected a model taking one input of 28x28x1 images, "
                                f"received {shapes_text(inputs, 'input')}")
        if len(outputs) != 1 or tuple(outputs[0][1:]) != (NUM_CLASSES,):
            raise DigitnetError(f"{path}: expected a model giving one output of 10 digit "
                                f"probabilities, received {shapes_text(outputs, 'output')}")
    try:
        probabilities = np.asarray(classifier.predict(probe_image()), dtype=np.float64)
    except Exception as error:  # shapes or types the signature did not show; runtimes raise
        # their own types (onnxruntime's InvalidArgument derives from Exception alone)
        raise DigitnetError(f"{path}: cannot classify a 28x28x1 image ({first_line(error)})") \
            from None
    if probabilities.shape != (1, NUM_CLASSES):
        raise DigitnetError(f"{path}: expected 10 digit probabilities per image, received "
                            f"shape {probabilities.shape}")
    total = float(probabilities.sum())
    if not (np.all(np.isfinite(probabilities)) and probabilities.min() >= -SUM_TOLERANCE
            and abs(total - 1) <= SUM_TOLERANCE):
        raise DigitnetError(f"{path}: expected 10 probabilities summing to 1 (a softmax "
                            f"output), received outputs summing to {total:.2f} from "
                            f"{probabilities.min():.2f} to {probabilities.max():.2f}")


def probe_image() -> np.ndarray:
    """One (1, 28, 28, 1) image in [0, 1]: a bright bar on a dark page, like a digit."""
    image = np.zeros((1, *IMAGE_SHAPE), np.float32)
    image[0, 6:22, 12:16] = 1.0
    return image


def shapes_text(shapes: list, noun: str) -> str:
    """'input (N, 32, 32, 1)', 'no input' or '2 inputs: (N, 28, 28, 1), (N, 28, 28, 1)'."""
    texts = ["(" + ", ".join("N" if i == 0 else "?" if n is None else str(n)
                             for i, n in enumerate(shape)) + ")" for shape in shapes]
    if len(texts) == 1:
        return f"{noun} {texts[0]}"
    return f"{len(texts)} {noun}s: {', '.join(texts)}" if texts else f"no {noun}"
