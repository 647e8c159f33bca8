"""A run directory under abuse: unwritable places, a `latest` that is a folder, runs that fail
before a model exists, hand-edited files, evaluations on other data. One line, exit 1, nothing
left behind, and `latest` always names a run with a model."""

import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from digitnet.cli import cli
from tests.conftest import TINY_OVERRIDES, synthetic_digits


def run(*args):
    return CliRunner().invoke(cli, list(args))


def train_args(data_dir, *extra):
    sets = [part for text in TINY_OVERRIDES for part in ("--set", text)]
    return ["train", "--data-dir", str(data_dir), *sets, "--epochs", "1", *extra]


def mkdir_reason(path) -> str:
    """What the OS says when `path` is made a folder here (differs between /sys mounts)."""
    try:
        os.mkdir(path)
    except OSError as error:
        return error.strerror
    os.rmdir(path)
    raise AssertionError(f"{path} could be created")


# ---- row 3: run directories that cannot be made -------------------------------------------------


def test_unmakeable_run_dirs_are_one_line_errors(runs_dir, tiny_data_dir, tmp_path):
    runs_dir.mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    cases = {
        "/proc/digitnet-run": mkdir_reason("/proc/digitnet-run"),
        "/sys/digitnet-run": mkdir_reason("/sys/digitnet-run"),
        str(tmp_path / "loop"): "Too many levels of symbolic links",
        str(tmp_path / "dangling"): "a symbolic link to nothing",
        str(tmp_path / "file.txt" / "run"): "Not a directory",
    }
    for run_dir, reason in cases.items():
        result = run(*train_args(tiny_data_dir, "--run-dir", run_dir))
        assert (result.exit_code, result.output) == (
            1, f"Error: {run_dir}: cannot create the run directory ({reason})\n")
    assert list(runs_dir.iterdir()) == []
    assert not (tmp_path / "missing").exists()


def test_a_read_only_disk_is_a_one_line_error(runs_dir, tiny_data_dir, tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = run(*train_args(tiny_data_dir, "--run-dir", str(tmp_path / "new")))
    assert (result.exit_code, result.output) == (
        1, f"Error: {tmp_path / 'new'}: cannot create the run directory (Read-only file system)\n")


def test_an_existing_run_dir_that_cannot_be_written_is_a_one_line_error(tmp_path, tiny_data_dir,
                                                                        monkeypatch):
    import digitnet.runs.lock as lock

    real_open = os.open

    def read_only_open(path, flags, *args):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(lock.os, "open", read_only_open)
    (tmp_path / "empty").mkdir()
    result = run(*train_args(tiny_data_dir, "--run-dir", str(tmp_path / "empty")))
    assert (result.exit_code, result.output) == (
        1, f"Error: {tmp_path / 'empty'}: cannot write in the run directory "
           f"(Read-only file system)\n")


def test_a_read_only_runs_folder_fails_the_run_in_one_line(runs_dir, tiny_data_dir, tmp_path,
                                                          monkeypatch):
    real_unlink = Path.unlink

    def read_only(self, *args, **kwargs):  # the runs folder (where latest lives) is read-only
        if self.parent == runs_dir:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", read_only)
    runs_dir.mkdir()
    run_dir = tmp_path / "elsewhere"
    result = run(*train_args(tiny_data_dir, "--run-dir", str(run_dir)))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[-1] == (
        f"Error: {runs_dir / 'latest'}: cannot point it at {run_dir} (Read-only file system); "
        f"the run is kept at epoch 1 and can be resumed once there is room. Resume with: "
        f"digitnet train --resume {run_dir}")
    assert json.loads((run_dir / "state.json").read_text())["status"] == "failed"
    assert list(runs_dir.iterdir()) == []


def test_save_preprocessed_where_no_folder_can_be_made(tiny_run, tmp_path):
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(synthetic_digits(1, 0)[0][0]).save(image)
    (tmp_path / "file.txt").write_text("x")
    for folder in ("/proc/digitnet-x", str(tmp_path / "file.txt" / "out")):
        reason = mkdir_reason(folder) if folder.startswith("/proc") else "Not a directory"
        result = run("predict", str(image), "--model", str(tiny_run), "--save-preprocessed",
                     folder)
        assert (result.exit_code, result.output) == (
            1, f"Error: {folder}: cannot create the folder for preprocessed images ({reason})\n")


# ---- rows 4 and 6: runs/latest ------------------------------------------------------------------


def test_latest_that_is_a_real_folder_refuses_the_run_and_leaves_nothing(runs_dir,
                                                                         tiny_data_dir):
    (runs_dir / "latest").mkdir(parents=True)
    (runs_dir / "latest" / "notes.txt").write_text("mine")
    result = run(*train_args(tiny_data_dir))
    assert (result.exit_code, result.output) == (
        1, f"Error: {runs_dir / 'latest'}: not a symbolic link (digitnet points it at the newest "
           f"run); move it away or set $DIGITNET_RUNS_DIR to another folder\n")
    assert [p.name for p in runs_dir.iterdir()] == ["latest"]  # no run, no stray link
    assert [p.name for p in (runs_dir / "latest").iterdir()] == ["notes.txt"]


def test_latest_that_becomes_a_folder_mid_run_marks_the_run_failed(runs_dir, tiny_data_dir,
                                                                   monkeypatch):
    from digitnet.runs import layout

    monkeypatch.setattr(layout, "check_latest", lambda: None)  # the folder appears after start
    (runs_dir / "latest").mkdir(parents=True)
    result = run(*train_args(tiny_data_dir, "--run-dir", str(runs_dir / "a")))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: {runs_dir / 'latest'}: not a symbolic link (digitnet points it at the newest "
        f"run); move it away or set $DIGITNET_RUNS_DIR to another folder")
    assert "Traceback" not in result.output
    state = json.loads((runs_dir / "a" / "state.json").read_text())
    assert state["status"] == "failed"
    assert sorted(p.name for p in runs_dir.iterdir()) == ["a", "latest"]  # no stray .latest.*


def test_latest_moves_only_to_a_run_with_a_model(runs_dir, tiny_data_dir, monkeypatch):
    first = run(*train_args(tiny_data_dir, "--run-dir", str(runs_dir / "good")))
    assert first.exit_code == 0, first.output
    assert (runs_dir / "latest").resolve() == (runs_dir / "good").resolve()

    import digitnet.training.train as train

    def no_epoch(*args, **kwargs):
        raise RuntimeError("the machine ran out of memory")

    monkeypatch.setattr(train, "fit", no_epoch)
    failed = run(*train_args(tiny_data_dir, "--run-dir", str(runs_dir / "bad")))
    assert failed.exit_code == 1
    assert json.loads((runs_dir / "bad" / "state.json").read_text())["status"] == "failed"
    assert (runs_dir / "latest").resolve() == (runs_dir / "good").resolve()
    assert run("evaluate", "--json").exit_code == 0  # latest still answers


# ---- row 10: hand-edited runs -------------------------------------------------------------------


def edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("edit, problem", [
    (lambda r: (r / "config.yaml").write_text(
        re.sub(r"(?ms)^  layers:.*?(?=^\S)", "  layers: 5\n", (r / "config.yaml").read_text())),
     "config.yaml invalid (model.layers: expected a list of layers, received 5)"),
    (lambda r: edit_json(r / "state.json", epoch="two"),
     "state.json invalid (epoch: expected an integer, received 'two')"),
    (lambda r: edit_json(r / "state.json", stopped_early="no"),
     "state.json invalid (stopped_early: expected true or false, received 'no')"),
    (lambda r: edit_json(r / "metrics.json", train_seconds="fast"),
     "metrics.json invalid (train_seconds: expected an integer or a number, received 'fast')"),
    (lambda r: edit_json(r / "metrics.json", test_accuracy=[1]),
     "metrics.json invalid (test_accuracy: expected an integer or a number, received [1])"),
])
def test_hand_edited_runs_are_broken_naming_the_file(run_copy, tmp_path, edit, problem):
    edit(run_copy)
    listed = json.loads(run("runs", str(tmp_path), "--json").output)
    assert [(r["status"], r["problem"]) for r in listed] == [("broken", problem)]
    table = run("runs", str(tmp_path))
    assert table.output.splitlines()[-1] == f"run: {problem}"
    report = run("report", str(run_copy))
    assert (report.exit_code, report.output) == (1, f"Error: {run_copy}: broken run ({problem})\n")


@pytest.mark.parametrize("file, edit, message", [
    ("config.yaml", lambda r: (r / "config.yaml").write_text(
        re.sub(r"(?ms)^  layers:.*?(?=^\S)", "  layers: 5\n", (r / "config.yaml").read_text())),
     "model.layers: expected a list of layers, received 5"),
    ("state.json", lambda r: edit_json(r / "state.json", epoch="two"),
     "epoch: expected an integer, received 'two'"),
])
def test_resume_of_a_hand_edited_run_is_a_one_line_error(run_copy, file, edit, message):
    edit(run_copy)
    result = run("train", "--resume", str(run_copy), "--epochs", "3")
    assert (result.exit_code, result.output) == (1, f"Error: {run_copy / file}: {message}\n")


# ---- row 15: an evaluation on other data --------------------------------------------------------


def test_an_evaluation_on_other_data_is_shown_but_never_replaces_the_runs_own(
        run_copy, tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("DIGITNET_DATA_DIR", raising=False)
    images, labels = synthetic_digits(10, 9)
    other = tmp_path / "tiny.npz"
    np.savez(other, x_train=images, y_train=labels, x_test=images, y_test=labels)
    not_saved = (f"{other}: not the data {run_copy} was trained on (its sha256 is not in "
                 f"manifest.json); {run_copy} keeps its evaluation of its own images")
    result = run("evaluate", str(run_copy), "--data-dir", str(other), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    from digitnet.runs.layout import file_sha256

    assert report["data"] == {"source": str(other), "files": {str(other): file_sha256(other)},
                              "count": 10}
    assert report["not_saved"] == not_saved and "saved_to" not in report
    assert not (run_copy / "evaluation-test.json").exists() and not (run_copy / "plots").exists()

    refused = run("report", str(run_copy), "--data-dir", str(other))
    assert refused.exit_code == 1
    assert refused.output.splitlines()[-1] == (
        f"Error: {other}: not the data {run_copy} was trained on (its sha256 is not in "
        f"manifest.json); a report scores the run's own test images")
    assert not (run_copy / "report.html").exists()

    result = run("report", str(run_copy))  # the run's own data: evaluated, saved, reported
    assert result.output == (f"Evaluating {run_copy} on the test images for its report\n"
                             f"Report written to {run_copy / 'report.html'}\n")
    own = (run_copy / "evaluation-test.json").read_bytes()
    assert json.loads(own)["data"]["count"] == 20

    result = run("evaluate", str(run_copy), "--data-dir", str(other))
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"\nNot saved: {not_saved}\n")
    assert (run_copy / "evaluation-test.json").read_bytes() == own
    again = run("report", str(run_copy))  # still current: not evaluated again
    assert again.output == f"Report written to {run_copy / 'report.html'}\n"


def test_a_hand_edited_manifest_is_no_traceback_in_report(run_copy):
    manifest = run_copy / "manifest.json"
    edited = json.loads(manifest.read_text())
    edited["data_files"] = {path: [digest] for path, digest in edited["data_files"].items()}
    manifest.write_text(json.dumps(edited))
    result = run("report", str(run_copy))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1)
    assert result.exit_code == 0 or result.output.splitlines()[-1].startswith("Error: ")
