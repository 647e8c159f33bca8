"""`digitnet export` on a tiny run: each format kept with its card, read back by predict and
evaluate, nothing kept when the check fails, one-line errors. (Full-MNIST parity and the
fresh-process runtimes are in test_export_mnist.py.)"""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from digitnet.cli import cli
from digitnet.errors import DigitnetError
from digitnet.export import FORMAT_NAMES, onnx, pipeline, verify
from digitnet.export.card import card_path, tree_sha256
from digitnet.inference.classifier import KerasClassifier, load_classifier
from digitnet.runs.layout import file_sha256
from tests.conftest import synthetic_digits

EXPORTED_NAMES = {"saved-model": "model-best-savedmodel", "onnx": "model-best.onnx",
                  "litert": "model-best.tflite", "litert-int8": "model-best-int8.tflite"}
FLOAT_FORMATS = ("saved-model", "onnx", "litert")


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="session")
def export_run(tmp_path_factory, tiny_run):
    """A copy of the tiny run (others read tiny_run) with all four exports in it."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(tiny_run, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def exports(export_run, tiny_data_dir):
    """Each format exported once from export_run: {format: Exported}."""
    return {fmt: pipeline.export_model(export_run, fmt, data_dir=str(tiny_data_dir))
            for fmt in FORMAT_NAMES}


def test_every_format_has_its_module():
    assert tuple(pipeline.FORMATS) == FORMAT_NAMES


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_export_is_kept_beside_the_model_with_its_card(exports, export_run, fmt):
    exported = exports[fmt]
    assert exported.path == export_run / EXPORTED_NAMES[fmt]
    card = json.loads(card_path(exported.path).read_text())
    assert card == exported.card
    assert card["format"] == fmt and card["file"] == exported.path.name
    assert card["sha256"] == tree_sha256(exported.path)
    assert card["source"] == {"file": "model-best.keras",
                              "sha256": file_sha256(export_run / "model-best.keras")}
    assert card["input"]["shape"] == ["N", 28, 28, 1] and card["input"]["range"] == [0.0, 1.0]
    assert "images" in card["input"]["name"]  # whatever models the process loaded before
    assert "preprocess" in card["input"]["from_a_photo"]
    assert card["output"]["shape"] == ["N", 10]
    assert card["verification"]["test_images"] == 20
    assert card["test_accuracy"] == card["verification"]["keras_test_accuracy"]
    assert card["versions"]["digitnet"] and card["versions"]["tensorflow"]
    assert not [p for p in export_run.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_litert_export_into_the_run_keeps_answering_for_it(exports, export_run):
    """Its card is the model-file gate's record too (model-best.tflite.json): the gate still
    lets the new export answer for model-best.keras."""
    from digitnet.inference.modelfile import resolve_model_file

    model = resolve_model_file(export_run)
    assert model.format == "litert" and model.path == exports["litert"].path
    assert model.sha256 == exports["litert"].card["sha256"]
    assert model.keras_sha256 == exports["litert"].card["source"]["sha256"]


def test_saved_model_card_hashes_every_file(exports):
    folder = exports["saved-model"].path
    listing = subprocess.run("find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum",
                             shell=True, cwd=folder, capture_output=True, text=True, check=True)
    assert exports["saved-model"].card["sha256"] == hashlib.sha256(
        listing.stdout.encode()).hexdigest()


def test_int8_card_gives_the_quantization(exports):
    card = exports["litert-int8"].card
    assert card["input"]["dtype"] == "int8" and card["output"]["dtype"] == "int8"
    assert card["input"]["quantized"]["scale"] == pytest.approx(1 / 255)
    assert card["output"]["quantized"]["scale"] == pytest.approx(1 / 256)
    assert card["verification"]["size_share_of_float"] <= verify.INT8_MAX_SIZE_SHARE


def synthetic_pngs(folder, count=12):
    folder.mkdir()
    for i, image in enumerate(synthetic_digits(count, 9)[0]):
        Image.fromarray(image).resize((56, 56)).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_predict_answers_the_same_from_every_export(exports, export_run, tmp_path, fmt):
    from digitnet.inference.predict import predict

    images = synthetic_pngs(tmp_path / "images")
    expected = list(predict([str(images)], export_run, top_k=10, min_confidence=0,
                            max_entropy=float("inf")))
    found = list(predict([str(images)], exports[fmt].path, top_k=10, min_confidence=0,
                         max_entropy=float("inf")))
    tolerance = verify.PARITY if fmt in FLOAT_FORMATS else 0.02  # int8 steps are 1/256
    for mine, theirs in zip(found, expected):
        assert mine.file == theirs.file
        assert mine.digit == theirs.digit
        mine_p = {t["digit"]: t["probability"] for t in mine.top_k}
        assert all(abs(mine_p[t["digit"]] - t["probability"]) <= tolerance + 1e-6
                   for t in theirs.top_k)


@pytest.mark.parametrize("fmt", ["onnx", "litert-int8"])
def test_predict_runs_onnx_and_int8_without_tensorflow(exports, tmp_path, fmt):
    images = synthetic_pngs(tmp_path / "images", 3)
    code = ("import sys\nfrom digitnet.cli import main\n"
            f"sys.argv = ['digitnet', 'predict', {str(images)!r}, '--model', "
            f"{str(exports[fmt].path)!r}, '--json']\n"
            "try:\n    main()\nexcept SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == [
        str(images / f"{i:02d}.png") for i in range(3)]


# (--format litert rewrites the run's own model-best.tflite, whose evaluation is the run's)
@pytest.mark.parametrize("fmt", ["saved-model", "onnx", "litert-int8"])
def test_evaluate_scores_an_export_without_replacing_the_runs_evaluation(
        exports, export_run, tiny_data_dir, fmt):
    before = sorted(p.name for p in export_run.iterdir())
    result = run("evaluate", str(exports[fmt].path), "--data-dir", str(tiny_data_dir), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["model"] == str(exports[fmt].path) and report["examples"] == 20
    assert report["accuracy"] == exports[fmt].card["test_accuracy"]
    assert "saved_to" not in report
    assert sorted(p.name for p in export_run.iterdir()) == before  # no evaluation-test.json


def test_cli_export_to_output_path(tiny_run, tiny_data_dir, tmp_path):
    target = tmp_path / "deploy" / "digits.tflite"
    result = run("export", str(tiny_run), "--format", "litert", "--output", str(target),
                 "--data-dir", str(tiny_data_dir))
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "deploy" / "digits.tflite.json").read_text())
    assert result.output == (
        f"Exported {target} ({target.stat().st_size:,} bytes): test accuracy "
        f"{card['test_accuracy']:.4f} on 20 images (max |difference| from Keras "
        f"{card['verification']['max_abs_difference']:.1e})\n"
        f"Card: {target}.json\n")
    assert sorted(p.name for p in target.parent.iterdir()) == ["digits.tflite",
                                                               "digits.tflite.json"]


def perturbed_write(real_write):
    """A format's write() that exports a slightly different model: the check must catch it."""
    def write(model, path, representative):
        dense = model.layers[-1]
        kernel, bias = dense.get_weights()
        dense.set_weights([kernel, bias + np.linspace(0, 3, 10, dtype=np.float32)])
        try:
            real_write(model, path, representative)
        finally:
            dense.set_weights([kernel, bias])
    return write


def assert_only(folder, names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_failed_float_check_keeps_nothing(tiny_run, tiny_data_dir, tmp_path, monkeypatch):
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    target.write_bytes(b"the previous good export")
    monkeypatch.setattr(onnx, "write", perturbed_write(onnx.write))
    result = run("export", str(tiny_run), "--format", "onnx", "--output", str(target),
                 "--data-dir", str(tiny_data_dir))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {target}: not kept, it differs from "
                                    f"model-best.keras: max |probability difference| ")
    assert result.output.count("\n") == 1
    assert target.read_bytes() == b"the previous good export"
    assert_only(target.parent, ["model.onnx"])


def test_failed_int8_check_keeps_nothing(tiny_run, tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "INT8_MAX_SIZE_SHARE", 0.01)
    target = tmp_path / "small.tflite"
    with pytest.raises(DigitnetError, match=(
            rf"^{target}: not kept, it differs from model-best.keras: \d+ bytes, \d+% of the "
            r"float LiteRT file's \d+ \(at most 1%\)$")):
        pipeline.export_model(tiny_run, "litert-int8", target, str(tiny_data_dir))
    assert_only(tmp_path, [])


def test_int8_accuracy_check_names_both_accuracies():
    labels = np.arange(1000) % 10
    reference = np.eye(10, dtype=np.float32)[labels]
    worse = reference.copy()
    worse[:3] = np.roll(worse[:3], 1, axis=1)  # 3 of 1000 wrong: 0.3 points
    with pytest.raises(verify.VerificationError, match=(
            r"^test accuracy 0.9970, 0.30 points below the float model's 1.0000 \(at most "
            r"0.2\)$")):
        verify.check_int8(reference, worse, labels, 100, 1000)
    worse[2] = reference[2]  # 2 of 1000 wrong: at the limit, kept
    assert verify.check_int8(reference, worse, labels, 300, 1000)["accuracy_drop"] == (
        pytest.approx(0.002))


def test_float_check_allows_a_near_tie_only():
    reference = np.array([[0.5, 0.5 - 8e-6] + [0] * 8, [0.9, 0.1] + [0] * 8], np.float32)
    swapped = reference.copy()
    swapped[0, :2] = [0.5 - 8e-6, 0.5]  # the near-tie flips: allowed
    assert verify.check_float(reference, swapped)["digits_differ_on_near_ties"] == 1
    flipped = reference.copy()
    flipped[1, :2] = [0.1, 0.9]
    with pytest.raises(verify.VerificationError, match=r"^max \|probability difference\| 0.8 > "
                                                       r"1e-05 \(test image 1\)$"):
        verify.check_float(reference, flipped)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--format", "tflite"], 2, "Error: Invalid value for '--format': 'tflite' is not one of "
                                "'saved-model', 'onnx', 'litert', 'litert-int8'. Try "
                                "'digitnet export --help'.\n"),
    ([], 2, "Error: Missing option '--format'. Choose from: saved-model, onnx, litert, "
            "litert-int8. Try 'digitnet export --help'.\n"),
    (["--format", "onnx", "--output", "model.tflite"], 1,
     "Error: --output model.tflite: expected a file name ending in .onnx for the onnx format\n"),
    (["--format", "litert-int8", "--output", "model.onnx"], 1,
     "Error: --output model.onnx: expected a file name ending in .tflite for the "
     "litert-int8 format\n"),
    (["--format", "litert-int8", "--output", "model-best.tflite"], 1,
     "Error: --output model-best.tflite: predict and evaluate take this file for "
     "model-best.keras's float LiteRT twin; choose another name\n"),
    (["--format", "saved-model", "--output", "config.yaml"], 1,
     "Error: --output config.yaml: is a file; a SavedModel is a folder\n"),
    (["--format", "saved-model", "--output", "checkpoints"], 1,
     "Error: --output checkpoints: a folder that is not empty and holds no SavedModel (choose a "
     "new folder)\n"),
])
def test_bad_flags_are_one_line_errors(tiny_run, monkeypatch, args, code, message):
    monkeypatch.chdir(tiny_run)
    result = run("export", str(tiny_run), *args)
    assert result.exit_code == code
    assert result.output.startswith(message), result.output
    assert result.output.count("\n") == 1, result.output


def test_export_of_a_non_keras_model_is_refused(tiny_run):
    result = run("export", str(tiny_run / "model-best.tflite"), "--format", "onnx")
    assert result.exit_code == 1
    assert result.output == (f"Error: {tiny_run / 'model-best.tflite'}: export needs a run "
                             f"directory or a .keras model file\n")


def test_missing_onnx_extra_names_the_pip_install(tiny_run, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tf2onnx", "onnxruntime")
                        else real(name, *a))
    result = run("export", str(tiny_run), "--format", "onnx", "--output",
                 str(tmp_path / "m.onnx"))
    assert result.output == ("Error: exporting ONNX needs tf2onnx, which is not installed: "
                             "pip install 'digitnet[onnx]'\n")
    assert_only(tmp_path, [])
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(DigitnetError, match=(
            rf"^{tmp_path / 'm.onnx'}: running ONNX models needs onnxruntime, which is not "
            r"installed: pip install 'digitnet\[onnx\]'$")):
        load_classifier(tmp_path / "m.onnx")


def test_corrupt_and_foreign_onnx_files_are_one_line_errors(tmp_path):
    import onnx as onnx_lib
    from onnx import TensorProto, helper

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(DigitnetError, match=f"^{bad}: cannot load ONNX model \\(.+\\)$"):
        load_classifier(bad)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32, 32, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32, 32, 3])])
    foreign = tmp_path / "foreign.onnx"
    onnx_lib.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), foreign)
    with pytest.raises(DigitnetError, match=(
            rf"^{foreign}: expected a model taking one input of 28x28x1 images, received "
            r"input \(N, 32, 32, 3\)$")):
        load_classifier(foreign)


def test_a_saved_model_taking_two_inputs_is_a_one_line_error(tmp_path):
    import tensorflow as tf

    class TwoInputs(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32),
                                      tf.TensorSpec([None, 28, 28, 1], tf.float32)])
        def serve(self, first, second):
            return {"probabilities": tf.nn.softmax(tf.reshape(first + second, (-1, 784)))}

    module = TwoInputs()
    folder = tmp_path / "two-inputs"
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    with pytest.raises(DigitnetError, match=(
            rf"^{folder}: expected a model taking one input of 28x28x1 images, received 2 "
            r"inputs: \(N, 28, 28, 1\), \(N, 28, 28, 1\)$")):
        load_classifier(folder)


def test_an_onnx_model_taking_doubles_is_a_one_line_error(tmp_path):
    """Right shapes, wrong type: onnxruntime's own error type is refused in one line too."""
    import onnx as onnx_lib
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]),
         helper.make_node("Slice", ["flat", "start", "end", "axes"], ["ten"]),
         helper.make_node("Softmax", ["ten"], ["y"])], "doubles",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["n", 28, 28, 1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n", 10])],
        [helper.make_tensor("start", TensorProto.INT64, [1], [0]),
         helper.make_tensor("end", TensorProto.INT64, [1], [10]),
         helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    doubles = tmp_path / "doubles.onnx"
    onnx_lib.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), doubles)
    with pytest.raises(DigitnetError, match=f"^{doubles}: cannot classify a 28x28x1 image "
                                            r"\(.+\)$"):
        load_classifier(doubles)


def test_int8_litert_quantizes_input_and_output(exports, export_run):
    images = (synthetic_digits(40, 7)[0].astype(np.float32) / 255)[..., None]
    int8 = load_classifier(exports["litert-int8"].path).predict(images)
    keras = KerasClassifier(export_run / "model-best.keras").predict(images)
    assert int8.dtype == np.float32 and int8.shape == (40, 10)
    np.testing.assert_allclose(int8.sum(axis=1), 1, atol=0.05)
    assert (int8.argmax(1) == keras.argmax(1)).all()
