"""`digitnet predict` through the CLI: tables, JSON, many inputs, unknowns and bad files."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image, ImageDraw

from digitnet.cli import cli


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def digit_png(path, ink=0, paper=255):
    """A hand-drawn-looking 7 on paper."""
    image = Image.new("L", (120, 120), paper)
    ImageDraw.Draw(image).line([(25, 25), (95, 25), (50, 100)], fill=ink, width=9)
    image.save(path)
    return path


def json_lines(output):
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_predict_one_image_prints_digit_probability_and_top_k(tiny_run, tmp_path):
    """The row holds the model's own answer for the preprocessed image, and its top two."""
    from digitnet.images.preprocess import preprocess_file
    from digitnet.inference.classifier import load_classifier

    image = digit_png(tmp_path / "seven.png")
    result = run("predict", str(image), "--model", str(tiny_run), "--top-k", "2",
                 "--min-confidence", "0", "--max-entropy", "2.31")
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header == f"Model: {tiny_run / 'model-best.tflite'}"  # the file that answered
    probabilities = load_classifier(tiny_run).predict(preprocess_file(image)[None, ..., None])[0]
    first, second = np.argsort(-probabilities, kind="stable")[:2]
    shown = {d: round(float(probabilities[d]), 6) for d in (first, second)}
    assert row == (f"{image}  {first:>7}  {shown[first]:.3f}  "
                   f"[{first}:{shown[first]:.3f}  {second}:{shown[second]:.3f}]")


def draw(path, points=(), ellipse=None):
    """A digit drawn with a 9-px pen on white paper, as a user would."""
    image = Image.new("L", (120, 120), 255)
    pen = ImageDraw.Draw(image)
    if ellipse:
        pen.ellipse(ellipse, outline=0, width=9)
    else:
        pen.line(points, fill=0, width=9)
    image.save(path)
    return path


def test_a_trained_model_reads_drawn_digits(default_mnist_run, tmp_path):
    """The default model on full MNIST names the digit drawn, not just some digit."""
    drawn = {0: dict(ellipse=(30, 15, 90, 105)), 1: dict(points=[(60, 15), (60, 105)]),
             2: dict(points=[(30, 35), (50, 18), (80, 22), (88, 45), (30, 100), (95, 100)]),
             4: dict(points=[(70, 105), (70, 15), (25, 75), (95, 75)]),
             7: dict(points=[(25, 25), (95, 25), (50, 100)])}
    for digit, strokes in drawn.items():
        draw(tmp_path / f"{digit}.png", **strokes)
    result = run("predict", str(tmp_path), "--model", str(default_mnist_run), "--json")
    assert result.exit_code == 0, result.output
    answers = {Path(line["file"]).stem: line["digit"] for line in json_lines(result.output)}
    assert answers == {str(digit): digit for digit in drawn}


def test_json_has_the_documented_keys(tiny_run, tmp_path):
    image = digit_png(tmp_path / "seven.png")
    result = run("predict", str(image), "--model", str(tiny_run), "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    [line] = json_lines(result.output)
    assert set(line) == {"file", "digit", "probability", "top_k", "model"}
    assert line["model"] == str(tiny_run / "model-best.tflite")
    assert len(line["top_k"]) == 3
    assert line["top_k"][0]["probability"] >= line["top_k"][1]["probability"]
    assert line["probability"] == line["top_k"][0]["probability"]


def test_bad_files_get_one_line_errors_and_the_rest_is_predicted(tiny_run, tmp_path):
    good = digit_png(tmp_path / "good.png")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(digit_png(tmp_path / "whole.png").read_bytes()[:60])
    missing = tmp_path / "missing.png"
    result = run("predict", str(missing), str(tmp_path / "notes.png"), str(good),
                 str(tmp_path / "empty.png"), str(truncated), "--model", str(tiny_run))
    assert result.exit_code == 1
    assert f"Error: {missing}: file not found\n" in result.output
    assert f"Error: {tmp_path / 'notes.png'}: not an image file" in result.output
    assert f"Error: {tmp_path / 'empty.png'}: file is empty (0 bytes)\n" in result.output
    assert f"Error: {truncated}: truncated or corrupt image" in result.output
    assert f"{good} " in result.output
    assert "Traceback" not in result.output
    assert result.output.count("\n") == 6  # the model, then one line per file


def test_damaged_and_extreme_files_print_nothing_but_their_lines(tiny_run, tmp_path):
    """A TIFF cut after its header made Pillow warn (two lines on stderr above the error), a
    float TIFF spanning float32's range made numpy warn (six lines), and a PNG 1,049,000 pixels
    long made OpenCV's libpng complain (two lines): each file now gets its one line."""
    buffer = io.BytesIO()
    Image.new("L", (10, 10)).save(buffer, format="TIFF")
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(buffer.getvalue()[:40])
    extreme = tmp_path / "extreme.tif"
    values = np.full((100, 100), 3e38, np.float32)
    values[20:80, 45:55] = -3e38
    Image.fromarray(values, "F").save(extreme)
    long = tmp_path / "long.png"
    Image.new("L", (1_049_000, 1), 255).save(long)
    result = subprocess.run([sys.executable, "-m", "digitnet", "predict", str(damaged),
                             str(extreme), str(long), "--model", str(tiny_run)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: {damaged}: not an image file (cannot identify image format)",
        f"Error: {long}: image is 1049000x1 pixels, a side above the limit of 30000"]
    assert [row.split()[0] for row in result.stdout.splitlines()[1:]] == [str(extreme)]


def test_a_path_given_twice_keeps_each_answer_in_its_place(tiny_run, tmp_path):
    """A file read once and refused once (replaced between the two) in one batch: answers were
    matched by path, and the refusal got the other reading's answer."""
    from digitnet.errors import DigitnetError
    from digitnet.images.batch import Preprocessed
    from digitnet.images.preprocess import preprocess_file
    from digitnet.inference.classifier import load_classifier
    from digitnet.inference.predict import predict_batch

    path = str(digit_png(tmp_path / "d.png"))
    items = [Preprocessed(path, error=DigitnetError(f"{path}: file is empty (0 bytes)")),
             Preprocessed(path, image=preprocess_file(path))]
    first, second = predict_batch(load_classifier(tiny_run), items, 3, 0.0, None)
    assert (first.error, first.digit) == (f"{path}: file is empty (0 bytes)", None)
    assert second.error is None and second.digit is not None


def test_paths_no_file_can_have_are_named_not_tracebacks(tiny_run, tmp_path):
    """An empty path said ": file not found"; a name too long for the file system and a NUL
    byte in a path read from stdin were tracebacks (OSError, ValueError)."""
    good = digit_png(tmp_path / "good.png")
    long = tmp_path / ("a" * 300 + ".png")
    result = run("predict", "", str(long), "-", "--model", str(tiny_run),
                 input=f"nul\0.png\n{good}\n")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[1:4] == ["Error: '': file not found",
                          f"Error: {long}: cannot be read (File name too long)",
                          "Error: nul\\x00.png: cannot be read (a path cannot hold a NUL byte)"]
    assert lines[4].startswith(f"{good} ") and len(lines) == 5


def test_json_reports_errors_in_the_stream(tiny_run, tmp_path):
    good = digit_png(tmp_path / "good.png")
    result = run("predict", str(tmp_path / "nope.png"), str(good), "--model", str(tiny_run),
                 "--json")
    assert result.exit_code == 1
    first, second = json_lines(result.output)
    assert first == {"file": str(tmp_path / "nope.png"),
                     "error": f"{tmp_path / 'nope.png'}: file not found",
                     "model": str(tiny_run / "model-best.tflite")}
    assert second["file"] == str(good)


def test_folders_recursively_and_paths_from_stdin(tiny_run, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    digit_png(tmp_path / "a" / "one.png")
    digit_png(tmp_path / "a" / "b" / "two.jpg")
    (tmp_path / "a" / "b" / "readme.txt").write_text("skipped: not an image extension")
    stdin_image = digit_png(tmp_path / "three.png")
    result = run("predict", str(tmp_path / "a"), "-", "--model", str(tiny_run), "--json",
                 input=f"{stdin_image}\n\n")
    assert result.exit_code == 0, result.output
    files = [line["file"] for line in json_lines(result.output)]
    assert files == [str(tmp_path / "a" / "one.png"), str(tmp_path / "a" / "b" / "two.jpg"),
                     str(stdin_image)]


def test_below_min_confidence_is_unknown_with_probabilities(tiny_run, tmp_path):
    image = digit_png(tmp_path / "seven.png")
    result = run("predict", str(image), "--model", str(tiny_run), "--json",
                 "--min-confidence", "1")
    [line] = json_lines(result.output)
    assert line["digit"] == "unknown"
    assert len(line["top_k"]) == 3 and line["probability"] > 0


def test_entropy_is_in_nats():
    from digitnet.inference.predict import entropy

    rows = np.zeros((4, 10), np.float32)
    rows[0, 3] = 1.0  # one digit has it all
    rows[1] = 0.1  # all ten equal
    rows[2, :2] = 0.5  # a tie of two
    rows[3] = 0.105  # an int8 model's rounding: summing to 1.05, still all ten equal
    np.testing.assert_allclose(entropy(rows), [0.0, np.log(10), np.log(2), np.log(10)],
                               rtol=1e-6)
    assert entropy(rows).max() < 2.31  # so --max-entropy 2.31 never refuses


def test_unknown_below_min_confidence_or_above_max_entropy():
    from digitnet.inference import DEFAULT_MAX_ENTROPY, DEFAULT_MIN_CONFIDENCE
    from digitnet.inference.predict import unknown

    tie = np.zeros((1, 10))
    tie[0, :2] = 0.5  # top 0.5, entropy ln 2 = 0.693
    assert unknown(tie, 0.5, 0.7).tolist() == [False]
    assert unknown(tie, 0.51, 0.7).tolist() == [True]  # the top probability decides
    assert unknown(tie, 0.5, 0.69).tolist() == [True]  # the entropy decides
    spread = np.full((1, 10), 0.4 / 9)
    spread[0, 0] = 0.6  # top 0.6 but the rest spread over nine digits: entropy 1.55 nats
    assert unknown(spread, DEFAULT_MIN_CONFIDENCE).tolist() == [True]
    assert unknown(spread, DEFAULT_MIN_CONFIDENCE, 1.6).tolist() == [False]
    assert (DEFAULT_MIN_CONFIDENCE, DEFAULT_MAX_ENTROPY) == (0.4, 1.3)
    assert unknown(np.zeros((0, 10)), 0.5).shape == (0,)


def test_max_entropy_decides_unknown_as_documented(tiny_run, tmp_path):
    """The image's own entropy, just above or just below --max-entropy, with the top probability
    allowed (--min-confidence 0): a digit, then unknown with the same probabilities."""
    from digitnet.images.preprocess import preprocess_file
    from digitnet.inference.classifier import load_classifier
    from digitnet.inference.predict import entropy

    image = digit_png(tmp_path / "seven.png")
    probabilities = load_classifier(tiny_run).predict(preprocess_file(image)[None, ..., None])
    nats = float(entropy(probabilities)[0])
    assert nats > 0.01
    answers = {}
    for limit in (nats + 0.01, nats - 0.01):
        result = run("predict", str(image), "--model", str(tiny_run), "--json",
                     "--min-confidence", "0", "--max-entropy", f"{limit:.6f}")
        [answers[limit]] = json_lines(result.output)
    above, below = answers.values()
    assert above["digit"] == int(probabilities.argmax())
    assert below["digit"] == "unknown"
    assert below["top_k"] == above["top_k"] and below["probability"] == above["probability"]


def test_blank_page_is_unknown_whatever_the_threshold(tiny_run, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (100, 100), 255).save(blank)
    result = run("predict", str(blank), "--model", str(tiny_run), "--min-confidence", "0")
    assert result.exit_code == 0
    assert result.output.splitlines()[1].split()[1] == "unknown"  # under the Model: line


def test_save_preprocessed_writes_28x28_inputs(tiny_run, tmp_path):
    image = digit_png(tmp_path / "seven.png", ink=255, paper=0)
    out = tmp_path / "seen"
    result = run("predict", str(image), "--model", str(tiny_run), "--save-preprocessed",
                 str(out))
    assert result.exit_code == 0, result.output
    with Image.open(out / "seven.png") as saved:
        assert saved.size == (28, 28) and saved.mode == "L"


def test_predict_without_a_run(runs_dir, tmp_path):
    image = digit_png(tmp_path / "seven.png")
    result = run("predict", str(image))
    assert result.exit_code == 1
    assert result.output == (f"Error: no run found at {runs_dir / 'latest'} (train one with "
                             f"`digitnet train`, or pass a run directory or a .keras file)\n")


def test_predict_needs_an_image():
    result = run("predict")
    assert result.exit_code == 2
    assert result.output == "Error: Missing argument 'IMAGES...'. Try 'digitnet predict --help'.\n"


def test_no_images_found_is_an_error(tiny_run, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("predict", str(tmp_path / "empty"), "--model", str(tiny_run))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no images found in {tmp_path / 'empty'} (expected")
    result = run("predict", "-", "--model", str(tiny_run), input="")
    assert result.exit_code == 1 and "Error: no images found in -" in result.output


def test_pool_workers_ignore_a_digitnet_module_in_the_current_folder(tiny_run, tmp_path):
    import subprocess
    import sys

    for index in range(70):  # enough work that the process pool takes over
        Image.open(digit_png(tmp_path / f"d{index:02d}.png")).resize((1500, 1500)).save(
            tmp_path / f"d{index:02d}.png")
    (tmp_path / "digitnet.py").write_text("raise SystemExit('imported the wrong digitnet')\n")
    console_script = Path(sys.executable).parent / "digitnet"  # not `python -m`: that adds cwd
    result = subprocess.run([str(console_script), "predict", str(tmp_path),
                             "--model", str(tiny_run), "--json"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-500:]
    assert len(json_lines(result.stdout)) == 70
    assert "wrong digitnet" not in result.stderr


def test_the_worker_pool_leaves_later_scripts_their_own_folder(tmp_path, monkeypatch):
    """The fork server starts with PYTHONSAFEPATH (above); the process keeps its environment,
    so a script it starts later still imports the modules beside it."""
    import os
    import subprocess
    import sys

    from digitnet.images import batch

    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    workers = 7  # a pool of its own, started here whatever other tests started before
    assert workers not in batch._pools
    try:
        assert batch.worker_pool(workers).submit(abs, -2).result(timeout=60) == 2
    finally:
        batch._pools.pop(workers).shutdown()
    assert "PYTHONSAFEPATH" not in os.environ
    (tmp_path / "beside.py").write_text("ANSWER = 42\n")
    (tmp_path / "script.py").write_text("import beside\nprint(beside.ANSWER)\n")
    result = subprocess.run([sys.executable, str(tmp_path / "script.py")], capture_output=True,
                            text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout == "42\n"
