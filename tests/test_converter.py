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
from tests.conftest import REPO, TINY_OVERRIDES

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


FAILS = ("import sys; sys.stdin.readline(); sys.stdin.readline(); "
         "sys.stderr.write('Traceback ...\\nValueError: cannot convert this model\\n'); "
         "sys.exit(1)")
WRITES_NOTHING = "import sys; sys.stdin.readline(); sys.stdin.readline(); sys.exit(0)"


@pytest.mark.parametrize(("code", "reason"), [
    (FAILS, "ValueError: cannot convert this model"),
    (WRITES_NOTHING, "the converter wrote nothing")], ids=["fails", "writes nothing"])
def test_a_failed_conversion_fails_the_jax_run_in_one_line_and_writes_no_export(
        tmp_path, tiny_data_dir, code, reason):
    """`digitnet train --backend jax` whose converter process fails (a stand-in that says why on
    stderr) or exits without writing the file, after the run directory exists: exit status 1,
    one `Error:` line naming the file, the run marked failed with that reason, no .tflite,
    record or metrics.json, and no converter left."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "DIGITNET_RUNS_DIR": str(tmp_path / "runs"),
           "DIGITNET_TEST_CONVERTER": code, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "train_child.py"), "train", "--backend", "jax",
         "--data-dir", str(tiny_data_dir), "--run-dir", str(run_dir), *SETS, "-q"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=600)
    message = f"{run_dir / 'model-best.tflite'}: LiteRT export failed ({reason})"
    assert process.returncode == 1, stderr[-3000:]
    assert stdout == ""
    assert [line for line in stderr.splitlines() if "Error" in line or "Traceback" in line] \
        == [f"Error: {message}"]
    assert converters_of(process.pid) == []
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "failed" and state["message"] == message
    names = {path.name for path in run_dir.iterdir()}
    assert "model-best.keras" in names
    assert not names & {"model-best.tflite", "model-best.tflite.json", "metrics.json"}
    assert hidden_files(run_dir) == []


REPLACES = ("import os, sys; from pathlib import Path; sys.stdin.readline(); "
            "p = Path(sys.stdin.readline().strip()); "
            "tmp = p.parent / ('.' + p.name + '.abcd1234.tflite'); tmp.write_text('new'); "
            "os.replace(tmp, p)")


@pytest.mark.parametrize(("code", "written"), [(WRITES_NOTHING, False), (REPLACES, True)],
                         ids=["writes nothing", "replaces it"])
def test_a_file_from_before_is_not_taken_for_the_conversion(tmp_path, monkeypatch, code,
                                                            written):
    """model-best.tflite is there from before (a resumed run): a converter that exits without
    writing fails naming the file, which stays as it was; one that renames its new file into
    place succeeds."""
    target = tmp_path / "model-best.tflite"
    target.write_text("older")
    monkeypatch.setattr(converter, "command", lambda: [sys.executable, "-c", code])
    wait = converter.convert(tmp_path / "model-best.keras", target)
    if written:
        wait()
        assert target.read_text() == "new"
    else:
        with pytest.raises(DigitnetError, match=rf"^{target}: LiteRT export failed \(the "
                                                rf"converter wrote nothing\)$"):
            wait()
        assert target.read_text() == "older"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model-best.tflite"]


def test_a_stuck_converter_is_ended_and_named(tmp_path, monkeypatch):
    """A converter that never finishes: after the wait's limit the error names the file, and
    once the caller abandons the export neither it nor its temporary file is left."""
    stuck = ("import sys, time; from pathlib import Path; p = Path(sys.argv[1]); "
             "sys.stdin.readline(); sys.stdin.readline(); "
             "(p.parent / ('.' + p.name + '.abcd1234.tflite')).write_text('half'); time.sleep(120)")
    target = tmp_path / "model.tflite"
    monkeypatch.setattr(converter, "command", lambda: [sys.executable, "-c", stuck, str(target)])
    monkeypatch.setattr(converter, "CONVERT_TIMEOUT_S", 2)
    wait = converter.convert(tmp_path / "model.keras", target)
    with pytest.raises(DigitnetError, match=rf"^{target}: LiteRT export did not finish within "
                                            rf"2 s \(the converter was ended\)$"):
        try:
            wait()
        except DigitnetError:  # as train.finish does
            converter.abandon(target)
            raise
    assert converters_of(os.getpid()) == []
    assert list(tmp_path.iterdir()) == []


def test_abandoning_an_export_removes_partial_files_only(tmp_path):
    """`abandon` removes the partial files a killed converter (or the record's write) left in the
    run directory, and leaves a folder whose name begins the same way alone (the staging folder
    of a `digitnet export --format litert` of this run) rather than failing on it."""
    target = tmp_path / "model-best.tflite"
    target.write_text("older")
    (tmp_path / ".model-best.tflite.zz99yy88").mkdir()
    for partial in (".model-best.tflite.abcd1234.tflite", ".model-best.tflite.json.k2j4h6g8.json"):
        (tmp_path / partial).write_text("half")
    converter.abandon(target)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".model-best.tflite.zz99yy88", "model-best.tflite"]
    assert target.read_text() == "older"


def test_a_converter_writing_megabytes_of_errors_is_never_held_and_its_last_line_is_kept(
        tmp_path, monkeypatch):
    """A converter that writes 2 MB to standard error while it waits (TensorFlow's warnings)
    goes on at once, though the model is not handed over yet (a pipe read only at the end held
    it at 64 KB), and its failure is named by the last line it wrote."""
    chatty = ("import sys; from pathlib import Path; sys.stderr.write('a warning\\n' * 200_000); "
              "sys.stderr.flush(); Path(sys.argv[1]).touch(); sys.stdin.readline(); "
              "sys.stdin.readline(); sys.exit('ValueError: cannot convert this model')")
    written = tmp_path / "written"
    monkeypatch.setattr(converter, "command",
                        lambda: [sys.executable, "-c", chatty, str(written)])
    converter.start()
    deadline = time.monotonic() + 30
    while not written.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert written.exists(), "the converter was held writing its errors"
    target = tmp_path / "model.tflite"
    with pytest.raises(DigitnetError, match=rf"^{target}: LiteRT export failed \(ValueError: "
                                            rf"cannot convert this model\)$"):
        converter.convert(tmp_path / "model.keras", target)()
    assert converters_of(os.getpid()) == []


def test_a_converter_that_cannot_start_leaves_no_open_error_file(monkeypatch):
    """Popen failing (no such interpreter) raises as it did, and the temporary file meant for
    the converter's standard error is closed, not leaked."""
    opened = []
    real = converter.tempfile.TemporaryFile

    def tracked():
        opened.append(real())
        return opened[-1]

    monkeypatch.setattr(converter.tempfile, "TemporaryFile", tracked)
    monkeypatch.setattr(converter, "command", lambda: ["/nonexistent/python", "-"])
    with pytest.raises(FileNotFoundError):
        converter.launch()
    assert len(opened) == 1 and opened[0].closed


def test_stop_closes_every_converters_error_file(monkeypatch):
    """`stop` ends the converters and closes each one's standard error file (close_errors)."""
    monkeypatch.setattr(converter, "command",
                        lambda: [sys.executable, "-c", "import sys; sys.stdin.read()"])
    converter.start()
    [process] = [process for process in converter._errors if process.poll() is None]
    errors = converter._errors[process]
    converter.stop()
    assert errors.closed and process not in converter._errors


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
    """A process that started a converter and never used it: exiting ends it (atexit `stop`,
    before the parent is gone), and being killed (SIGKILL, no atexit) ends it too (the
    kernel's parent-death signal). The converter here arms the signal, then sleeps without
    reading its input, so that nothing else (its input's end) can end it."""
    sleeper = ("import time; from pathlib import Path; from digitnet.export import converter; "
               "converter.die_with_parent(); Path('armed').touch(); time.sleep(120)")
    # the parent says at exit, after `stop` has run (atexit runs last registered first: this
    # handler is registered before the converter module, which registers `stop`, is imported),
    # whether its converter is ended: the parent-death signal would end it a moment later as well
    code = ("import atexit, sys, time\n"
            "from pathlib import Path\n"
            "atexit.register(lambda: print('ended' if started.poll() is not None else 'alive'))\n"
            "from digitnet.export import converter\n"
            f"converter.command = lambda: [sys.executable, '-c', {sleeper!r}]\n"
            "converter.start()\n"
            "[started] = converter._errors\n"
            "while not Path('armed').exists():\n"
            "    time.sleep(0.05)\n"
            "print('armed', flush=True)\n"
            f"time.sleep({0 if how == 'exits' else 120})\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert parent.stdout.readline() == "armed\n"
    if how == "is killed":
        assert converters_of(parent.pid)  # it waits while its parent lives
        parent.send_signal(signal.SIGKILL)
    stdout, _ = parent.communicate(timeout=60)
    assert stdout == ("ended\n" if how == "exits" else "")
    assert ended_within(parent.pid, 10)


def test_digitnet_train_leaving_without_teardown_ends_its_unused_converter(tmp_path):
    """`digitnet train --backend jax` that fails after it started its converter (no MNIST in
    --data-dir) leaves past the interpreter's teardown (cli.leave), yet its atexit handlers
    run: the converter, a stand-in that neither reads its input nor dies with its parent, is
    ended before the command's process is gone."""
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "DIGITNET_RUNS_DIR": str(tmp_path / "runs"), "PYTHONPATH": str(REPO),
           "DIGITNET_TEST_CONVERTER": "import time; time.sleep(120)"}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "train_child.py"), "train", "--backend", "jax",
         "--data-dir", str(tmp_path / "empty"), *SETS, "-q"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate(timeout=600)
    left = converters_of(process.pid)
    for pid in left:  # not to outlive the test when it fails
        os.kill(pid, signal.SIGKILL)
    assert process.returncode == 1, stderr[-3000:]
    assert stderr.splitlines()[-1] == f"Error: {tmp_path / 'empty'}: missing " \
        "train-images-idx3-ubyte[.gz] (expected the four MNIST IDX files)"
    assert left == []


class Stopped(Exception):
    """Raised by the stand-in for backends.use: the test ends the command there."""


@pytest.mark.parametrize(("options", "starts"), [
    ([], True),
    (["--dry-run"], False),
    (["--print-config"], False),
    (["--run-dir", "job", "--coordinator", "127.0.0.1:1", "--num-processes", "2",
      "--process-id", "1"], False),
    (["--run-dir", "job", "--coordinator", "127.0.0.1:1", "--num-processes", "2",
      "--process-id", "0"], True),
], ids=["run", "dry run", "print config", "job process 1", "job process 0"])
def test_train_starts_the_converter_before_the_backend_only_when_it_will_export(
        runs_dir, tiny_data_dir, monkeypatch, options, starts):
    """`digitnet train --backend jax` starts the converter before it imports JAX, unless the
    command exports nothing (a dry run, --print-config, a job's process other than 0)."""
    from digitnet.training import backends

    calls = []

    def use(name):
        calls.append(("use", name))
        raise Stopped

    monkeypatch.setattr(converter, "start_early", lambda name: calls.append(("start", name)))
    monkeypatch.setattr(backends, "use", use)
    result = CliRunner().invoke(cli, ["train", "--backend", "jax", "--data-dir",
                                      str(tiny_data_dir), *SETS, *options])
    if options == ["--print-config"]:
        assert result.exit_code == 0 and calls == []
        return
    assert isinstance(result.exception, Stopped)
    assert calls == [*([("start", "jax")] if starts else []), ("use", "jax")]


def test_train_without_jax_fails_before_starting_a_converter(runs_dir, tiny_data_dir,
                                                             monkeypatch):
    """`digitnet train --backend jax` where JAX is not installed: one `Error:` line, and no
    converter (no TensorFlow import) was started for it."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "jax" else real(name, *args))
    started = []
    monkeypatch.setattr(converter, "start_early", started.append)
    result = CliRunner().invoke(cli, ["train", "--backend", "jax", "--data-dir",
                                      str(tiny_data_dir), *SETS, "-q"])
    assert result.exit_code == 1
    assert result.output == "Error: training.backend: 'jax' needs JAX (pip install " \
        "'digitnet[jax]')\n"
    assert started == []


def test_a_run_failing_while_its_model_converts_ends_the_converter_without_waiting(
        runs_dir, tiny_data_dir, monkeypatch):
    """The model's measurement fails while the converter converts (here a stand-in that has
    begun its temporary file and takes a minute): the run fails at once in one line, and
    neither the converter nor its temporary file is left. (The run's backend, TensorFlow in
    this process, exports the JAX backend's way here.)"""
    import digitnet.training.train as train
    from digitnet.training import backends
    from digitnet.training.backends import jax as jax_backend

    slow = ("import sys, time; from pathlib import Path; sys.stdin.readline(); "
            "p = Path(sys.stdin.readline().strip()); "
            "(p.parent / ('.' + p.name + '.abcd1234.tflite')).write_text('half'); time.sleep(60)")
    monkeypatch.setattr(converter, "command", lambda: [sys.executable, "-c", slow])
    for name in ("start_litert_export", "abandon_export"):
        monkeypatch.setattr(backends.current(), name, getattr(jax_backend, name))

    def measure(model, splits):
        time.sleep(1)  # the converter has begun
        raise DigitnetError("measuring failed")

    monkeypatch.setattr(train, "measure", measure)
    run_dir = runs_dir / "failed"
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(tiny_data_dir), "--run-dir",
                                      str(run_dir), *SETS, "-q"])
    assert result.exit_code == 1 and result.output == "Error: measuring failed\n"
    assert time.monotonic() - started < 30
    assert converters_of(os.getpid()) == []
    assert hidden_files(run_dir) == []
    assert "model-best.tflite" not in {path.name for path in run_dir.iterdir()}


def test_a_converter_killed_while_the_run_waits_fails_it_in_one_line_and_leaves_nothing(
        runs_dir, tiny_data_dir, monkeypatch):
    """The converter is killed (SIGKILL: out of memory, kill -9) after it began its temporary
    file and wrote a warning: the run fails in one line saying so (not "exit status -9", not the
    warning), and neither the converter nor its temporary file is left in the run directory."""
    from digitnet.training import backends
    from digitnet.training.backends import jax as jax_backend

    killed = ("import os, signal, sys; from pathlib import Path; "
              "sys.stderr.write('WARNING: All log messages before absl::InitializeLog() is "
              "called are written to STDERR\\n'); sys.stderr.flush(); sys.stdin.readline(); "
              "p = Path(sys.stdin.readline().strip()); "
              "(p.parent / ('.' + p.name + '.abcd1234.tflite')).write_text('half'); "
              "os.kill(os.getpid(), signal.SIGKILL)")
    monkeypatch.setattr(converter, "command", lambda: [sys.executable, "-c", killed])
    for name in ("start_litert_export", "abandon_export"):
        monkeypatch.setattr(backends.current(), name, getattr(jax_backend, name))
    run_dir = runs_dir / "killed"
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(tiny_data_dir), "--run-dir",
                                      str(run_dir), *SETS, "-q"])
    assert result.exit_code == 1
    assert result.output == f"Error: {run_dir / 'model-best.tflite'}: LiteRT export failed " \
        "(killed by SIGKILL)\n"
    assert converters_of(os.getpid()) == []
    assert hidden_files(run_dir) == []
    assert "model-best.tflite" not in {path.name for path in run_dir.iterdir()}


def test_the_converter_module_refuses_a_wrong_command_line_in_one_line():
    ran = subprocess.run([sys.executable, "-m", "digitnet.export.litert", "only-one.keras"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert ran.stderr.splitlines() == [
        "usage: python -m digitnet.export.litert MODEL.keras OUT.tflite (or - to read the two "
        "paths from standard input)"]


@pytest.mark.parametrize("case", ["corrupt model", "unwritable output"])
def test_the_converter_module_says_why_an_export_failed_in_one_line(tiny_run, tmp_path, case):
    """`python -m digitnet.export.litert` given a .keras file that is not one (Keras's error,
    its class named plainly) or an output it cannot write (digitnet's error, as it is): one
    line on standard error, exit status 1, no traceback, nothing written."""
    if case == "corrupt model":
        model, out = tmp_path / "model.keras", tmp_path / "model.tflite"
        model.write_bytes(b"not a zip archive")
    else:
        model, out = tiny_run / "model-best.keras", tmp_path / "missing" / "model.tflite"
    ran = subprocess.run([sys.executable, "-m", "digitnet.export.litert", str(model), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr
    [line] = ran.stderr.splitlines()
    if case == "corrupt model":
        assert line.startswith("ValueError: ") and str(model) in line
    else:
        assert line == f"{out}: cannot write (No such file or directory)"
    assert hidden_files(tmp_path) == [] and not out.exists()


def test_a_converter_that_cannot_write_names_the_file_once(tmp_path):
    """Through the converter process, an output it cannot write: one line naming the file once
    (not again inside the reason, with the error's dotted class name)."""
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.save(tmp_path / "model.keras")
    target = tmp_path / "missing" / "model.tflite"
    with pytest.raises(DigitnetError) as raised:
        converter.convert(tmp_path / "model.keras", target)()
    assert str(raised.value) == f"{target}: LiteRT export failed (cannot write (No such file or " \
        "directory))"
