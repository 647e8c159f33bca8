"""Every export of the default model against Keras on the 10,000 MNIST test images, and each run
the way its users would: the SavedModel by TensorFlow alone through its serving signature (as TF
Serving does), the ONNX file by onnxruntime alone, each in a fresh process."""

import json
import subprocess
import sys

import numpy as np
import pytest

from digitnet.export import FORMAT_NAMES, pipeline
from digitnet.export.verify import INT8_MAX_ACCURACY_DROP, INT8_MAX_SIZE_SHARE, PARITY, tied
from digitnet.inference.classifier import load_classifier

pytestmark = pytest.mark.mnist

FLOAT_FORMATS = ("saved-model", "onnx", "litert")


@pytest.fixture(scope="session")
def mnist_test_set(mnist_dir):
    from digitnet.data import load_mnist, to_model_input

    mnist = load_mnist(str(mnist_dir))
    return to_model_input(mnist.x_test), mnist.y_test.astype(np.int64)


@pytest.fixture(scope="session")
def keras_probabilities(default_mnist_run, mnist_test_set):
    from digitnet.inference.classifier import KerasClassifier

    return KerasClassifier(default_mnist_run / "model-best.keras").predict(mnist_test_set[0])


@pytest.fixture(scope="session")
def mnist_exports(default_mnist_run, mnist_dir, tmp_path_factory):
    """Each format of the default model, exported (and so verified) once, outside the run."""
    folder = tmp_path_factory.mktemp("mnist-exports")
    names = {"saved-model": "savedmodel", "onnx": "model.onnx", "litert": "model.tflite",
             "litert-int8": "model-int8.tflite"}
    return {fmt: pipeline.export_model(default_mnist_run, fmt, folder / names[fmt],
                                       str(mnist_dir)) for fmt in FORMAT_NAMES}


def assert_matches_keras(probabilities, keras_probabilities):
    """The float-export promise: within PARITY, the same digit but on a near-tie."""
    assert probabilities.shape == (10000, 10)
    assert np.abs(probabilities - keras_probabilities).max() <= PARITY
    differ = probabilities.argmax(1) != keras_probabilities.argmax(1)
    assert not (differ & ~tied(keras_probabilities)).any()


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_float_export_matches_keras_on_the_whole_test_set(mnist_exports, mnist_test_set,
                                                          keras_probabilities, fmt):
    exported = load_classifier(mnist_exports[fmt].path).predict(mnist_test_set[0])
    assert_matches_keras(exported, keras_probabilities)


def test_int8_export_keeps_accuracy_in_under_a_third_of_the_size(mnist_exports, mnist_test_set,
                                                                 keras_probabilities):
    images, labels = mnist_test_set
    int8 = load_classifier(mnist_exports["litert-int8"].path).predict(images)
    drop = np.mean(keras_probabilities.argmax(1) == labels) - np.mean(int8.argmax(1) == labels)
    assert drop <= INT8_MAX_ACCURACY_DROP + 1e-9
    size = mnist_exports["litert-int8"].path.stat().st_size
    assert size <= INT8_MAX_SIZE_SHARE * mnist_exports["litert"].path.stat().st_size
    assert mnist_exports["litert-int8"].card["test_accuracy"] == np.mean(int8.argmax(1) == labels)


def run_alone(code: str, tmp_path, images) -> np.ndarray:
    """Run `code` in a fresh interpreter with images.npy beside it; it writes out.npy."""
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3",
                                            "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    return np.load(tmp_path / "out.npy")


def test_saved_model_serves_through_its_signature_with_tensorflow_alone(
        mnist_exports, mnist_test_set, keras_probabilities, tmp_path):
    folder = mnist_exports["saved-model"].path
    code = ("import sys, numpy as np, tensorflow as tf\n"
            f"serve = tf.saved_model.load({str(folder)!r}).signatures['serving_default']\n"
            "images = tf.constant(np.load('images.npy'))\n"
            "np.save('out.npy', serve(images=images)['output_0'].numpy())\n"
            "assert not [m for m in sys.modules if m.startswith('digitnet')]\n")
    assert_matches_keras(run_alone(code, tmp_path, mnist_test_set[0]), keras_probabilities)


def test_onnx_runs_with_onnxruntime_alone(mnist_exports, mnist_test_set, keras_probabilities,
                                          tmp_path):
    path = mnist_exports["onnx"].path
    code = ("import sys, numpy as np, onnxruntime as ort\n"
            f"session = ort.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider'])\n"
            "name = session.get_inputs()[0].name\n"
            "np.save('out.npy', session.run(None, {name: np.load('images.npy')})[0])\n"
            "assert not {'tensorflow', 'keras'} & set(sys.modules)\n"
            "assert not [m for m in sys.modules if m.startswith('digitnet')]\n")
    assert_matches_keras(run_alone(code, tmp_path, mnist_test_set[0]), keras_probabilities)


def test_cards_give_the_test_accuracy_and_the_sources_hash(mnist_exports, default_mnist_run):
    from digitnet.runs.layout import file_sha256

    source = file_sha256(default_mnist_run / "model-best.keras")
    for fmt, exported in mnist_exports.items():
        card = json.loads(exported.card_path.read_text())
        assert card["format"] == fmt and card["source"]["sha256"] == source
        assert card["verification"]["test_images"] == 10000
        assert card["test_accuracy"] >= 0.98
