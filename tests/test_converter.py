"""The LiteRT converter process that `digitnet train` starts first (digitnet/export/converter.py).

It writes the file an export in the training process would; a conversion that fails fails the
run in one line with nothing half-written; and no converter outlives the process that started it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from digitnet.cli import cli
from digitnet.errors import DigitnetError
from digitnet.export import converter
from digitnet.runs import layout
from tests.conftest import TINY_OVERRIDES

SETS = [part for text in TINY_OVERRIDES for part in ("--set", text)]


def converters_of(parent: int) -> list[int]:
    """Live processes started as converters by process `parent` (zombies count as ended)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            marked = f"{converter.PARENT_ENV}={parent}".encode() in \
                (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if marked and state != "Z":
            found.append(int(proc.name))
    return found


def ended_within(parent: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while converters_of(parent):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def hidden_files(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob(".*")]


def test_a_jax_train_process_converts_in_its_converter_the_same_file_and_leaves_none(
        tmp_path, tiny_data_dir):
    """`digitnet train --backend jax` starts the converter before it imports JAX; the run is
    complete when the command returns, its .tflite is byte for byte an export of
    model-best.keras in this (TensorFlow) process, and the converter is gone."""
    import keras

    from digitnet.export.litert import export_litert

    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "digitnet", "train", "--backend", "jax", "--data-dir",
         str(tiny_data_dir), "--run-dir", str(run_dir), *SETS, "-q"],
        env={**os.environ, "DIGITNET_RUNS_DIR": str(tmp_path / "runs")}, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.startswith("Test accuracy ") and stdout.count("\n") == 1
    assert converters_of(process.pid) == []
    assert {"config.yaml", "manifest.json", "history.csv", "state.json", "metrics.json",
            "model-best.keras", "model-last.keras", "model-best.tflite",
            "model-best.tflite.json", "tensorboard", "checkpoints"} == \
        {path.name for path in run_dir.iterdir()}
    assert hidden_files(run_dir) == []
    assert json.loads((run_dir / "state.json").read_text())["status"] == "finished"
    keras_sha = layout.file_sha256(run_dir / "model-best.keras")
    assert json.loads((run_dir / "metrics.json").read_text())["keras_sha256"] == keras_sha
    record = json.loads((run_dir / "model-best.tflite.json").read_text())
    assert record["source"] == {"file": "model-best.keras", "sha256": keras_sha}
    assert record["sha256"] == layout.file_sha256(run_dir / "model-best.tflite")
    here = export_litert(keras.saving.load_model(run_dir / "model-best.keras", compile=False),
                         tmp_path / "here.tflite")
    assert here.read_bytes() == (run_dir / "model-best.tflite").read_bytes()


def test_a_failed_conversion_fails_the_run_in_one_line_and_writes_no_export(
        runs_dir, tiny_data_dir, monkeypatch):
    """The converter fails (here a stand-in that says why on stderr; a TensorFlow run hands its
    model to a converter that waits for it): the run is marked failed with its reason, `Error:`
    names the file, and no .tflite, record or metrics.json is left."""
    fails = ("import sys; sys.stdin.readline(); sys.stdin.readline(); "
             "sys.stderr.write('Traceback ...\\nValueError: cannot convert this model\\n'); "
             "sys.exit(1)")
    monkeypatch.setattr(converter, "command", lambda: [sys.executable, "-c", fails])
    monkeypatch.setattr(converter, "start_early", lambda backend: converter.start())  # as for JAX
    run_dir = runs_dir / "failed"
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(tiny_data_dir), "--run-dir",
                                      str(run_dir), *SETS, "-q"])
    message = (f"{run_dir / 'model-best.tflite'}: LiteRT export failed (ValueError: cannot "
               f"convert this model)")
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "failed" and state["message"] == message
    names = {path.name for path in run_dir.iterdir()}
    assert "model-best.keras" in names
    assert not names & {"model-best.tflite", "model-best.tflite.json", "metrics.json"}
    assert hidden_files(run_dir) == []
    assert converters_of(os.getpid()) == []


def test_the_converter_names_a_model_it_cannot_read_and_leaves_nothing(tmp_path):
    """The real converter process, given a .keras file that is not one: one line naming the file
    to write, and neither it nor a temporary file is left."""
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"not a zip archive")
    target = tmp_path / "model.tflite"
    with pytest.raises(DigitnetError, match=r"^\S+model\.tflite: LiteRT export failed \(.+\)$"):
        converter.convert(broken, target)()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.keras"]


def test_the_converter_starts_early_for_jax_runs_only(monkeypatch):
    """A JAX run needs a TensorFlow process to convert; a TensorFlow run converts in its own."""
    waits = "import sys; sys.stdin.read()"
    monkeypatch.setattr(converter, "command", lambda: [sys.executable, "-c", waits])
    converter.start_early("tensorflow")
    assert not converter.waiting()
    converter.start_early("jax")
    assert converter.waiting()
    [started] = converters_of(os.getpid())
    converter.stop()
    assert not converter.waiting() and converters_of(os.getpid()) == []
    assert not Path(f"/proc/{started}").exists()  # ended and reaped


@pytest.mark.parametrize("how", ["exits", "is killed"])
def test_no_converter_outlives_its_parent(tmp_path, how):
    """A process that started a converter and never used it: exiting ends it (atexit), and being
    killed (SIGKILL, no atexit) ends it too (the kernel's parent-death signal)."""
    code = ("import sys, time\n"
            "from digitnet.export import converter\n"
            "converter.start()\n"
            "print('started', flush=True)\n"
            f"time.sleep({0 if how == 'exits' else 120})\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path)
    assert parent.stdout.readline() == "started\n"
    if how == "is killed":
        assert converters_of(parent.pid)  # it waits while its parent lives
        parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=60)
    assert ended_within(parent.pid, 10)
