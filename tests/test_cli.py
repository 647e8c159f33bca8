"""The command line through CliRunner: help, versions, exact error text, exit codes."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from digitnet import __version__
from digitnet.cli import cli
from tests.conftest import TINY_OVERRIDES


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


@pytest.mark.parametrize("command", [[], *([name] for name in sorted(cli.commands))])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(command, flag):
    result = run(*command, flag)
    assert result.exit_code == 0
    assert result.output.startswith("Usage: digitnet")


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.output == f"digitnet, version {__version__}\n"


def test_help_does_not_import_tensorflow():
    code = ("import sys; from digitnet.cli import main; sys.argv=['digitnet','train','--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_python_m_digitnet_runs():
    result = subprocess.run([sys.executable, "-m", "digitnet", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == f"digitnet, version {__version__}"


def set_args(*overrides):
    return [part for text in overrides for part in ("--set", text)]


def test_train_then_evaluate_with_no_arguments(runs_dir, tiny_data_dir, monkeypatch):
    monkeypatch.delenv("DIGITNET_DATA_DIR", raising=False)  # evaluate reads the run's own data
    result = run("train", "--data-dir", str(tiny_data_dir), *set_args(*TINY_OVERRIDES),
                 "--epochs", "1", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "Training on CPU" in result.output and "Test accuracy" in result.output
    run_dir = (runs_dir / "latest").resolve()
    assert (run_dir / "model-best.keras").is_file()
    assert "seed: 3" in (run_dir / "config.yaml").read_text()

    result = run("evaluate")
    assert result.exit_code == 0, result.output
    assert "Accuracy:" in result.output and "Confusion matrix" in result.output
    assert (run_dir / "evaluation-test.json").is_file()


def test_evaluate_json_and_val_split(tiny_run, monkeypatch):
    monkeypatch.delenv("DIGITNET_DATA_DIR", raising=False)  # the run's own data: it is saved
    result = run("evaluate", str(tiny_run), "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["split"] == "val" and report["examples"] == 10
    assert len(report["per_class"]) == 10
    assert sum(map(sum, report["confusion_matrix"])) == 10
    assert json.loads((tiny_run / "evaluation-val.json").read_text()) == report


def test_evaluate_a_keras_file(tiny_run, tiny_data_dir):
    result = run("evaluate", str(tiny_run / "model-last.keras"), "--json", "--data-dir",
                 str(tiny_data_dir))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["examples"] == 20


@pytest.mark.parametrize("args, code, message", [
    (["train", "--set", "training.epochz=2"], 1, "Error: training.epochz: unknown key"),
    (["train", "--set", "training.batch_size=big"], 1,
     "Error: training.batch_size: expected an integer, received 'big'\n"),
    (["train", "--set", "nothing"], 1, "Error: --set 'nothing': expected section.key=value\n"),
    (["train", "--epochs", "0"], 2, "Error: Invalid value for '--epochs': 0 is not in the "
                                    "range 1<=x<=1000000. Try 'digitnet train --help'.\n"),
    (["train", "--device", "tpu"], 2, "Error: Invalid value for '--device': 'tpu' is not one of"),
    (["train", "--config", "missing.yaml"], 2, "Error: Invalid value for '--config': File "
     "'missing.yaml' does not exist. Try 'digitnet train --help'.\n"),
    (["evaluate", "nowhere"], 2, "Error: Invalid value for '[RUN]': Path 'nowhere' does not "
                                 "exist. Try 'digitnet evaluate --help'.\n"),
    (["evaluate", "--split", "train"], 2,
     "Error: Invalid value for '--split': 'train' is not one of"),
    (["predict"], 2, "Error: Missing argument 'IMAGES...'. Try 'digitnet predict --help'.\n"),
    (["frobnicate"], 2, "Error: No such command 'frobnicate'. Try 'digitnet --help'.\n"),
    (["predict", "x.png", "--top-k", "11"], 2, "Error: Invalid value for '--top-k': 11 is not "
                                               "in the range 1<=x<=10."),
    (["report", "nowhere"], 1, "Error: nowhere: no such run directory\n"),
    (["report", "--data-dir", "nowhere"], 2, "Error: Invalid value for '--data-dir'"),
    (["runs", "nowhere"], 1, "Error: nowhere: no such folder (train a run with `digitnet "
                             "train`, or pass the folder that holds your runs)\n"),
    (["runs", "--jsn"], 2, "Error: No such option '--jsn'. Did you mean '--json'? Try "
                           "'digitnet runs --help'.\n"),
    (["train", "--epoch", "3"], 2, "Error: No such option '--epoch'. Did you mean '--epochs'? "
                                     "Try 'digitnet train --help'.\n"),
])
def test_bad_input_is_one_line_error(runs_dir, args, code, message):
    result = run(*args)
    assert result.exit_code == code
    assert result.output.startswith(message)
    assert result.output.count("\n") == 1, result.output  # no Usage lines, no traceback


def test_bare_digitnet_shows_the_help():
    result = run()
    assert result.exit_code == 2  # no command given: Click's usage status
    assert result.output.startswith("Usage: digitnet [OPTIONS] COMMAND")


def test_evaluate_without_any_run(runs_dir):
    result = run("evaluate")
    assert result.exit_code == 1
    assert result.output == (f"Error: no run found at {runs_dir / 'latest'} (train one with "
                             f"`digitnet train`, or pass a run directory or a .keras file)\n")


def test_evaluate_a_folder_that_is_not_a_run(runs_dir, tmp_path):
    result = run("evaluate", str(tmp_path))
    assert result.exit_code == 1
    assert result.output == (f"Error: {tmp_path}: no model-best.keras in this run directory "
                             f"(is it a digitnet run that finished an epoch?)\n")


def test_evaluate_a_corrupt_model(runs_dir, tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    result = run("evaluate", str(bad))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad}: cannot load Keras model (")
    assert "not a .keras zip archive" in result.output
    assert result.output.count("\n") == 1


def test_train_with_a_bad_data_dir(runs_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    for run_dir in (["--run-dir", "r"], []):
        result = run("train", "--data-dir", str(tmp_path / "empty"), *run_dir)
        assert result.exit_code == 1
        assert result.output == (f"Error: {tmp_path / 'empty'}: missing train-images-idx3-ubyte"
                                 f"[.gz] (expected the four MNIST IDX files)\n")
    assert not (tmp_path / "r").exists()  # no empty run left behind
    assert not any(runs_dir.iterdir())


def test_val_split_of_a_bare_model_is_refused(tiny_run, tmp_path):
    import shutil

    bare = tmp_path / "bare.keras"
    shutil.copy(tiny_run / "model-best.keras", bare)
    result = run("evaluate", str(bare), "--split", "val")
    assert result.exit_code == 1
    assert result.output == (f"Error: --split val: {bare} has no run directory, whose config.yaml "
                             f"says which images were held out (use test)\n")
