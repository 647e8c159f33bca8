"""`digitnet sweep`: sweep files, a real PostgreSQL study shared by two workers, kill -9, Ctrl-C.

The PostgreSQL tests start a throwaway server (initdb + pg_ctl, as the postgres user when run as
root) on a free port under a temporary folder. They fail, never skip, where PostgreSQL is not
installed: .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner

from digitnet.cli import cli
from digitnet.config import load_config, to_dict
from digitnet.errors import InputError
from digitnet.evaluation.evaluate import evaluate
from digitnet.runs.listing import list_runs
from tests.conftest import REPO, write_idx_dir

CHILD = REPO / "tests" / "train_child.py"
TINY_SET = {"training.epochs": 2, "training.batch_size": 25, "training.jit_compile": False,
            "training.steps_per_execution": 2, "training.warmup_epochs": 0,
            "data.validation_size": 50}
SPACE = {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True},
         "model.layers.1.units": {"type": "int", "low": 8, "high": 64, "log": True},
         "training.optimizer": {"type": "choice", "values": ["adam", "adamw"]}}
HEARTBEAT = {"interval_seconds": 1, "grace_seconds": 6}  # a killed worker's trial: stale in 6 s


@pytest.fixture(scope="module")
def sweep_data(tmp_path_factory) -> Path:
    """A few hundred synthetic digits: trials of a second or two."""
    return write_idx_dir(tmp_path_factory.mktemp("sweep-mnist"), train=300, test=50)


def write_sweep(folder: Path, name: str, **changes) -> Path:
    body = {"name": name, "set": TINY_SET, "space": SPACE, "trials": 4,
            "sampler": {"seed": 1, "startup_trials": 2}, "heartbeat": HEARTBEAT, **changes}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def start(args: list[str], folder: Path, data: Path, log: str, child_env: dict | None = None):
    """`digitnet sweep ARGS` in a child process, without LiteRT exports (tested elsewhere)."""
    env = {**os.environ, "DIGITNET_RUNS_DIR": str(folder / "runs"),
           "DIGITNET_DATA_DIR": str(data), "TF_CPP_MIN_LOG_LEVEL": "3",
           "DIGITNET_TEST_NO_LITERT": "1", **(child_env or {})}
    with open(folder / log, "w") as out:
        return subprocess.Popen([sys.executable, str(CHILD), "sweep", *args], cwd=folder,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def finish(process, folder: Path, log: str, timeout: float = 900) -> str:
    """Wait for the child; its output (stdout and stderr)."""
    process.wait(timeout=timeout)
    return (folder / log).read_text()


def wait_for(path: Path, process, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the worker exited ({process.returncode}) before {path}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def load(study_name: str, storage: str):
    return optuna.load_study(study_name=study_name, storage=storage)


def by_state(study) -> dict:
    states: dict = {}
    for trial in study.get_trials():
        states.setdefault(trial.state.name, []).append(trial)
    return states


def check_runs(study, sweep_dir: Path) -> None:
    """Each trial that trained has its own run directory, named by its number and listed."""
    listed = {run["run"]: run for run in list_runs(sweep_dir)}
    for trial in study.get_trials():
        if trial.state.name in ("COMPLETE", "PRUNED"):
            run = listed[f"trial-{trial.number:04d}"]
            assert run["status"] == "finished"
            assert trial.user_attrs["run_dir"].endswith(run["run"])


# ---- PostgreSQL ---------------------------------------------------------------------------------


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install postgresql (.ci/run does)")
    return found[-1].parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1; its URL. Stopped and removed afterwards."""
    bin_dir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="digitnet-pg-"))  # not under pytest's 0700 tmp
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        subprocess.run(["chown", "postgres", str(folder)], check=True)
    data, port = folder / "data", free_port()
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres", "--no-sync"], check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                    "-l", str(folder / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m",
                        "immediate", "-w", "stop"], capture_output=True)
        subprocess.run(["rm", "-rf", str(folder)])


def test_two_workers_share_one_postgres_study(tmp_path, sweep_data, postgres_url):
    sweep = write_sweep(tmp_path, "shared", pruner={"type": "median", "startup_trials": 2})
    args = [str(sweep), "--storage", postgres_url, "--trials", "8"]
    workers = [start(args, tmp_path, sweep_data, f"worker{i}.log") for i in range(2)]
    outputs = [finish(worker, tmp_path, f"worker{i}.log") for i, worker in enumerate(workers)]
    assert [w.returncode for w in workers] == [0, 0], outputs

    study = load("shared", postgres_url)
    states = by_state(study)
    finished = states.get("COMPLETE", []) + states.get("PRUNED", [])
    assert len(finished) == 8 and not states.get("RUNNING") and not states.get("WAITING")
    numbers = sorted(t.number for t in finished)
    assert len(set(numbers)) == 8
    check_runs(study, tmp_path / "runs" / "shared")
    pids = {json.loads((Path(t.user_attrs["run_dir"]) / "state.json").read_text())["pid"]
            for t in finished}
    assert len(pids) == 2  # both workers trained trials of the one study
    best = max(states["COMPLETE"], key=lambda t: t.value)
    assert study.best_trial.number == best.number
    for output in outputs:  # each worker ends by naming the study's best, wherever it ran
        assert f"Best: trial {best.number}, val accuracy {best.value:.4f}" in output


def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(tmp_path, sweep_data,
                                                                postgres_url):
    sweep = write_sweep(tmp_path, "killed")
    args = [str(sweep), "--storage", postgres_url, "--trials", "3"]
    ready = tmp_path / "ready"
    doomed = start(args, tmp_path, sweep_data, "doomed.log",
                   {"DIGITNET_TEST_READY": str(ready), "DIGITNET_TEST_HOLD": "120"})
    survivor = start(args, tmp_path, sweep_data, "survivor.log")
    wait_for(ready, doomed)  # the doomed worker is in the middle of its first trial
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    output = finish(survivor, tmp_path, "survivor.log")
    assert survivor.returncode == 0, output

    study = load("killed", postgres_url)
    states = by_state(study)
    [failed] = states["FAIL"]
    assert failed.user_attrs["run_dir"].endswith(f"trial-{failed.number:04d}")
    [retry] = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") is not None]
    assert retry.system_attrs["failed_trial"] == failed.number
    assert retry.params == failed.params and retry.state.name in ("COMPLETE", "PRUNED")
    finished = states.get("COMPLETE", []) + states.get("PRUNED", [])
    assert len(finished) == 3 and not states.get("RUNNING") and not states.get("WAITING")
    check_runs(study, tmp_path / "runs" / "killed")
    assert f"retry of {failed.number}" in output


# ---- SQLite, the default ----------------------------------------------------------------------


def test_sqlite_default_with_two_jobs(tmp_path, sweep_data):
    sweep = write_sweep(tmp_path, "local", pruner={"type": "hyperband"})
    worker = start([str(sweep), "--jobs", "2"], tmp_path, sweep_data, "out.log")
    output = finish(worker, tmp_path, "out.log")
    assert worker.returncode == 0, output

    sweep_dir = tmp_path / "runs" / "local"
    study = load("local", f"sqlite:///{sweep_dir / 'study.db'}")
    finished = [t.number for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(finished) == [0, 1, 2, 3]
    check_runs(study, sweep_dir)
    best = study.best_trial
    lines = output.splitlines()
    assert lines[1].split()[:3] == ["TRIAL", "STATE", "VAL"]
    assert sorted(line.split()[0] for line in lines[2:6]) == ["0", "1", "2", "3"]
    assert lines[-1] == (f"Best: trial {best.number}, val accuracy {best.value:.4f} "
                         f"({sweep_dir}/trial-{best.number:04d}); config: {sweep_dir}/best.yaml; "
                         f"report: {sweep_dir}/sweep.html")
    # best.yaml is a config `digitnet train --config` takes: the best trial's, renamed.
    best_run = sweep_dir / f"trial-{best.number:04d}"
    recorded = to_dict(load_config(best_run / "config.yaml"))
    written = to_dict(load_config(sweep_dir / "best.yaml"))
    assert written["name"] == "local-best"
    recorded["data"]["source"] = ""  # the run records where its data was; best.yaml does not
    assert {**written, "name": "local"} == recorded
    page = (sweep_dir / "sweep.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 3
    assert "http://" not in page and "<script" not in page
    assert evaluate(best_run, "test", str(sweep_data))["examples"] == 50


def test_ctrl_c_then_the_same_command_continues(tmp_path, sweep_data):
    sweep = write_sweep(tmp_path, "stopped", set={**TINY_SET, "training.epochs": 3})
    args = [str(sweep), "--trials", "3"]
    ready = tmp_path / "ready"
    first = start(args, tmp_path, sweep_data, "first.log",
                  {"DIGITNET_TEST_READY": str(ready), "DIGITNET_TEST_FIT": "2",
                   "DIGITNET_TEST_EPOCH": "2", "DIGITNET_TEST_HOLD": "60"})
    wait_for(ready, first)  # trial 0 is done, trial 1 is in its second epoch
    first.send_signal(signal.SIGINT)
    (tmp_path / "ready.go").touch()
    output = finish(first, tmp_path, "first.log")
    assert first.returncode == 130, output
    assert output.splitlines()[-1] == ("Interrupted: 1 of 3 trials finished; the trials in "
                                       "progress are queued again. Continue with the same "
                                       "command.")

    sweep_dir = tmp_path / "runs" / "stopped"
    storage = f"sqlite:///{sweep_dir / 'study.db'}"
    before = {t.number: t for t in load("stopped", storage).trials}
    assert {n: t.state.name for n, t in before.items()} == {0: "COMPLETE", 1: "FAIL",
                                                           2: "WAITING"}
    assert before[2].params == before[1].params
    kept = (sweep_dir / "trial-0000" / "metrics.json").stat().st_mtime_ns

    second = start(args, tmp_path, sweep_data, "second.log")
    output = finish(second, tmp_path, "second.log")
    assert second.returncode == 0, output
    after = {t.number: t for t in load("stopped", storage).trials}
    assert {n: t.state.name for n, t in after.items()} == {0: "COMPLETE", 1: "FAIL",
                                                          2: "COMPLETE", 3: "COMPLETE"}
    assert after[2].params == before[1].params  # the interrupted trial, run again
    assert after[0].value == before[0].value
    assert (sweep_dir / "trial-0000" / "metrics.json").stat().st_mtime_ns == kept
    assert {run["run"]: run["status"] for run in list_runs(sweep_dir)} == {
        "trial-0000": "finished", "trial-0001": "interrupted", "trial-0002": "finished",
        "trial-0003": "finished"}


# ---- bad sweep files ----------------------------------------------------------------------------


BAD_FILES = [
    ({"spcae": {}}, "spcae: unknown key (expected one of name, base, set, space, objective, "
                    "trials, sampler, pruner, heartbeat)"),
    ({"space": {}}, "space: expected a mapping of config keys to {type: float|int|choice, ...}, "
                    "received {}"),
    ({"space": {"training.learnig_rate": {"type": "float", "low": 0.001, "high": 0.01}}},
     "space.training.learnig_rate: the value 0.001 gives a bad config (training.learnig_rate: "
     "unknown key (expected one of epochs, batch_size, optimizer, learning_rate, schedule, "
     "warmup_epochs, weight_decay, label_smoothing, seed, jit_compile, steps_per_execution, "
     "early_stopping_patience, augment, outliers, backend))"),
    ({"space": {"model.layers.5.units": {"type": "int", "low": 8, "high": 64}}},
     "space.model.layers.5.units: the value 8 gives a bad config (model.layers.5: expected a "
     "list index in 0..2, received '5')"),
    ({"space": {"training.learning_rate": {"type": "float", "low": 0.01, "high": 20}}},
     "space.training.learning_rate: the value 20.0 gives a bad config (training.learning_rate: "
     "expected a number in (0, 10), received 20.0)"),
    ({"space": {"training.learning_rate": {"type": "float", "low": 0.1, "high": 0.01}}},
     "space.training.learning_rate.high: expected a number above low=0.1, received 0.01"),
    ({"space": {"training.learning_rate": {"type": "float", "low": 0, "high": 0.1, "log": True}}},
     "space.training.learning_rate.low: expected a number > 0 with log: true, received 0.0"),
    ({"space": {"training.batch_size": {"type": "int", "low": 16.5, "high": 64}}},
     "space.training.batch_size.low: expected an integer, received 16.5"),
    ({"space": {"training.batch_size": {"type": "float", "low": 16, "high": 64}}},
     "space.training.batch_size: the value 16.0 gives a bad config (training.batch_size: "
     "expected an integer, received 16.0)"),
    ({"space": {"training.optimizer": {"type": "choice", "values": []}}},
     "space.training.optimizer.values: expected a non-empty list, received []"),
    ({"space": {"training.optimizer": {"type": "choice", "values": ["adam", "lamb"]}}},
     "space.training.optimizer: the value 'lamb' gives a bad config (training.optimizer: "
     "expected one of ('adam', 'adamw', 'sgd', 'rmsprop'), received 'lamb')"),
    ({"space": {"training.seed": {"type": "range", "low": 1, "high": 2}}},
     "space.training.seed.type: expected one of ('float', 'int', 'choice'), received 'range'"),
    ({"space": {"training.seed": {"type": "int", "low": 1, "hihg": 2}}},
     "space.training.seed.hihg: unknown key (expected one of type, low, high, log, step, "
     "values)"),
    ({"objective": {"metric": "test_accuracy"}},
     "objective.metric: expected one of ('val_accuracy',), received 'test_accuracy'"),
    ({"sampler": {"type": "grid"}},
     "sampler.type: expected one of ('tpe', 'random'), received 'grid'"),
    ({"pruner": {"type": "successive"}},
     "pruner.type: expected one of ('none', 'median', 'hyperband'), received 'successive'"),
    ({"trials": 0}, "trials: expected an integer >= 1, received 0"),
    ({"base": "missing.yaml"}, "base {folder}/missing.yaml: {folder}/missing.yaml: config file "
                               "not found"),
    ({"set": {"training.epochs": 0}}, "set: training.epochs: expected an integer in "
                                      "1..1000000, received 0"),
    ({"name": "a/b"}, "name: expected a folder name of letters, digits, '.', '_' and '-', "
                      "received 'a/b'"),
]


@pytest.mark.parametrize(("change", "message"), BAD_FILES, ids=[m[:40] for _, m in BAD_FILES])
def test_bad_sweep_file_is_one_line_naming_file_and_key(tmp_path, runs_dir, change, message):
    body = {"space": SPACE, **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    result = CliRunner().invoke(cli, ["sweep", str(path)])
    assert result.exit_code == 1
    assert result.output == f"Error: {path}: {message.replace('{folder}', str(tmp_path))}\n"
    assert not runs_dir.exists()  # nothing written for a file that is refused


@pytest.mark.parametrize(("section", "values", "message"), [
    ("Objective", {"max_train_seconds": -1},
     "objective.max_train_seconds: expected a number >= 0, received -1"),
    ("Sampler", {"startup_trials": 0}, "sampler.startup_trials: expected an integer >= 1, "
                                       "received 0"),
    ("Pruner", {"reduction_factor": 1}, "pruner.reduction_factor: expected an integer >= 2, "
                                        "received 1"),
    ("Heartbeat", {"grace_seconds": 5}, "heartbeat.grace_seconds: expected an integer above "
                                        "interval_seconds=10, received 5"),
])
def test_sweep_sections_check_themselves_when_made(section, values, message):
    """As the run config's sections do: a section built in Python is checked too."""
    from digitnet.config import ConfigError
    from digitnet.sweep import spec

    with pytest.raises(ConfigError) as error:
        getattr(spec, section)(**values)
    assert str(error.value) == message


@pytest.mark.parametrize(("values", "message"), [
    ({"name": "a/b"}, "name: expected a folder name of letters, digits, '.', '_' and '-', "
                      "received 'a/b'"),
    ({"trials": 0}, "trials: expected an integer >= 1, received 0"),
    ({"set": ["training.epochs=1"]}, "set: expected a mapping of config keys to values, received "
                                     "['training.epochs=1']"),
    ({"space": {}}, "space: expected a mapping of config keys to {type: float|int|choice, ...}, "
                    "received {}"),
])
def test_sweep_spec_checks_itself_when_made(values, message):
    """A SweepSpec built in Python is refused with the sweep file's own words."""
    from digitnet.config import ConfigError
    from digitnet.sweep.spec import Param, SweepSpec

    good = {"name": "s", "space": {"training.seed": Param("int", 0, 5)}}
    assert SweepSpec(**good).trials >= 1
    with pytest.raises(ConfigError) as error:
        SweepSpec(**{**good, **values})
    assert str(error.value) == message


def test_sweep_file_that_is_not_yaml(tmp_path, runs_dir):
    path = tmp_path / "bad.yaml"
    path.write_text("space: [unclosed\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["sweep", str(path)])
    assert (result.exit_code, result.output) == (1, f"Error: {path}: invalid YAML at line 2\n")


@pytest.mark.parametrize(("body", "args", "message"), [
    ({"trials": 0}, [], "{path}: trials: expected an integer >= 1, received 0"),
    ({}, ["--study", "a/b"], "--study 'a/b': expected a name of letters, digits, '.', '_' and '-' "
                             "(it names the folder of its trials)"),
])
def test_a_bad_sweep_file_or_study_is_refused_before_importing_tensorflow(tmp_path, runs_dir,
                                                                          body, args, message):
    """Importing TensorFlow, Keras and JAX takes seconds: a refusal comes before it."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "space": SPACE, **body}), encoding="utf-8")
    code = ("import sys; from digitnet.cli import main\n"
            f"sys.argv = ['digitnet', 'sweep', {str(path)!r}, *{args!r}]\n"
            "try:\n    main()\nexcept SystemExit as stop:\n    code = stop.code\n"
            "heavy = {'tensorflow', 'keras', 'jax'} & set(sys.modules)\n"
            "assert not heavy, heavy\n"
            "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (
        1, f"Error: {message.format(path=path)}\n")
    assert not runs_dir.exists()


def test_shipped_sweep_files_are_valid():
    from digitnet.sweep.spec import load_sweep

    for path in sorted((REPO / "configs" / "sweeps").glob("*.yaml")):
        spec = load_sweep(path)
        assert spec.space and spec.trials >= 10, path
    assert {p.stem for p in (REPO / "configs" / "sweeps").glob("*.yaml")} >= {"default-mlp",
                                                                              "cnn"}


def test_a_study_only_continues_the_same_search(tmp_path, runs_dir):
    from digitnet.sweep.spec import load_sweep
    from digitnet.sweep.study import open_storage, open_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = load_sweep(write_sweep(tmp_path, "same"))
    open_study(first, open_storage(storage, first), "same")
    widened = dict(SPACE, **{"training.seed": {"type": "int", "low": 0, "high": 3}})
    second = load_sweep(write_sweep(tmp_path, "same", space=widened))
    with pytest.raises(InputError, match=r"^study same: made for another search \(this sweep "
                                         r"file's space differ\); give this search a study name "
                                         r"of its own$"):
        open_study(second, open_storage(storage, second), "same")
    more = load_sweep(write_sweep(tmp_path, "same"), trials=9)  # the same search, more of it
    assert open_study(more, open_storage(storage, more), "same").study_name == "same"


@pytest.mark.parametrize(("url", "reason"), [
    ("postgresql://someone:secret@127.0.0.1:1/none", "connection"),
    ("nosuchdb://host/x", "Can't load plugin: sqlalchemy.dialects:nosuchdb"),
])
def test_unusable_storage_is_one_line_without_the_password(tmp_path, runs_dir, url, reason):
    result = CliRunner().invoke(cli, ["sweep", str(write_sweep(tmp_path, "nowhere")),
                                      "--storage", url])
    shown = url.replace(":secret@", ":***@")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"Error: --storage {shown}: cannot open the study "
                                    f"database (")
    assert reason in result.output and "secret" not in result.output
    assert not (runs_dir / "nowhere").exists()


def test_a_signal_in_a_nested_guard_reaches_the_outer_one():
    # A Ctrl-C that lands after training's last check (while the trial is being tested) must
    # still stop the sweep around it.
    from digitnet.training.interrupt import InterruptGuard, TrainingInterrupted

    with InterruptGuard() as outer:
        with InterruptGuard():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs between bytecodes
        with pytest.raises(TrainingInterrupted):
            outer.check()
