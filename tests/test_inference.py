"""Inference back ends: LiteRT without TensorFlow, Keras as the fallback, the same answers."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from digitnet.errors import DigitnetError
from digitnet.inference.classifier import KerasClassifier, LiteRTClassifier, load_classifier
from tests.conftest import synthetic_digits


def test_training_exports_litert_beside_the_best_model(tiny_run):
    assert (tiny_run / "model-best.tflite").stat().st_size > 0


def test_auto_prefers_litert_and_falls_back_to_keras(tiny_run, tmp_path):
    assert isinstance(load_classifier(tiny_run / "model-best.keras"), LiteRTClassifier)
    shutil.copy(tiny_run / "model-best.keras", tmp_path / "alone.keras")
    assert isinstance(load_classifier(tmp_path / "alone.keras"), KerasClassifier)


@pytest.mark.parametrize("count", [1, 7, 300, 513])
def test_litert_and_keras_agree_for_any_batch_size(tiny_run, count):
    images = (synthetic_digits(count, 5)[0].astype(np.float32) / 255)[..., None]
    keras_out = KerasClassifier(tiny_run / "model-best.keras").predict(images)
    litert_out = LiteRTClassifier(tiny_run / "model-best.tflite").predict(images)
    assert litert_out.shape == (count, 10)
    np.testing.assert_allclose(litert_out, keras_out, atol=1e-5)


def test_litert_path_does_not_import_tensorflow(tiny_run):
    code = ("import sys, numpy as np\nfrom digitnet.inference.classifier import load_classifier\n"
            f"c = load_classifier({str(tiny_run / 'model-best.keras')!r})\n"
            "c.predict(np.zeros((2, 28, 28, 1), np.float32))\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_corrupt_litert_file_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(DigitnetError, match=f"^{bad}: cannot load LiteRT model"):
        load_classifier(bad)
