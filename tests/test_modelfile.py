"""The model-file gate: the file named is the file used (or its verified export), a corrupt or
foreign model is refused at load with one line, and outputs name the file that answered."""

import contextlib
import io
import json
import os
import shutil
import struct
import zipfile

import pytest
from click.testing import CliRunner

from digitnet.cli import cli
from digitnet.inference.classifier import LiteRTClassifier, load_classifier
from tests.conftest import synthetic_digits


def run(*args):
    return CliRunner().invoke(cli, list(args))


def json_line(output: str) -> dict:
    [line] = [line for line in output.splitlines() if line.startswith("{")]
    return json.loads(line)


def save_and_export(model, folder, name: str):
    """`model` as FOLDER/NAME.keras and, apart (no .tflite beside the .keras), as
    FOLDER/litert/NAME.tflite."""
    model.save(folder / f"{name}.keras")
    (folder / "litert").mkdir(exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras' own export: any input shape
        model.export(str(folder / "litert" / f"{name}.tflite"), format="litert", verbose=False)


@pytest.fixture(scope="module")
def foreign_models(tmp_path_factory):
    """Models that load but are not digit classifiers, each as .keras and as .tflite; and a
    uniform digit classifier (every probability 0.1: always answers 0)."""
    import keras

    folder = tmp_path_factory.mktemp("foreign")

    def dense(units, activation):  # zero weights: outputs depend on the bias alone
        return keras.layers.Dense(units, activation=activation, kernel_initializer="zeros",
                                  bias_initializer=keras.initializers.Constant(0.5))

    def sequential(shape, *layers):
        return keras.Sequential([keras.Input(shape), *layers])

    first, second = keras.Input((28, 28, 1)), keras.Input((28, 28, 1))
    joined = keras.layers.Flatten()(keras.layers.Concatenate()([first, second]))
    models = {
        "input-32": sequential((32, 32, 1), keras.layers.Flatten(), dense(10, "softmax")),
        "flat-784": sequential((784,), dense(10, "softmax")),
        "two-inputs": keras.Model([first, second], dense(10, "softmax")(joined)),
        "five-outputs": sequential((28, 28, 1), keras.layers.Flatten(), dense(5, "softmax")),
        "no-softmax": sequential((28, 28, 1), keras.layers.Flatten(), dense(10, None)),
        "uniform": sequential((28, 28, 1), keras.layers.Flatten(), dense(10, "softmax")),
    }
    for name, model in models.items():
        save_and_export(model, folder, name)
    return folder


FOREIGN = {
    "input-32": "expected a model taking one input of 28x28x1 images, received input "
                "(N, 32, 32, 1)",
    "flat-784": "expected a model taking one input of 28x28x1 images, received input (N, 784)",
    "two-inputs": "expected a model taking one input of 28x28x1 images, received 2 inputs: "
                  "(N, 28, 28, 1), (N, 28, 28, 1)",
    "five-outputs": "expected a model giving one output of 10 digit probabilities, received "
                    "output (N, 5)",
    "no-softmax": "expected 10 probabilities summing to 1 (a softmax output), received outputs "
                  "summing to 5.00 from 0.50 to 0.50",
}


@pytest.mark.parametrize("suffix", [".keras", ".tflite"])
@pytest.mark.parametrize("name", FOREIGN)
def test_foreign_models_are_refused_at_load(foreign_models, tiny_data_dir, tmp_path, name,
                                            suffix):
    model = foreign_models / (f"{name}.keras" if suffix == ".keras" else f"litert/{name}.tflite")
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(synthetic_digits(1, 0)[0][0]).save(image)
    for args in (["predict", str(image), "--model", str(model)],
                 ["evaluate", str(model), "--data-dir", str(tiny_data_dir)]):
        result = run(*args)
        assert (result.exit_code, result.output) == (1, f"Error: {model}: {FOREIGN[name]}\n")


@pytest.mark.parametrize("name", FOREIGN)
def test_export_takes_a_model_through_the_gate(foreign_models, tiny_data_dir, tmp_path, name):
    model = foreign_models / f"{name}.keras"
    output = tmp_path / "out" / "model.tflite"
    result = run("export", str(model), "--format", "litert", "--output", str(output),
                 "--data-dir", str(tiny_data_dir))
    assert (result.exit_code, result.output) == (1, f"Error: {model}: {FOREIGN[name]}\n")
    assert not output.exists()


def test_a_replaced_keras_file_answers_itself_not_its_stale_export(run_copy, foreign_models,
                                                                    tiny_data_dir):
    keras_file, export = run_copy / "model-best.keras", run_copy / "model-best.tflite"
    shutil.copy(foreign_models / "uniform.keras", keras_file)
    result = run("evaluate", str(keras_file), "--json", "--data-dir", str(tiny_data_dir))
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"Warning: {export}: not used (exported from another "
                             f"model-best.keras (its sha256 differs from model-best.tflite.json));"
                             f" answering with {keras_file}\n")
    report = json_line(result.stdout)
    assert report["model"] == str(keras_file)
    assert report["accuracy"] == 0.1  # every answer 0: the 2 zeros of the 20 test images
    from digitnet.inference.modelfile import resolve_model_file

    model = resolve_model_file(run_copy)  # the run directory itself answers the same way
    assert (model.path, model.format) == (keras_file, "keras")
    assert report["model_sha256"] == model.sha256 == model.keras_sha256


def test_a_replaced_keras_file_does_not_show_the_old_models_test_accuracy(
        run_copy, foreign_models, tiny_data_dir):
    from digitnet.inference.modelfile import resolve_model_file
    from digitnet.runs.listing import REPLACED_NOTE
    from digitnet.serving.model import describe

    listed = json.loads(run("runs", str(run_copy.parent), "--json").output)
    assert [(r["status"], r["note"]) for r in listed] == [("finished", None)]
    assert listed[0]["test_accuracy"] == describe(resolve_model_file(run_copy))["test_accuracy"]
    assert isinstance(listed[0]["test_accuracy"], float)
    shutil.copy(foreign_models / "uniform.keras", run_copy / "model-best.keras")

    listed = json.loads(run("runs", str(run_copy.parent), "--json").output)
    assert [(r["status"], r["test_accuracy"], r["note"]) for r in listed] == [
        ("finished", None, REPLACED_NOTE)]
    assert run("runs", str(run_copy.parent)).output.endswith(f"run: {REPLACED_NOTE}\n")
    assert describe(resolve_model_file(run_copy))["test_accuracy"] is None
    result = run("report", str(run_copy), "--data-dir", str(tiny_data_dir))
    assert result.exit_code == 0, result.output
    page = (run_copy / "report.html").read_text()
    assert f"{REPLACED_NOTE}; the numbers above are of the model there now." in page
    assert "10.00%" in page  # the test accuracy shown is the uniform model's: every answer 0


def test_a_verified_export_answers_and_outputs_name_it(tiny_run, tiny_data_dir):
    result = run("evaluate", str(tiny_run / "model-best.keras"), "--json", "--data-dir",
                 str(tiny_data_dir))
    assert result.exit_code == 0, result.output
    report = json_line(result.stdout)
    from digitnet.inference.modelfile import resolve_model_file

    model = resolve_model_file(tiny_run)
    assert report["model"] == str(tiny_run / "model-best.tflite") == str(model.path)
    assert (report["model_sha256"], report["keras_sha256"]) == (model.sha256, model.keras_sha256)
    assert isinstance(load_classifier(tiny_run), LiteRTClassifier)
    record = json.loads((tiny_run / "model-best.tflite.json").read_text())
    assert record == {"format": "litert", "sha256": model.sha256,
                      "source": {"file": "model-best.keras", "sha256": model.keras_sha256}}


def test_a_run_named_through_a_link_is_the_run_it_points_at(tiny_run, tiny_data_dir, tmp_path):
    """runs/latest named on the command line answers as the run itself, as with no argument:
    evaluate's --json names the run's own files, not the link's (which moves with every run)."""
    latest = tmp_path / "latest"
    latest.symlink_to(tiny_run, target_is_directory=True)
    result = run("evaluate", str(latest), "--json", "--data-dir", str(tiny_data_dir))
    assert result.exit_code == 0, result.output
    assert json_line(result.stdout)["model"] == str(tiny_run.resolve() / "model-best.tflite")


@pytest.mark.parametrize("record", [
    {"format": "litert", "source": "model-best.keras", "sha256": "x"},  # no .keras sha256
    {"format": "litert", "source": {"file": "model-best.keras"}, "sha256": "x"},
])
def test_a_record_without_the_keras_sha256_says_so(run_copy, caplog, record):
    from digitnet.inference.modelfile import resolve_model_file

    (run_copy / "model-best.tflite.json").write_text(json.dumps(record))
    with caplog.at_level("WARNING", logger="digitnet.inference.modelfile"):
        assert resolve_model_file(run_copy).format == "keras"
    assert caplog.messages == [
        f"{run_copy / 'model-best.tflite'}: not used (model-best.tflite.json does not record the "
        f"sha256 of the .keras file it was exported from (an older digitnet wrote it)); "
        f"answering with {run_copy / 'model-best.keras'}"]


def test_an_edited_export_is_not_used(run_copy):
    from digitnet.inference.modelfile import resolve_model_file

    export = run_copy / "model-best.tflite"
    with open(export, "ab") as handle:
        handle.write(b"\0")
    model = resolve_model_file(run_copy)
    assert model.format == "keras"
    (run_copy / "model-best.tflite.json").unlink()
    assert resolve_model_file(run_copy).format == "keras"


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (os.urandom(3000), "not a .keras zip archive"),
    ("truncated", "not a .keras zip archive"),
    ("weights damaged", "model.weights.h5 in the .keras archive fails its CRC check"),
    ("weights replaced", "model.weights.h5 in the .keras archive is not HDF5"),
    ("weights in an unknown compression", "not a .keras zip archive"),
])
def test_a_corrupt_best_model_is_refused_and_its_run_broken(run_copy, tiny_data_dir, content,
                                                            problem):
    keras_file = run_copy / "model-best.keras"
    if isinstance(content, str):
        content = damaged_archive(keras_file.read_bytes(), content)
    keras_file.write_bytes(content)
    for args in (["evaluate", str(run_copy), "--data-dir", str(tiny_data_dir)],
                 ["evaluate", str(keras_file), "--data-dir", str(tiny_data_dir)],
                 ["export", str(run_copy), "--format", "litert", "--output",
                  str(run_copy / "again.tflite"), "--data-dir", str(tiny_data_dir)]):
        result = run(*args)
        assert (result.exit_code, result.output) == (
            1, f"Error: {keras_file}: cannot load Keras model ({problem})\n")
    listed = json.loads(run("runs", str(run_copy.parent), "--json").output)
    assert [(r["status"], r["problem"]) for r in listed] == [
        ("broken", f"model-best.keras corrupt ({problem})")]


def damaged_archive(archive: bytes, how: str) -> bytes:
    """A .keras archive cut short, with bytes inside its weights flipped (its zip directory
    intact, as a disk's damage leaves it: only the CRC check sees it), or rewritten with other
    bytes as its weights."""
    if how == "truncated":
        return archive[:5000]
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        members = {info.filename: (info, source.read(info)) for info in source.infolist()}
    info, weights = members["model.weights.h5"]
    if how == "weights damaged":
        name_length, extra_length = struct.unpack_from("<HH", archive, info.header_offset + 26)
        middle = info.header_offset + 30 + name_length + extra_length + info.compress_size // 2
        damaged = bytearray(archive)
        damaged[middle:middle + 16] = bytes(b ^ 0xFF for b in damaged[middle:middle + 16])
        return bytes(damaged)
    if how == "weights in an unknown compression":  # method 97 (AES): zipfile cannot read it
        changed = bytearray(archive)
        struct.pack_into("<H", changed, info.header_offset + 8, 97)
        central = archive.index(b"PK\x01\x02")  # the central directory's first entry
        while not archive[central + 46:].startswith(b"model.weights.h5"):
            central = archive.index(b"PK\x01\x02", central + 4)
        struct.pack_into("<H", changed, central + 10, 97)
        return bytes(changed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for name, (_, data) in members.items():
            target.writestr(name, os.urandom(len(data)) if name == "model.weights.h5" else data)
    return buffer.getvalue()
