"""Interruption and resume: kill -9, SIGINT, SIGTERM, corrupt checkpoints, a full disk, a lock.

The central check: a run stopped in the middle of an epoch and resumed ends with exactly the
weights, optimizer state, RNG state and history of a run that was never stopped (on the CPU,
with op determinism: the tiny config has jit_compile off). The tiny model has dropout and
augmentation, so the random state that drives them is part of what must be restored.
"""

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from digitnet.cli import cli
from digitnet.config import load_config
from digitnet.errors import DigitnetError
from digitnet.runs import layout
from digitnet.runs.layout import checkpoint_file, read_snapshot, read_state, saved_epochs
from digitnet.runs.listing import run_status
from digitnet.runs.lock import RunLock, is_locked
from digitnet.training.interrupt import InterruptGuard, TrainingInterrupted
from digitnet.training.optim import make_schedule
from digitnet.training.resume import resume_config
from digitnet.training.train import train_and_evaluate
from tests.conftest import REPO, TINY_OVERRIDES, runs_root, write_idx_dir
from tests.train_child import skip_litert

LAYERS = ("model.layers=[{type: flatten}, {type: dense, units: 32}, {type: dropout, rate: 0.5}, "
          "{type: dense, units: 10, activation: softmax}]")
# 4 epochs of 8 steps (2 per execution), warm-up then cosine, dropout and augmentation.
RESUME_SETS = TINY_OVERRIDES + ("training.epochs=4", "training.warmup_epochs=1",
                                "training.augment.rotation_degrees=10",
                                "training.early_stopping_patience=3", LAYERS)
CHILD = REPO / "tests" / "train_child.py"


@pytest.fixture(scope="module", autouse=True)
def no_litert_export(tiny_run):
    """Skip the LiteRT export at the end of each run here (tested elsewhere; 0.4 s a run).

    Asks for the session's shared `tiny_run` first, so that it is trained with its export
    whichever file runs first: made under this patch, it would have no .tflite, and the tests
    elsewhere that expect one would fail when this file ran before theirs."""
    patch = pytest.MonkeyPatch()
    patch.setattr("digitnet.training.train.start_litert_export", skip_litert)
    patch.setattr("digitnet.training.train.prepare_export", lambda: None)
    yield
    patch.undo()


def tiny_config(*extra):
    return load_config(None, RESUME_SETS + extra)


def resume(run_dir, data_dir=None, **options):
    """Resume `run_dir` in this process, as `digitnet train --resume` does."""
    config = resume_config(run_dir, **options)
    return train_and_evaluate(config, run_dir, data_dir, resume=True)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_data_dir):
    """The tiny run trained without interruption: what every resumed run must equal."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_dir.mkdir()
    with runs_root(run_dir.parent):
        train_and_evaluate(tiny_config(), run_dir, str(tiny_data_dir))
    return run_dir


def model_state(path):
    """Every weight and optimizer variable (moments, iteration count) of a .keras file."""
    model = keras.saving.load_model(path)
    return [np.asarray(v) for v in model.weights] + \
        [np.asarray(v) for v in model.optimizer.variables]


def history(run_dir):
    rows = json.loads(checkpoint_file(run_dir, 4, ".json").read_text())["history"]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def snapshot_fields(run_dir, epoch):
    """The final checkpoint's description, less what differs between any two runs."""
    fields = json.loads(checkpoint_file(run_dir, epoch, ".json").read_text())
    for key in ("sha256", "history", "train_seconds", "checkpoint_seconds"):
        fields.pop(key)
    return fields


def assert_same_run(run_dir, reference):
    """Bit-identical models, optimizer and RNG state, and the same history, epoch by epoch."""
    for name in (layout.LAST_MODEL, layout.BEST_MODEL):
        ours, theirs = model_state(run_dir / name), model_state(reference / name)
        assert len(ours) == len(theirs)
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs)), name
    assert history(run_dir) == history(reference)
    assert [row["epoch"] for row in history(run_dir)] == [1, 2, 3, 4]
    assert snapshot_fields(run_dir, 4) == snapshot_fields(reference, 4)
    csv_epochs = [line.split(",")[0] for line in (run_dir / "history.csv").read_text().split()]
    assert csv_epochs == ["epoch", "1", "2", "3", "4"]


def start_child(run_dir, data_dir, epoch, step):
    """`digitnet train` in a subprocess that, at `step` of `epoch`, writes `<run>.ready` and
    waits for `<run>.go`; returns (process, ready file, go file)."""
    ready, go = run_dir.with_suffix(".ready"), run_dir.with_suffix(".go")
    env = {**os.environ, "DIGITNET_TEST_READY": str(ready), "DIGITNET_TEST_GO": str(go),
           "DIGITNET_TEST_EPOCH": str(epoch), "DIGITNET_TEST_STEP": str(step),
           "DIGITNET_TEST_HOLD": "120", "DIGITNET_RUNS_DIR": str(run_dir.parent)}
    sets = [part for text in RESUME_SETS for part in ("--set", text)]
    command = [sys.executable, str(CHILD), "train", "--data-dir", str(data_dir), *sets,
               "--run-dir", str(run_dir)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    return process, ready, go


@pytest.fixture(scope="module")
def children(tmp_path_factory, tiny_data_dir):
    """The two runs that are stopped from outside, started together at once: their start-up
    (importing TensorFlow) overlaps the other tests."""
    root = tmp_path_factory.mktemp("children")
    started = {"kill": start_child(root / "killed", tiny_data_dir, epoch=3, step=3),
               "sigint": start_child(root / "sigint", tiny_data_dir, epoch=2, step=3)}
    yield started
    for process, _, _ in started.values():
        if process.poll() is None:
            process.kill()
        process.communicate()


def wait_for(ready, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not ready.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the child never reached the step"
        time.sleep(0.02)


def test_kill_9_mid_epoch_then_resume_is_bit_identical(children, reference_run):
    process, ready, _ = children["kill"]
    run_dir = ready.with_suffix("")
    wait_for(ready, process)
    assert run_status(run_dir) == "running" and is_locked(run_dir)
    with pytest.raises(DigitnetError, match=rf"another digitnet process \(pid {process.pid}\)"):
        resume(run_dir)  # a second process is refused while the first trains
    process.kill()  # SIGKILL in the middle of epoch 3
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    state = read_state(run_dir)
    assert state["status"] == "running" and state["epoch"] == 2
    assert run_status(run_dir) == "interrupted"  # the process is gone: its lock went with it
    assert saved_epochs(run_dir) == [1, 2]
    stale = run_dir / ".model-last.keras.ab12cd34.keras"  # as left by a kill during a write
    stale.write_bytes(b"PK half")

    with runs_root(run_dir.parent):
        result = resume(run_dir)

    assert result.metrics["epochs"] == 4
    assert_same_run(run_dir, reference_run)
    assert read_state(run_dir)["status"] == "finished"
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temp, no lock
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["resumed"][0]["after_epoch"] == 2


def test_sigint_saves_exits_130_and_resumes_exactly(children, reference_run):
    process, ready, go = children["sigint"]
    run_dir = ready.with_suffix("")
    wait_for(ready, process)
    process.send_signal(signal.SIGINT)
    go.touch()  # training goes on to the next step, where it stops
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130
    assert stderr.rstrip().endswith(f"Interrupted by SIGINT: {run_dir} is saved after epoch 1 "
                                    f"of 4. Resume with: digitnet train --resume {run_dir}")
    assert "Traceback" not in stderr
    state = read_state(run_dir)
    assert state["status"] == "interrupted" and state["message"] == "interrupted by SIGINT"
    assert state["epoch"] == 1 and saved_epochs(run_dir) == [1]

    env = {"DIGITNET_RUNS_DIR": str(run_dir.parent)}
    result = CliRunner(env=env).invoke(cli, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "Resuming after epoch 1 of 4" in result.output
    assert_same_run(run_dir, reference_run)


def interrupt_at(monkeypatch, epoch, step, signals=(signal.SIGTERM,)):
    """Make training send this process `signals` at `step` of `epoch` (1-based)."""
    import digitnet.training.train as train

    class SendSignal(keras.callbacks.Callback):
        def on_epoch_begin(self, index, logs=None):
            self.epoch = index + 1

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == epoch and batch == step:
                for signum in signals:
                    os.kill(os.getpid(), signum)

    original = train.fit
    monkeypatch.setattr(train, "fit", lambda *args, callbacks=(), **kwargs: original(
        *args, callbacks=(*callbacks, SendSignal()), **kwargs))


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory, tiny_data_dir):
    """A tiny run stopped by SIGTERM in epoch 4, through the CLI: (run_dir, CLI result)."""
    monkeypatch = pytest.MonkeyPatch()
    interrupt_at(monkeypatch, epoch=4, step=3)
    root = tmp_path_factory.mktemp("sigterm")
    sets = [part for text in RESUME_SETS for part in ("--set", text)]
    result = CliRunner(env={"DIGITNET_RUNS_DIR": str(root)}).invoke(
        cli, ["train", "--data-dir", str(tiny_data_dir), *sets, "--run-dir", str(root / "run")])
    monkeypatch.undo()
    return root / "run", result


def copy_run(run_dir, tmp_path):
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


def test_sigterm_exits_143_and_marks_the_run_interrupted(sigterm_run):
    run_dir, result = sigterm_run
    assert result.exit_code == 143
    assert result.output.endswith(f"Interrupted by SIGTERM: {run_dir} is saved after epoch 3 of "
                                  f"4. Resume with: digitnet train --resume {run_dir}\n")
    assert read_state(run_dir)["status"] == "interrupted" and run_status(run_dir) == "interrupted"
    # The last two checkpoints, and the best model as of each of them.
    best = {read_snapshot(run_dir, epoch).best_epoch for epoch in (2, 3)}
    assert set(saved_epochs(run_dir)) == {2, 3} | best


def test_a_pipeline_run_stopped_and_resumed_is_the_run_never_stopped(tmp_path, tiny_data_dir,
                                                                      monkeypatch):
    """training.augment.pipeline > 0: the bank's sha256 is in manifest.json; a resume on
    another bank (the preprocessing changed) is refused naming it; on the same bank the resumed
    run is bit-identical to one never stopped."""
    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path / "cache"))
    pipeline = "training.augment.pipeline=0.5"
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    reference.mkdir()
    run_dir.mkdir()
    with runs_root(tmp_path):
        train_and_evaluate(tiny_config(pipeline), reference, str(tiny_data_dir))
        stopping = pytest.MonkeyPatch()
        interrupt_at(stopping, epoch=3, step=3)
        with pytest.raises(TrainingInterrupted):
            train_and_evaluate(tiny_config(pipeline), run_dir, str(tiny_data_dir))
        stopping.undo()
        manifest = run_dir / layout.MANIFEST_FILE
        recorded = json.loads(manifest.read_text())
        bank = next((tmp_path / "cache").glob("preprocessed-*.npy"))
        digest = recorded["preprocessed_sha256"]
        assert digest == json.loads((reference / layout.MANIFEST_FILE).read_text())[
            "preprocessed_sha256"]
        manifest.write_text(json.dumps({**recorded, "preprocessed_sha256": "0" * 64}))
        state = (run_dir / layout.STATE_FILE).read_text()
        with pytest.raises(DigitnetError) as refused:
            resume(run_dir)
        assert (run_dir / layout.STATE_FILE).read_text() == state  # a refused resume: unchanged
        assert str(refused.value) == (
            f"resumed run {run_dir}: {bank} is not the preprocessed bank the run was trained on "
            f"(its sha256 is not preprocessed_sha256 in manifest.json: digitnet's "
            f"preprocessing changed since)")
        manifest.write_text(json.dumps(recorded))
        resume(run_dir)
    assert_same_run(run_dir, reference)
    assert json.loads(manifest.read_text())["preprocessed_sha256"] == digest


def test_corrupt_checkpoint_falls_back_to_the_previous(sigterm_run, tmp_path, reference_run,
                                                        capsys):
    run_dir = copy_run(sigterm_run[0], tmp_path)
    bad = checkpoint_file(run_dir, 3)
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated, as by a crash or a full disk

    with runs_root(tmp_path):
        resume(run_dir)

    err = capsys.readouterr().err
    assert f"Warning: {bad}: truncated or corrupt (its sha256 differs from epoch-0003.json); " \
           f"trying the previous checkpoint" in err
    assert_same_run(run_dir, reference_run)  # epoch 3 trained again; history cut back first


def test_no_usable_checkpoint_is_an_error_naming_the_file(sigterm_run, tmp_path):
    run_dir = copy_run(sigterm_run[0], tmp_path)
    for epoch in saved_epochs(run_dir):
        checkpoint_file(run_dir, epoch).write_bytes(b"garbage")
    with runs_root(tmp_path), pytest.raises(DigitnetError) as error:
        resume(run_dir)
    newest = checkpoint_file(run_dir, 3)
    assert str(error.value) == (
        f"{newest}: truncated or corrupt (its sha256 differs from epoch-0003.json), and no "
        f"earlier checkpoint is usable (delete {run_dir / 'checkpoints'} to start the run again)")
    assert read_state(run_dir)["status"] == "interrupted"  # a refused resume changes nothing


def test_a_second_signal_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with InterruptGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.signum == signal.SIGINT  # the first only sets the flag
        with pytest.raises(TrainingInterrupted) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler raises here
    assert stop.value.exit_code == 130
    with pytest.raises(TrainingInterrupted):
        guard.check()
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_disk_full_while_saving_keeps_the_previous_checkpoint(monkeypatch, tmp_path,
                                                              tiny_data_dir, reference_run):
    real_save = keras.Model.save

    def save(model, path, *args, **kwargs):
        if "epoch-0003" in str(path):
            path.write_bytes(b"PK\x03\x04 half a zip")  # the temporary file, half written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(model, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save)
    run_dir = tmp_path / "full"
    run_dir.mkdir()
    with runs_root(tmp_path), pytest.raises(DigitnetError) as error:
        train_and_evaluate(tiny_config(), run_dir, str(tiny_data_dir))
    assert str(error.value) == (
        f"{checkpoint_file(run_dir, 3)}: cannot write (No space left on device); the run is "
        f"kept at epoch 2 and can be resumed once there is room")
    state = read_state(run_dir)
    assert state["status"] == "failed" and state["epoch"] == 2
    assert saved_epochs(run_dir) == [1, 2] and read_snapshot(run_dir, 2).epoch == 2
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]

    monkeypatch.setattr(keras.Model, "save", real_save)  # space again
    with runs_root(tmp_path):
        resume(run_dir)
    assert_same_run(run_dir, reference_run)


def test_a_second_process_is_refused(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    with RunLock(run_dir):
        assert is_locked(run_dir)
        with pytest.raises(DigitnetError) as error:
            train_and_evaluate(tiny_config(), run_dir, str(tiny_data_dir))
    assert str(error.value) == (f"{run_dir}: another digitnet process (pid {os.getpid()}) is "
                                f"training in this run directory; wait for it or stop it")
    assert not is_locked(run_dir) and list(run_dir.iterdir()) == []


def test_a_model_change_is_refused_naming_what_differs(reference_run):
    with pytest.raises(DigitnetError) as error:
        resume_config(reference_run, overrides=("model.layers.1.units=64",),
                      shortcuts={"training.epochs": 6})
    assert str(error.value) == (
        f"resumed run {reference_run}: model.layers.1.units differs (run: 32, now: 64) (only "
        f"training.epochs, training.early_stopping_patience may change on resume)")


@pytest.mark.parametrize("args, message", [
    (["--run-dir", "elsewhere"], "Error: --run-dir: not allowed with --resume (a run resumes in "
                                 "its own directory)\n"),
    (["--seed", "3"], "Error: --resume {run}: training.seed differs (run: 0, now: 3) (only "
                      "training.epochs, training.early_stopping_patience may change on resume)\n"),
    (["--epochs", "3"], "Error: training.epochs: expected at least the 4 epochs {run} has "
                        "already trained, received 3\n"),
    ([], "Error: --resume {run}: already finished after 4 epochs (set training.epochs above 4 to "
         "train further)\n"),
])
def test_cli_resume_refusals(reference_run, args, message):
    result = CliRunner().invoke(cli, ["train", "--resume", str(reference_run), *args])
    assert result.exit_code == 1
    assert result.output == message.format(run=reference_run)


def test_resume_on_other_data_is_refused(reference_run, tmp_path):
    other = write_idx_dir(tmp_path / "other", train=60)
    run_dir = copy_run(reference_run, tmp_path)
    with pytest.raises(DigitnetError) as error:
        resume(run_dir, str(other), shortcuts={"training.epochs": 5})
    assert str(error.value) == (
        f"resumed run {run_dir}: {other / 'train-images-idx3-ubyte.gz'} is not the data the run "
        f"was trained on (its sha256 is not in manifest.json)")


def test_more_epochs_on_resume_rebuild_the_schedule(reference_run, tmp_path):
    run_dir = copy_run(reference_run, tmp_path)
    with runs_root(tmp_path):
        result = resume(run_dir, shortcuts={"training.epochs": 6},
                        overrides=("training.early_stopping_patience=0",))  # may change too
    assert result.metrics["epochs"] == 6
    rows = json.loads(checkpoint_file(run_dir, 6, ".json").read_text())["history"]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[3]["learning_rate"] == 0.0  # the original 4-epoch cosine ended at zero
    schedule = make_schedule(tiny_config("training.epochs=6").training, 8)
    # The step count goes on (40 after epoch 5) on the cosine rebuilt for 6 epochs.
    assert rows[4]["learning_rate"] == pytest.approx(float(schedule(40)), rel=1e-6)
    assert rows[4]["learning_rate"] > 0
    assert "epochs: 6" in (run_dir / "config.yaml").read_text()


def test_early_stopping_stops_records_and_is_kept_on_resume(tmp_path, tiny_data_dir, caplog):
    config = tiny_config("training.learning_rate=1e-9", "training.early_stopping_patience=1")
    run_dir = tmp_path / "early"
    run_dir.mkdir()
    with runs_root(tmp_path), caplog.at_level(logging.INFO, logger="digitnet"):
        result = train_and_evaluate(config, run_dir, str(tiny_data_dir))
    assert "Stopping early: val_accuracy has not improved for 1 epochs" in caplog.text
    assert result.metrics["epochs"] == 2 and result.metrics["stopped_early"] is True
    state = read_state(run_dir)
    assert state["status"] == "finished" and state["stopped_early"] is True
    with pytest.raises(DigitnetError, match="stopped early after epoch 2 .set "
                                            "training.early_stopping_patience larger, or 0"):
        resume_config(run_dir)


def test_run_that_finished_after_the_cli_check_is_not_trained_again(tiny_run, tmp_path,
                                                                    tiny_data_dir, monkeypatch):
    """The CLI checks the state before TensorFlow loads; the check is repeated under the lock."""
    import shutil

    from digitnet.config import from_dict, read_yaml
    from digitnet.errors import DigitnetError
    from digitnet.training.train import train_and_evaluate

    run_dir = tmp_path / "done"
    shutil.copytree(tiny_run, run_dir)
    monkeypatch.setenv("DIGITNET_RUNS_DIR", str(tmp_path))
    config = from_dict(read_yaml(run_dir / "config.yaml"))
    before = (run_dir / "metrics.json").read_text()
    with pytest.raises(DigitnetError, match=r"already finished after 2 epochs"):
        train_and_evaluate(config, run_dir, str(tiny_data_dir), resume=True)
    assert (run_dir / "metrics.json").read_text() == before
