"""Hostile inputs (issue 11): each refused with one exact `Error:` line, no traceback, no hang,
nothing left behind; each test names its row of the issue."""

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from digitnet.cli import cli
from digitnet.data import DataError, load_mnist
from digitnet.inference import DEFAULT_MIN_CONFIDENCE
from tests.conftest import TINY_OVERRIDES, idx_bytes, synthetic_digits, write_idx_dir
from tests.test_predict import digit_png

DIGITNET = [sys.executable, "-m", "digitnet"]


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def assert_one_error(result, message, code=1):
    """Exactly `Error: message` on one line, with exit status `code`."""
    assert (result.exit_code, result.output) == (code, f"Error: {message}\n")


def assert_no_run_left(runs_dir):
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def set_args(*overrides):
    return [part for text in overrides for part in ("--set", text)]


# ---- row 2: YAML aliases, and long values cut in messages ---------------------------------------


def billion_laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + f"\nname: *a{levels - 1}\n"


@pytest.mark.parametrize("levels", [6, 9])
def test_row2_yaml_aliases_are_refused_before_they_expand(runs_dir, tmp_path, levels):
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs(levels))
    result = run("train", "--config", str(path))
    assert_one_error(result, f"{path}: YAML aliases (*name) are not supported; write the value "
                             f"out at line 2")
    assert_no_run_left(runs_dir)


def test_row2_an_alias_in_set_is_refused(runs_dir):
    result = run("train", "--set", "training.epochs=[&a [1, 1], *a]")
    assert_one_error(result, "training.epochs: YAML aliases (*name) are not supported; write "
                             "the value out")


def test_row2_long_received_values_are_cut(runs_dir):
    result = run("train", "--set", "training.optimizer=" + "x" * 10_000)
    assert_one_error(result, "training.optimizer: expected one of ('adam', 'adamw', 'sgd', "
                             "'rmsprop'), received '" + "x" * 79 + "... (10002 characters)")
    result = run("train", "--set", f"training.seed={list(range(5000))}")
    assert_one_error(result, "training.seed: expected an integer, received [0, 1, 2, 3, 4, 5, 6, "
                             "7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 2... "
                             "(28890 characters)")


# ---- row 5: configs that validate but could not build or train ----------------------------------

LAST = "{type: dense, units: 10, activation: softmax}"


@pytest.mark.parametrize("layers, message", [
    (f"[{{type: flatten}}, {{type: conv2d}}, {{type: flatten}}, {LAST}]",
     "model.layers.1 (conv2d): needs an image of shape (height, width, channels), receives "
     "shape (784,) (it cannot follow flatten or dense)"),
    (f"[{{type: dense, units: 8}}, {LAST}]",
     "model.layers: the model outputs shape (28, 28, 10) for each image, expected (10,) (add "
     "{type: flatten} before the first dense layer)"),
    ("[" + "{type: max_pool}, " * 5 + f"{{type: flatten}}, {LAST}]",
     "model.layers.4 (max_pool): its input of shape (1, 1, 1) is smaller than its pool_size 2"),
    (f"[{{type: conv2d, kernel_size: 28}}, {{type: conv2d, kernel_size: 3}}, {{type: flatten}}, "
     f"{LAST}]",
     "model.layers.1 (conv2d): its input of shape (1, 1, 32) is smaller than its kernel_size 3"),
])
def test_row5_models_that_cannot_be_built_are_refused_naming_the_layer(runs_dir, tiny_data_dir,
                                                                        layers, message):
    result = run("train", "--data-dir", str(tiny_data_dir), "--set", f"model.layers={layers}",
                 "--run-dir", "r")
    assert_one_error(result, message)
    assert not os.path.exists("r")
    assert_no_run_left(runs_dir)


def test_row5_a_model_larger_than_memory_is_refused(runs_dir, tiny_data_dir, monkeypatch):
    monkeypatch.setattr("digitnet.training.model.machine_memory", lambda: 24 * 2**30)
    result = run("train", "--data-dir", str(tiny_data_dir), *set_args(*TINY_OVERRIDES),
                 "--set", "model.layers.1.units=100000000")
    assert_one_error(result, "model.layers.1 (dense): the model needs about 1,173.5 GiB to train "
                             "(78,500,000,000 parameters, 500,003,920 layer outputs per batch), "
                             "more than this machine's 24.0 GiB")
    assert_no_run_left(runs_dir)


@pytest.mark.parametrize("args, message, code", [
    (set_args("training.epochs=100000000000000000000000000"),
     "training.epochs: expected an integer in 1..1000000, received "
     "100000000000000000000000000", 1),
    (set_args("training.seed=100000000000000000000"),
     "training.seed: expected an integer in 0..4294967295, received 100000000000000000000", 1),
    (["--seed", "99999999999999"], "Invalid value for '--seed': 99999999999999 is not in the "
     "range 0<=x<=4294967295. Try 'digitnet train --help'.", 2),
    (["--epochs", "1000001"], "Invalid value for '--epochs': 1000001 is not in the range "
     "1<=x<=1000000. Try 'digitnet train --help'.", 2),
    (set_args("training.epochs.x=1"),
     "training.epochs: expected a mapping of keys to values, received 2", 1),
    (set_args("model.layers.0.units.deeper=1"),
     "model.layers.0.units: unknown key", 1),
    (set_args("model.layers=[]", "model.layers.0.units=1"),
     "model.layers.0: expected no index (the list is empty), received '0'", 1),
    (set_args("model.layers.1.units=1", "model.layers.١.units=1"),
     "model.layers.١: expected a list index in 0..2, received '١'", 1),
])
def test_row5_values_beyond_what_the_libraries_take_are_refused(runs_dir, tiny_data_dir, args,
                                                                message, code):
    result = run("train", "--data-dir", str(tiny_data_dir), *set_args(*TINY_OVERRIDES), *args)
    assert_one_error(result, message, code)
    assert_no_run_left(runs_dir)


def test_row5_integers_too_long_for_python_are_refused(runs_dir, tmp_path):
    digits = "9" * 5000  # Python converts at most 4300 digits (sys.get_int_max_str_digits)
    assert_one_error(run("train", "--set", f"training.epochs={digits}"),
                     "training.epochs: an integer of 5,000 characters is too long")
    path = tmp_path / "long.yaml"
    path.write_text(f"training:\n  seed: {digits}\n")
    assert_one_error(run("train", "--config", str(path)),
                     f"{path}: an integer of 5,000 characters is too long at line 2")
    assert_one_error(run("train", "--set", f"training.epochs=0x{'f' * 5000}"),  # too long to show
                     "training.epochs: expected an integer in 1..1000000, received <an integer "
                     "too long to show>")
    assert_no_run_left(runs_dir)


def test_row5_a_null_section_with_a_shortcut_names_the_section(runs_dir, tiny_data_dir, tmp_path):
    path = tmp_path / "null.yaml"
    path.write_text("training: null\n")
    result = run("train", "--data-dir", str(tiny_data_dir), "--config", str(path), "--epochs", "1")
    assert_one_error(result, "training: expected a mapping of keys to values, received None")
    assert_no_run_left(runs_dir)


def test_row5_deep_nesting_is_refused(runs_dir, tmp_path):
    deep = "[" * 20_000 + "]" * 20_000
    path = tmp_path / "deep.yaml"
    path.write_text(f"model:\n  layers: {deep}\n")
    assert_one_error(run("train", "--config", str(path)),
                     f"{path}: nested deeper than 20 levels at line 2")
    assert_one_error(run("train", "--set", f"model.layers={deep}"),
                     "model.layers: nested deeper than 20 levels")
    assert_no_run_left(runs_dir)


# ---- row 8: data files whose headers promise more than they hold --------------------------------


def test_row8_a_gzip_bomb_is_stopped_at_the_size_its_header_gives(tmp_path):
    write_idx_dir(tmp_path, train=30, test=10)
    _, labels = synthetic_digits(10, 2)
    bomb = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as file:
        file.write(idx_bytes(labels, 2049))
        zeros = bytes(1 << 20)
        for _ in range(64):  # 64 MiB inflated, 64 KiB on disk
            file.write(zeros)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            load_mnist(str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(error.value) == (f"{bomb}: longer than the 18 bytes its header gives for shape "
                                f"(10,) (corrupt)")
    assert peak < 8 << 20


def test_row8_an_idx_header_claiming_more_than_the_file_holds(tmp_path):
    write_idx_dir(tmp_path, train=30, test=10, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((1, 28, 28)), 2051)[:4] + (60_000_000).to_bytes(4, "big")
                     + (28).to_bytes(4, "big") * 2 + bytes(784))
    _, labels = synthetic_digits(60, 0)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(
        (2049).to_bytes(4, "big") + (60_000_000).to_bytes(4, "big") + bytes(60))
    with pytest.raises(DataError) as error:
        load_mnist(str(tmp_path))
    assert str(error.value) == (f"{path}: its header gives shape (60000000, 28, 28) (47040000016 "
                                f"bytes), more than its 800 bytes can hold (truncated or corrupt)")


def npz_with_lying_member(path, shape):
    """A Keras-layout .npz whose x_train.npy header claims `shape` over 100 bytes of data."""
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.zeros((1, 28, 28), np.uint8), y_train=np.zeros(1, np.uint8),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.uint8))
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "x_train.npy":
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    header, {"descr": "|u1", "fortran_order": False, "shape": shape})
                data = header.getvalue() + bytes(100)
            target.writestr(name, data)
    return path


def test_row8_an_npz_member_claiming_a_huge_shape(tiny_run, tmp_path):
    path = npz_with_lying_member(tmp_path / "lying.npz", (60_000_000, 28, 28))
    result = run("evaluate", str(tiny_run), "--data-dir", str(path))
    assert_one_error(result, f"{path}: x_train claims shape (60000000, 28, 28) of uint8 "
                             f"(47040000000 bytes) but holds 100 bytes (truncated or corrupt)")


# ---- row 9: FIFOs and other files that are not regular ------------------------------------------


def test_row9_a_fifo_is_reported_and_skipped_never_read(tiny_run, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    good = digit_png(folder / "a.png")
    fifo = folder / "fifo.png"
    os.mkfifo(fifo)
    for given, rows in ((fifo, []), (folder, [str(good)])):
        result = subprocess.run([*DIGITNET, "predict", str(given), "--model", str(tiny_run)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1
        assert result.stderr == f"Error: {fifo}: is a named pipe, not a regular file\n"
        header, *lines = result.stdout.splitlines()
        assert header == f"Model: {tiny_run / 'model-best.tflite'}"  # the file that answers
        assert [line.split()[0] for line in lines] == rows


def test_row9_a_fifo_as_config_is_refused(runs_dir, tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    result = subprocess.run([*DIGITNET, "train", "--config", str(fifo)], capture_output=True,
                            text=True, timeout=60)  # a child: a hang fails the test, not CI
    assert (result.returncode, result.stderr) == (
        1, f"Error: {fifo}: config file is a named pipe, not a regular file\n")


# ---- row 11: Ctrl-C during predict --------------------------------------------------------------


def predict_answering_stdin(run, folder, stderr=subprocess.PIPE) -> subprocess.Popen:
    """`digitnet predict -` given more paths than a batch, once its first rows are out; it
    waits for more. The paths are short (relative to cwd) so that the 1100 lines in, and the
    1024 answers out, each fit in a pipe's 64 KiB: longer ones fill both pipes and each side
    would wait for the other forever."""
    digit_png(folder / "seven.png")
    child = subprocess.Popen([*DIGITNET, "predict", "-", "--model", str(run)], cwd=folder,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                             text=True)
    try:
        child.stdin.write("seven.png\n" * 1100)
        child.stdin.flush()
        assert child.stdout.readline().startswith("Model: ")
        assert child.stdout.readline().startswith("seven.png")
    except BaseException:
        child.kill()
        raise
    return child


def test_row11_ctrl_c_during_predict_exits_130_quietly(tiny_run, tmp_path):
    child = predict_answering_stdin(tiny_run, tmp_path)
    try:
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130
    assert stderr == "\nInterrupted\n"


def live_processes() -> dict[int, int]:
    """Each live (not zombie) process's parent, from /proc."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                state, ppid = stat.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if state != "Z":
            parents[int(entry)] = int(ppid)
    return parents


def running_below(pid: int) -> set[int]:
    """The live processes descended from `pid`."""
    parents = live_processes()
    below, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        below |= frontier
    return below


def test_row11_predict_killed_outright_leaves_no_worker_behind(tiny_run, tmp_path):
    """kill -9 gives predict no chance to stop its pool: the workers see it go and end."""
    child = predict_answering_stdin(tiny_run, tmp_path, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        # more paths after a pause: past its first moments predict hands them to the workers
        while not any(running_below(p) for p in running_below(child.pid)):
            assert time.monotonic() < deadline, "predict never started its workers"
            child.stdin.write("seven.png\n" * 100)
            child.stdin.flush()
            time.sleep(0.3)
        pool = running_below(child.pid)  # the fork server, its workers, the resource tracker
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 30
    while (left := pool & live_processes().keys()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left


# ---- row 12: nan and infinities for float options -----------------------------------------------


@pytest.mark.parametrize("option, value, message", [
    ("--min-confidence", "nan", "nan is not a finite number."),
    ("--min-confidence", "-NaN", "-NaN is not a finite number."),
    ("--min-confidence", "inf", "inf is not in the range 0<=x<=1."),
    ("--max-entropy", "nan", "nan is not a finite number."),
    ("--max-entropy", "inf", "inf is not a finite number."),
    ("--max-entropy", "-0.5", "-0.5 is not in the range x>=0."),
])
def test_row12_thresholds_must_be_finite_numbers_in_range(tiny_run, tmp_path, option, value,
                                                          message):
    image = digit_png(tmp_path / "seven.png")
    result = run("predict", str(image), "--model", str(tiny_run), option, value)
    assert_one_error(result, f"Invalid value for '{option}': {message} Try 'digitnet "
                             f"predict --help'.", 2)


def test_row12_serve_refuses_nan_before_it_starts():
    result = run("serve", "--min-confidence", "nan")
    assert_one_error(result, "Invalid value for '--min-confidence': nan is not a finite number. "
                             "Try 'digitnet serve --help'.", 2)
    result = run("serve", "--max-entropy", "-0.5")
    assert_one_error(result, "Invalid value for '--max-entropy': -0.5 is not in the range x>=0. "
                             "Try 'digitnet serve --help'.", 2)


# ---- row 13: --help says where things come from -------------------------------------------------


@pytest.mark.parametrize("command, mentions", [
    ("train", ["DIGITNET_RUNS_DIR", "DIGITNET_DATA_DIR", "DIGITNET_CACHE_DIR"]),
    ("evaluate", ["DIGITNET_RUNS_DIR", "DIGITNET_DATA_DIR", "DIGITNET_CACHE_DIR", ".tflite"]),
    ("predict", ["DIGITNET_RUNS_DIR", ".tflite",
                 f"[default: {DEFAULT_MIN_CONFIDENCE}; 0<=x<=1]"]),
    ("report", ["DIGITNET_RUNS_DIR", "DIGITNET_DATA_DIR", "DIGITNET_CACHE_DIR"]),
    ("runs", ["DIGITNET_RUNS_DIR"]),
])
def test_row13_help_names_the_environment_and_defaults(command, mentions):
    result = run(command, "--help")
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    assert [m for m in mentions if m not in text] == []
    assert "None" not in text  # an open range is not "[x<=None]"


# ---- row 14: messages that name the input and make sense ----------------------------------------


def write_npz(path, train: int, test: int = 5):
    x_train, y_train = synthetic_digits(train, 1)
    x_test, y_test = synthetic_digits(test, 2)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def test_row14_an_npz_without_training_images_is_named(tiny_run, tmp_path):
    path = write_npz(tmp_path / "empty.npz", train=0)
    result = run("evaluate", str(tiny_run), "--data-dir", str(path))
    assert_one_error(result, f"{path} (train): no images (0 of shape (28, 28))")


def test_row14_a_validation_split_too_big_names_the_data(tiny_run, tmp_path):
    path = write_npz(tmp_path / "ten.npz", train=10)
    result = run("evaluate", str(tiny_run), "--split", "val", "--data-dir", str(path))
    assert_one_error(result, f"data.validation_size: expected 1..9 (the 10 training images of "
                             f"{path} less one), received 10")
    path = write_npz(tmp_path / "one.npz", train=1)
    result = run("evaluate", str(tiny_run), "--split", "val", "--data-dir", str(path))
    assert_one_error(result, f"{path}: only 1 training image; at least 2 are needed (one to "
                             f"train on, one to validate)")


def copy_run(tiny_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy, symlinks=True)
    return copy


def test_row14_an_invalid_run_config_is_named(tiny_run, tmp_path):
    copy = copy_run(tiny_run, tmp_path)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["layers"] = 5
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    result = run("evaluate", str(copy), "--split", "val")
    assert_one_error(result, f"{copy / 'config.yaml'}: model.layers: expected a list of layers, "
                             f"received 5")


def test_row14_set_inside_a_null_section_names_the_section(runs_dir, tmp_path):
    path = tmp_path / "null.yaml"
    path.write_text("model: null\n")
    result = run("train", "--config", str(path), "--set", "model.layers.0.type=flatten")
    assert_one_error(result, "model: expected a mapping of keys to values, received None")


def test_row14_a_lambda_refusal_is_whole_sentences(tmp_path):
    import keras

    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(
        keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    result = run("evaluate", str(path))
    assert_one_error(result, f"{path}: cannot load Keras model (ValueError: Requested the "
                             f"deserialization of a `Lambda` layer whose `function` is a Python "
                             f"lambda. This carries a potential risk of arbitrary code execution "
                             f"and thus it is disallowed by default.)")


def test_row14_a_cache_dir_that_is_a_file(tiny_run, tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(blocker))
    monkeypatch.delenv("DIGITNET_DATA_DIR", raising=False)
    bare = tmp_path / "bare.keras"
    shutil.copy(tiny_run / "model-best.keras", bare)
    result = run("evaluate", str(bare))
    assert_one_error(result, f"{blocker}: cannot make the download cache folder (File exists); "
                             f"set $DIGITNET_CACHE_DIR to a folder, or $DIGITNET_DATA_DIR to a "
                             f"local copy of MNIST")


# ---- row 16: a reader that goes away ------------------------------------------------------------


def test_row16_train_into_a_closed_pipe_goes_on_quietly(tmp_path, tiny_data_dir):
    args = [*DIGITNET, "train", "--data-dir", str(tiny_data_dir), "--run-dir", "r",
            "--no-tensorboard", *set_args(*TINY_OVERRIDES)]
    env = {**os.environ, "DIGITNET_RUNS_DIR": str(tmp_path / "runs")}
    child = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    first = child.stdout.readline()  # `| head -1`
    child.stdout.close()
    stderr = child.stderr.read()
    assert child.wait(timeout=300) == 0, stderr
    assert first.startswith("Training on CPU")
    assert "Broken pipe" not in stderr and "Traceback" not in stderr
    assert json.loads((tmp_path / "r" / "state.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
def test_row16_stdout_on_a_full_disk_or_closed_is_one_line_or_quiet(tmp_path, redirect):
    (tmp_path / "runs").mkdir()
    result = subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", *DIGITNET, "runs",
                             str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    if redirect == ">&-":  # closed: nobody reads it, as with a reader gone
        assert (result.returncode, result.stderr) == (0, "")
    else:  # full: the output is lost, which exit 0 would hide
        assert (result.returncode, result.stderr) == (
            1, "Error: standard output: cannot write (No space left on device); output lost\n")


# ---- row 17: duplicate keys, and file names that would split a line -----------------------------


def test_row17_duplicate_yaml_keys_are_refused(runs_dir, tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("training:\n  epochs: 2\ntraining:\n  seed: 1\n")
    assert_one_error(run("train", "--config", str(path)),
                     f"{path}: key 'training' given twice at line 3")
    path.write_text("training:\n  epochs: 2\n  epochs: 3\n")
    assert_one_error(run("train", "--config", str(path)),
                     f"{path}: key 'epochs' given twice at line 3")
    assert_one_error(run("train", "--set", "model.layers=[{type: flatten, type: dense}]"),
                     "model.layers: key 'type' given twice")


def test_row17_control_characters_in_file_names_are_escaped(tiny_run, tmp_path):
    good = digit_png(tmp_path / "two\nlines.png")
    bad = tmp_path / "bad\x1b[31m.png"
    bad.write_text("not an image")
    result = run("predict", str(good), str(bad), "--model", str(tiny_run))
    assert result.exit_code == 1
    header, *rows = result.output.splitlines()
    assert header.startswith("Model: ") and len(rows) == 2
    assert rows[0].startswith(str(tmp_path / "two\\nlines.png") + "  ")
    assert rows[1] == (f"Error: {tmp_path / 'bad'}\\x1b[31m.png: not an image file (cannot "
                       f"identify image format)")


def test_row2_the_server_does_not_quote_a_config_built_of_aliases(tiny_run, tmp_path):
    from digitnet.serving.model import load_served_model

    copy = copy_run(tiny_run, tmp_path)
    (copy / "config.yaml").write_text(billion_laughs(9))  # name: 9**9 strings, were /model to say
    served = load_served_model(copy)
    assert (served.info["run"], served.info["config"]) == ("copy", None)


def test_row2_runs_lists_a_run_whose_config_has_aliases_as_broken(tiny_run, tmp_path):
    copy = copy_run(tiny_run, tmp_path / "runs")
    (copy / "config.yaml").write_text(billion_laughs(9))
    result = run("runs", str(tmp_path / "runs"), "--json")
    assert result.exit_code == 0
    [listed] = json.loads(result.output)
    assert (listed["status"], listed["problem"]) == ("broken", "config.yaml unreadable or corrupt")
