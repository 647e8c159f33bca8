"""The conventions users reach for: --print-config, --dry-run, --lr, -q, DIGITNET_* in --help,
shell completion."""

import os
import re
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from digitnet.cli import cli
from digitnet.config import Config, load_config, to_dict
from tests.conftest import TINY_OVERRIDES


def run(*args, env=None):
    return CliRunner(env=env).invoke(cli, list(args))


def key_paths(values, prefix=""):
    """Every key path of a nested dict ('training.augment.scale', ...); lists are leaves."""
    if not isinstance(values, dict):
        return {prefix}
    return set().union(*(key_paths(v, f"{prefix}.{k}" if prefix else k)
                         for k, v in values.items()))


def test_print_config_round_trips_through_config(tmp_path):
    args = ["--lr", "3e-3", "--epochs", "2", "--set", "model.layers.1.units=64",
            "--set", "training.augment.scale=0.1"]
    printed = run("train", "--print-config", *args)
    assert printed.exit_code == 0, printed.output
    saved = tmp_path / "mine.yaml"
    saved.write_text(printed.output)

    again = run("train", "--print-config", "--config", str(saved))
    assert again.exit_code == 0 and again.output == printed.output
    overrides = ("training.learning_rate=3e-3", "training.epochs=2", "model.layers.1.units=64",
                 "training.augment.scale=0.1")
    assert load_config(saved) == load_config(None, overrides)
    values = yaml.safe_load(printed.output)
    assert key_paths(values) == key_paths(to_dict(Config()))  # every default, nothing else
    assert values["training"]["learning_rate"] == 3e-3
    assert values["model"]["layers"][1]["units"] == 64


def test_print_config_imports_no_tensorflow_and_writes_nothing(tmp_path):
    code = ("import sys; from digitnet.cli import main\n"
            "sys.argv = ['digitnet', 'train', '--print-config']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "DIGITNET_RUNS_DIR": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("name: default\nmodel:\n")
    assert list(tmp_path.iterdir()) == []


def test_lr_is_the_learning_rate_shortcut():
    result = run("train", "--print-config", "--lr", "0.002")
    assert yaml.safe_load(result.output)["training"]["learning_rate"] == 0.002
    refused = run("train", "--lr", "0")
    assert refused.exit_code == 1
    assert refused.output == ("Error: training.learning_rate: expected a number in (0, 10), "
                              "received 0.0\n")
    not_a_number = run("train", "--lr", "fast")
    assert not_a_number.exit_code == 2
    assert not_a_number.output.startswith("Error: Invalid value for '--lr': 'fast' is not a "
                                          "valid float.")


def tiny_set_args():
    return [part for text in TINY_OVERRIDES for part in ("--set", text)]


def test_dry_run_checks_model_and_data_and_writes_nothing(runs_dir, tiny_data_dir):
    result = run("train", "--dry-run", "--data-dir", str(tiny_data_dir), *tiny_set_args())
    assert result.exit_code == 0, result.output
    parameters = (28 * 28 * 256 + 256) + (256 * 10 + 10)  # the lesson MLP: two Dense layers
    assert f"Parameters: {parameters:,} ({parameters:,} trainable)\n" in result.output
    assert "(Dense)" in result.output and "Total params: " in result.output  # Keras' summary
    assert (f"Data: 40 training, 10 validation and 20 test images from {tiny_data_dir}\n"
            in result.output)
    assert result.output.endswith("Device: CPU. Dry run: nothing trained, no run directory "
                                  "written.\n")
    assert not runs_dir.exists()


def test_dry_run_finds_what_training_would_fail_on(runs_dir, tiny_data_dir):
    too_big = run("train", "--dry-run", "--data-dir", str(tiny_data_dir), *tiny_set_args(),
                  "--batch-size", "41")
    assert too_big.exit_code == 1
    assert too_big.output == ("Error: training.batch_size: expected at most the 40 training "
                              "images, received 41\n")
    assert not runs_dir.exists()


@pytest.mark.parametrize("other", [["--resume", "."], ["--run-dir", "r"], ["--print-config"]])
def test_dry_run_refuses_options_that_need_a_run(runs_dir, other):
    result = run("train", "--dry-run", *other)
    assert result.exit_code == 1
    assert result.output == (f"Error: --dry-run: not allowed with {other[0]} (a dry run writes "
                             f"no run directory)\n")


def test_quiet_prints_only_the_result(runs_dir, tiny_data_dir):
    args = ["train", "--data-dir", str(tiny_data_dir), *tiny_set_args(), "--epochs", "1",
            "--no-tensorboard"]
    loud = run(*args)
    assert loud.exit_code == 0, loud.output
    assert "Training on CPU" in loud.output
    assert re.search(r"^\d+/\d+ - .*loss: ", loud.output, re.MULTILINE)  # Keras' epoch line
    quiet = run(*args, "-q")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.output.startswith("Test accuracy ") and quiet.output.count("\n") == 1


@pytest.mark.parametrize("command", ["train", "evaluate", "report"])
def test_help_shows_the_environment_variable(command):
    assert "[env var: DIGITNET_DATA_DIR]" in run(command, "--help").output


def test_top_level_help_names_every_digitnet_variable():
    output = run("--help").output
    for name in ("DIGITNET_DATA_DIR", "DIGITNET_RUNS_DIR", "DIGITNET_CACHE_DIR",
                 "_DIGITNET_COMPLETE=bash_source"):
        assert name in output


def test_data_dir_comes_from_the_environment(runs_dir, tmp_path):
    result = run("evaluate", env={"DIGITNET_DATA_DIR": str(tmp_path / "gone")})
    assert result.exit_code == 2
    assert result.output == (f"Error: Invalid value for '--data-dir' (env var: "
                             f"'DIGITNET_DATA_DIR'): Path '{tmp_path / 'gone'}' does not exist. "
                             f"Try 'digitnet evaluate --help'.\n")


def completion(env: dict) -> subprocess.CompletedProcess:
    code = "from digitnet.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F"),
                                           ("zsh", "#compdef digitnet"),
                                           ("fish", "complete --no-files --command digitnet")])
def test_shell_completion_script(shell, marker):
    result = completion({"_DIGITNET_COMPLETE": f"{shell}_source"})
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout


def test_shell_completion_answers():
    commands = completion({"_DIGITNET_COMPLETE": "bash_complete", "COMP_WORDS": "digitnet tr",
                           "COMP_CWORD": "1"})
    assert commands.stdout.split() == ["plain,train"]
    choices = completion({"_DIGITNET_COMPLETE": "bash_complete",
                          "COMP_WORDS": "digitnet train --device ", "COMP_CWORD": "3"})
    assert choices.stdout.split() == ["plain,auto", "plain,cpu", "plain,gpu"]


def test_dry_run_checks_the_devices_as_training_would(runs_dir, tiny_data_dir):
    result = run("train", "--dry-run", "--data-dir", str(tiny_data_dir), *tiny_set_args(),
                 "--devices", "64")
    assert result.exit_code == 1
    assert result.output.startswith("Error: --devices 64: expected at most the ")
    assert len(result.output.splitlines()) == 1 and not runs_dir.exists()
