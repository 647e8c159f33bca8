"""Every promise holds under abuse, beyond image files: run files edited by hand, read-only and
unlistable folders, named pipes as model files, a database that never answers, hosts and ports
that cannot work. Each is refused with one exact `Error:` line, no traceback and no hang."""

import errno
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from digitnet.cli import cli
from digitnet.errors import DigitnetError, first_line
from tests.test_hostile_inputs import assert_one_error
from tests.test_predict import digit_png

DIGITNET = [sys.executable, "-m", "digitnet"]


def run(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


# ---- run files edited by hand -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[]\n", "1\n"])
def test_evaluate_takes_a_run_whose_metrics_json_is_not_an_object(run_copy, tiny_data_dir, text):
    (run_copy / "metrics.json").write_text(text)
    result = run("evaluate", run_copy, "--data-dir", tiny_data_dir)
    assert result.exit_code == 0, result.output
    assert f"Saved to {run_copy / 'evaluation-test.json'}" in result.output


def test_resume_names_a_manifest_that_is_not_an_object(run_copy):
    (run_copy / "manifest.json").write_text("[]\n")
    state = (run_copy / "state.json").read_text()
    assert_one_error(run("train", "-q", "--resume", run_copy, "--epochs", "3"),
                     f"{run_copy / 'manifest.json'}: expected a JSON object, received list")
    assert (run_copy / "state.json").read_text() == state  # the finished run is left as it was


def test_resume_without_any_checkpoint_left_does_not_start_the_run_over(run_copy):
    """A finished run whose checkpoints/ was deleted: resuming it would have trained from
    scratch over its models, reporting "Resuming after epoch 0"."""
    import shutil

    shutil.rmtree(run_copy / "checkpoints")
    before = {name: (run_copy / name).read_bytes() for name in ("model-best.keras",
                                                                "state.json", "metrics.json")}
    assert_one_error(run("train", "-q", "--resume", run_copy, "--epochs", "3"),
                     f"--resume {run_copy}: state.json records 2 trained epochs but checkpoints/ "
                     f"holds no checkpoint to continue from (train it again in a new run "
                     f"directory)")
    assert {name: (run_copy / name).read_bytes() for name in before} == before


def test_a_new_run_never_trains_over_a_run_started_there_meanwhile(run_copy, tiny_data_dir,
                                                                  runs_dir):
    """Two `digitnet train --run-dir X` both find X empty; the second takes the lock once the
    first is done. Under the lock it finds the first run and leaves it as it was."""
    from digitnet.config import load_config
    from digitnet.training.train import train_and_evaluate
    from tests.conftest import TINY_OVERRIDES

    before = {path.name: path.read_bytes() for path in run_copy.iterdir() if path.is_file()}
    with pytest.raises(DigitnetError) as error:
        train_and_evaluate(load_config(None, TINY_OVERRIDES), run_copy, str(tiny_data_dir))
    assert str(error.value) == (f"run directory {run_copy}: already holds a run (started there "
                                f"meanwhile); choose a new directory, or resume the run in it")
    after = {path.name: path.read_bytes() for path in run_copy.iterdir() if path.is_file()}
    assert after == before


def test_resume_with_another_model_names_its_first_differences_in_order(run_copy, tmp_path):
    """Another model differs in dozens of keys: the first three in the run's order, then how
    many more (every one of them made a line of thousands of characters, cut at the limit, and
    a key in both configs took its place from the new one)."""
    import re

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"model": {"layers": [
        {"type": "flatten"}, {"type": "dense", "units": 32}, {"type": "dropout"},
        {"type": "dense", "units": 10, "activation": "softmax"}]}}))
    result = run("train", "-q", "--resume", run_copy, "--config", other, "--epochs", "3")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert re.fullmatch(
        rf"Error: --resume {re.escape(str(run_copy))}: name differs \(run: 'default', now: "
        r"'other'\); model\.layers\.1\.units differs \(run: 256, now: 32\); model\.layers\.2\."
        r"type differs \(run: 'dense', now: 'dropout'\); and \d+ more \(only training\.epochs, "
        r"training\.early_stopping_patience may change on resume\)\n", result.output)


# ---- folders that cannot be written or listed ---------------------------------------------------


def read_only_below(folder: Path, monkeypatch) -> None:
    """Path.mkdir raises EROFS for `folder` and anything below it, as a read-only mount does."""
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == folder or folder in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_a_read_only_run_is_one_line_for_evaluate_and_report(run_copy, tiny_data_dir, monkeypatch,
                                                             command):
    read_only_below(run_copy, monkeypatch)
    result = run(command, run_copy, "--data-dir", tiny_data_dir)  # its data, whatever the env says
    message = f"{run_copy / 'plots'}: cannot create the plots folder (Read-only file system)"
    assert result.exit_code == 1 and result.output.splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in result.output and not (run_copy / "evaluation-test.json").exists()


def test_sweep_into_a_runs_folder_below_a_file_is_one_line(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    monkeypatch.setenv("DIGITNET_RUNS_DIR", str(afile))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"space": {"training.learning_rate": {
        "type": "float", "low": 1e-3, "high": 1e-2}}}))
    assert_one_error(run("sweep", sweep),
                     f"{afile / 's'}: cannot create the sweep folder (Not a directory)")


def test_runs_names_a_folder_it_cannot_list(tmp_path, monkeypatch):
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == tmp_path:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert_one_error(run("runs", tmp_path), f"{tmp_path}: cannot list the folder "
                                            f"(Permission denied)")


def test_runs_skips_a_folder_it_cannot_look_into(tiny_run, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_run, tmp_path / "good")
    (tmp_path / "closed").mkdir()
    real_exists = Path.exists

    def exists(self, *args, **kwargs):
        if self.parent == tmp_path / "closed":
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    result = run("runs", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert [listed["run"] for listed in json.loads(result.output)] == ["good"]


# ---- model files that are not regular files -----------------------------------------------------


@pytest.mark.parametrize("name", ["model.tflite", "model.onnx", "model.keras"])
def test_a_named_pipe_as_model_is_refused_never_read(tmp_path, name):
    """Opening a FIFO waits for a writer that never comes: refused before it is opened."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    digit_png(tmp_path / "seven.png")
    result = subprocess.run([*DIGITNET, "predict", str(tmp_path / "seven.png"), "--model",
                             str(fifo)], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"Error: {fifo}: model file is a named pipe, not a regular file\n")


def test_predict_from_a_closed_standard_input_is_one_line(tiny_run):
    """`digitnet predict - <&-`: Python starts with sys.stdin None."""
    result = subprocess.run([*DIGITNET, "predict", "-", "--model", str(tiny_run)],
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: os.close(0))  # noqa: PLW1509 (closes fd 0 only)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "Error: -: standard input is closed (expected paths on it, one a line)\n")


def test_a_named_pipe_as_state_json_is_never_read(run_copy, tmp_path):
    """`digitnet runs` and `--resume` opened it and waited for a writer forever."""
    (run_copy / "state.json").unlink()
    os.mkfifo(run_copy / "state.json")
    listed = subprocess.run([*DIGITNET, "runs", str(run_copy.parent), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [run["status"] for run in json.loads(listed.stdout)] == ["broken"]
    resumed = subprocess.run([*DIGITNET, "train", "-q", "--resume", str(run_copy), "--epochs",
                              "3"], capture_output=True, text=True, timeout=300)
    assert (resumed.returncode, resumed.stdout, resumed.stderr) == (
        1, "", f"Error: {run_copy / 'state.json'}: is a named pipe, not a regular file\n")


# ---- a database that never answers --------------------------------------------------------------


def test_a_storage_server_that_never_answers_is_given_up(tmp_path, monkeypatch):
    """A port that accepts connections but never speaks PostgreSQL: refused within the connect
    timeout, not waited for forever."""
    from digitnet.sweep import study
    from digitnet.sweep.spec import load_sweep

    monkeypatch.setattr(study, "CONNECT_SECONDS", 1, raising=False)  # old code: none
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"space": {"training.learning_rate": {
        "type": "float", "low": 1e-3, "high": 1e-2}}}))
    spec = load_sweep(sweep)
    outcome = []
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens; never accepts or answers
        url = f"postgresql://someone:secret@127.0.0.1:{silent.getsockname()[1]}/none"

        def connect():
            try:
                study.open_storage(url, spec)
            except DigitnetError as error:
                outcome.append(str(error))

        worker = threading.Thread(target=connect, daemon=True)
        worker.start()
        worker.join(60)
    assert not worker.is_alive(), "open_storage is still waiting for the server"
    shown = url.replace(":secret@", ":***@")
    assert outcome and outcome[0].startswith(f"storage {shown}: cannot open the study database")
    assert "timeout" in outcome[0]


def test_a_connect_timeout_in_the_url_is_kept():
    from digitnet.sweep.study import CONNECT_SECONDS, engine_options

    assert engine_options("postgresql://u@h/db")["connect_args"] == {
        "connect_timeout": CONNECT_SECONDS}
    assert "connect_args" not in engine_options("postgresql://u@h/db?connect_timeout=60")
    assert engine_options("sqlite:///x.db") == {"connect_args": {"timeout": 60}}


# ---- hosts and ports that cannot work -----------------------------------------------------------


@pytest.mark.parametrize("host", ["", "  "])
def test_serve_refuses_an_empty_host(tiny_run, monkeypatch, host):
    """An empty host would listen on every interface, unasked, under a URL that does not work."""
    import digitnet.serving.server as server

    def load(*args):
        raise AssertionError("the model was loaded before the host was checked")

    monkeypatch.setattr(server, "load_served_model", load)
    assert_one_error(run("serve", tiny_run, "--host", host, "--port", "0"),
                     f"--host {host!r}: expected an address or a host name (127.0.0.1: this "
                     f"machine only; 0.0.0.0: every interface)")


# 5000 digits: int() refuses a string of more than 4300 digits with a ValueError (a traceback)
def test_serve_refuses_an_empty_host_before_importing_the_server(tmp_path):
    """cv2, uvicorn and fastapi take about a second to import: an empty host is refused first."""
    code = ("import sys; from digitnet.cli import main\n"
            "sys.argv = ['digitnet', 'serve', '--host', '']\n"
            "try:\n    main()\nexcept SystemExit as stop:\n    code = stop.code\n"
            "heavy = {'cv2', 'uvicorn', 'fastapi', 'tensorflow'} & set(sys.modules)\n"
            "assert not heavy, heavy\n"
            "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "DIGITNET_RUNS_DIR": str(tmp_path)})
    assert (result.returncode, result.stdout + result.stderr) == (
        1, "Error: --host '': expected an address or a host name (127.0.0.1: this machine only; "
           "0.0.0.0: every interface)\n")


@pytest.mark.parametrize("coordinator", ["127.0.0.1:0", "127.0.0.1:65536", "host:99999",
                                         "host:" + "9" * 5000])
def test_a_coordinator_port_out_of_range_is_refused(coordinator):
    from digitnet.training.cluster import make_cluster

    with pytest.raises(DigitnetError) as error:
        make_cluster(coordinator, 2, 0)
    assert str(error.value) == f"coordinator {coordinator}: expected a port in 1..65535"


# ---- words ---------------------------------------------------------------------------------------


def test_a_finished_run_of_one_epoch_says_epoch(tmp_path):
    from digitnet.config import load_config
    from digitnet.training.resume import check_more_to_do

    (tmp_path / "state.json").write_text(json.dumps({"status": "finished", "epoch": 1}))
    config = load_config(None, ("training.epochs=1", "training.warmup_epochs=0"))
    with pytest.raises(DigitnetError) as error:
        check_more_to_do(tmp_path, config, config)
    assert str(error.value) == (f"resumed run {tmp_path}: already finished after 1 epoch (set "
                                f"training.epochs above 1 to train further)")


def test_a_first_line_that_introduces_cut_lines_keeps_whole_sentences():
    error = ValueError("A total of 2 objects could not be loaded. Example error message for "
                       "object <Dense name=dense_4, built=True>:\n\nLayer 'dense_4' expected 2 "
                       "variables, but received 0 variables during loading.")
    assert first_line(error) == "A total of 2 objects could not be loaded."


def test_train_help_shows_the_line_continuation_of_its_example():
    result = run("train", "--help")
    assert "--coordinator 10.0.0.1:1234 \\\n        --num-processes 2 --process-id 0" in \
        result.output


# ---- the preprocessing pool at exit ------------------------------------------------------------

POOL_AT_EXIT = """
import sys, threading
import digitnet.images.batch as batch  # imports concurrent.futures.process: its exit hook
from digitnet import cli

seen = sys.argv[1]
batch.available_cpus = lambda: 2  # a pool, whatever this machine has
started = []
make_pool = batch.worker_pool
batch.worker_pool = lambda workers: started.append(workers) or make_pool(workers)


def seen_at_exit():  # registered after concurrent.futures' hook: runs before it
    with open(seen, "w") as out:
        out.write(f"pool started: {bool(started)}, pools left: {len(batch._pools)}")


threading._register_atexit(seen_at_exit)
sys.argv = ["digitnet", "predict", *sys.argv[2:]]
cli.main()
"""


def test_predict_stops_its_pool_before_the_interpreter_exit_hooks(tiny_run, tmp_path):
    """concurrent.futures' exit hook on Python 3.11 races with a pool's own thread (a busy pool
    at Ctrl-C then printed "Exception ignored in: <module 'threading'> ... Bad file
    descriptor"): `digitnet` stops its pools itself before any exit hook runs."""
    images = tmp_path / "images"
    images.mkdir()
    digit_png(images / "0.png")
    for index in range(1, 70):  # enough for the pool (PARALLEL_MIN)
        (images / f"{index}.png").write_bytes((images / "0.png").read_bytes())
    seen = tmp_path / "seen.txt"
    result = subprocess.run([sys.executable, "-c", POOL_AT_EXIT, str(seen), str(images),
                             "--model", str(tiny_run)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert seen.read_text() == "pool started: True, pools left: 0"


# ---- empty paths and process counts -------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["train", "-q", "--run-dir", ""], "--run-dir '': expected a folder path"),
    (["runs", ""], "DIR '': expected a folder path"),
    (["report", ""], "RUN_DIR '': expected a folder path"),
    (["serve", "", "--port", "0"], "MODEL '': expected a run folder or model file path"),
    (["predict", "--save-preprocessed", "", "digit.png"], "--save-preprocessed '': expected a "
                                                          "folder path"),
    (["export", "--format", "litert", "--output", ""], "--output '': expected a file or folder "
                                                       "path"),
])
def test_an_empty_path_is_refused_not_taken_as_the_current_folder(tmp_path, monkeypatch, args,
                                                                  message):
    """'' meant the current folder: `runs ''` listed it, `train --run-dir ''` trained into it."""
    monkeypatch.chdir(tmp_path)
    assert_one_error(run(*args), f"{message}, received an empty string")
    assert list(tmp_path.iterdir()) == []


def test_sweep_jobs_is_bounded_like_serve_workers(tmp_path):
    """A typo such as --jobs 1000 started a thousand TensorFlow processes."""
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("name: s\n")
    for command, option in [("sweep", "--jobs"), ("serve", "--workers")]:
        args = [sweep_file] if command == "sweep" else []
        assert_one_error(run(command, *args, option, "1000"),
                         f"Invalid value for '{option}': 1000 is not in the range 1<=x<=64. "
                         f"Try 'digitnet {command} --help'.", code=2)


def test_save_preprocessed_never_leaves_a_half_png(tiny_run, tmp_path, monkeypatch):
    """A write cut short (a full disk) left a partial PNG in place of the good one written
    before; now the good one stays, no temporary file remains, and a whole write is complete."""
    from PIL import Image

    image = digit_png(tmp_path / "seven.png", ink=255, paper=0)
    out = tmp_path / "seen"
    args = ["predict", image, "--model", tiny_run, "--save-preprocessed", out]
    assert run(*args).exit_code == 0
    good = (out / "seven.png").read_bytes()
    with Image.open(out / "seven.png") as saved:
        saved.load()  # a truncated PNG fails here
        assert (saved.size, saved.mode) == ((28, 28), "L")
    real_save = Image.Image.save

    def save_half(picture, target, *args, **kwargs):
        real_save(picture, target, *args, **kwargs)
        Path(target).write_bytes(Path(target).read_bytes()[:40])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", save_half)
    assert_one_error(run(*args), f"{out / 'seven.png'}: cannot write (No space left on device)")
    assert (out / "seven.png").read_bytes() == good
    assert sorted(path.name for path in out.iterdir()) == ["seven.png"]
