"""`digitnet runs`: runs newest first, broken and unfinished ones shown as such, exact errors."""

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from digitnet.cli import cli
from digitnet.runs.listing import list_runs
from digitnet.runs.lock import RunLock

SMALL_FILES = ("config.yaml", "manifest.json", "metrics.json", "state.json", "history.csv",
               "model-best.keras")


def run(*args):
    return CliRunner().invoke(cli, list(args))


def make_run(tiny_run, root, name: str, started: str, **state):
    """A run directory with the tiny run's files (best model, no checkpoints), started then."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    for file in SMALL_FILES:
        shutil.copy(tiny_run / file, run_dir / file)
    edit_json(run_dir / "manifest.json", started=f"2026-{started}:00+0000")
    edit_json(run_dir / "state.json", **state)
    return run_dir


def edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.fixture
def runs_folder(tiny_run, tmp_path):
    """Finished, broken, killed, live and failed runs, a `latest` link and a folder of notes."""
    root = tmp_path / "runs"
    make_run(tiny_run, root, "old", "01-01T09:00")
    make_run(tiny_run, root, "new", "03-01T09:00")
    (make_run(tiny_run, root, "corrupt", "02-01T09:00") / "metrics.json").write_text("{trunc")
    (make_run(tiny_run, root, "no-config", "02-02T09:00") / "config.yaml").unlink()
    killed = make_run(tiny_run, root, "killed", "02-03T09:00", status="running", epoch=1)
    (killed / "metrics.json").unlink()
    live = make_run(tiny_run, root, "live", "02-04T09:00", status="running", epoch=0)
    (live / "metrics.json").unlink()
    make_run(tiny_run, root, "failed", "02-05T09:00", status="failed", message="boom")
    (root / "latest").symlink_to("new")
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run")
    return root


def test_runs_lists_newest_first_with_statuses(runs_folder, tiny_run):
    with RunLock(runs_folder / "live"):
        runs = list_runs(runs_folder)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert [(r["run"], r["status"]) for r in runs] == [
        ("new", "finished"), ("failed", "failed"), ("live", "running"),
        ("killed", "interrupted"), ("no-config", "broken"), ("corrupt", "broken"),
        ("old", "finished")]
    new = runs[0]
    assert new == {"run": "new", "path": str(runs_folder / "new"), "status": "finished",
                   "problem": None, "config": "default", "epochs": 2, "planned_epochs": 2,
                   "test_accuracy": metrics["test_accuracy"],
                   "train_seconds": metrics["train_seconds"],
                   "started": "2026-03-01T09:00:00+0000", "note": None}
    problems = {r["run"]: r["problem"] for r in runs if r["problem"]}
    assert problems == {"no-config": "config.yaml missing",
                        "corrupt": "metrics.json unreadable or corrupt"}
    killed = runs[3]
    assert (killed["epochs"], killed["test_accuracy"], killed["train_seconds"]) == (1, None, None)


def test_runs_table_and_json(runs_folder, tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    result = run("runs", str(runs_folder))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["RUN", "STATUS", "CONFIG", "EPOCHS", "TEST", "ACC", "TRAIN", "S",
                                "DATE"]
    assert lines[1].split() == ["new", "finished", "default", "2",
                                f"{metrics['test_accuracy']:.4f}",
                                f"{metrics['train_seconds']:.1f}", "2026-03-01", "09:00"]
    assert lines[3].split() == ["live", "interrupted", "default", "0/2", "-", "-", "2026-02-04",
                                "09:00"]  # its process is gone: no lock is held
    assert lines[-2:] == ["no-config: config.yaml missing",
                          "corrupt: metrics.json unreadable or corrupt"]
    listed = json.loads(run("runs", str(runs_folder), "--json").output)
    assert [r["run"] for r in listed] == ["new", "failed", "live", "killed", "no-config",
                                          "corrupt", "old"]


def test_runs_defaults_to_the_runs_folder(runs_dir, tiny_run):
    make_run(tiny_run, runs_dir, "only", "01-01T09:00")
    result = run("runs", "--json")
    assert [r["run"] for r in json.loads(result.output)] == ["only"]


def test_runs_errors(runs_dir, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (["nowhere"], "Error: nowhere: no such folder (train a run with `digitnet train`, or "
                      "pass the folder that holds your runs)\n"),
        ([str(tmp_path / "file.txt")], f"Error: {tmp_path / 'file.txt'}: not a folder (expected "
                                       f"the folder that holds your runs)\n"),
    ]
    for args, message in cases:
        result = run("runs", *args)
        assert (result.exit_code, result.output) == (1, message)


def test_no_runs_yet_is_an_empty_list(runs_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    assert not runs_dir.exists()  # a new user: runs/ is made by the first `digitnet train`
    for args, folder in (([], runs_dir), ([str(tmp_path / "empty")], tmp_path / "empty")):
        result = run("runs", *args)
        assert (result.exit_code, result.output) == (
            0, f"No runs in {folder} yet (train one with `digitnet train`)\n")
        result = run("runs", *args, "--json")
        assert (result.exit_code, result.output) == (0, "[]\n")


def test_finished_run_without_its_model_is_broken(runs_dir, tiny_run):
    make_run(tiny_run, runs_dir, "gutted", "01-01T09:00")
    (runs_dir / "gutted" / "model-best.keras").unlink()
    [listed] = json.loads(run("runs", "--json").output)
    assert (listed["status"], listed["problem"]) == ("broken", "model-best.keras missing")


def test_new_commands_answer_help_without_importing_heavy_modules():
    code = ("import sys; from click.testing import CliRunner; from digitnet.cli import cli\n"
            "for command in ('report', 'runs'):\n"
            "    result = CliRunner().invoke(cli, [command, '--help'])\n"
            "    assert result.output.startswith(f'Usage: digitnet {command}'), result.output\n"
            "heavy = {'tensorflow', 'keras', 'matplotlib'} & set(sys.modules)\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
