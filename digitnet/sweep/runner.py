"""`digitnet sweep`: start the workers, print the table, write best.yaml and the report page."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from digitnet.errors import DigitnetError
from digitnet.runs.layout import make_dir, runs_root
from digitnet.sweep.results import best_trial, print_header, write_best_config
from digitnet.sweep.spec import SweepSpec, load_sweep, study_name_of
from digitnet.sweep.study import (
    default_storage,
    open_storage,
    open_study,
    progress,
    redact,
)
from digitnet.sweep.worker import work
from digitnet.training.interrupt import TrainingInterrupted
from digitnet.training.train import remove_if_empty

log = logging.getLogger(__name__)
CHILD_WAIT_SECONDS = 600  # after Ctrl-C a child finishes its step and queues its trial


@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path
    progress: dict  # finished, complete, pruned, fail, ... of the study
    best: dict | None  # number, value, params, run_dir of the best trial
    best_config: Path | None
    report: Path


def run_sweep(sweep_file: str | Path, trials: int | None = None, jobs: int = 1,
              storage: str | None = None, study_name: str | None = None,
              data_dir: str | None = None, spec: SweepSpec | None = None) -> SweepResult:
    """Run (or continue) the sweep's study until it has all its trials, then write its results.

    Args:
      sweep_file: the sweep YAML.
      trials: trials in the whole study, instead of the file's `trials`.
      jobs: worker processes on this machine (this one and jobs - 1 children).
      storage: an SQLAlchemy URL shared by many machines; None for SWEEP_DIR/study.db.
      study_name: the study to create or continue; None for the sweep's name.
      data_dir: --data-dir for every trial.
      spec: the sweep file already loaded by load_sweep(sweep_file, trials); None to load it.

    Returns:
      The sweep directory, the study's progress, the best trial, best.yaml and the report.

    Raises:
      TrainingInterrupted: Ctrl-C or SIGTERM; the trials in progress are queued again and
        running the same command continues the study.
      DigitnetError: a bad sweep file, storage or data, or a study made for another search.
    """
    sweep_file = Path(sweep_file)
    spec = spec or load_sweep(sweep_file, trials)
    study_name = study_name_of(spec, study_name)
    sweep_dir = runs_root() / study_name  # one study's trials: numbers never clash
    make_dir(sweep_dir, "the sweep folder")  # a read-only runs/: one line, no traceback
    url = storage or default_storage(sweep_dir)
    try:
        study = open_study(spec, open_storage(url, spec), study_name)  # created once, here
    except DigitnetError:
        remove_if_empty(sweep_dir)  # a refused storage or study leaves nothing behind
        raise
    announce(spec, study, sweep_dir, url, jobs)
    children = [start_child(sweep_file, trials, sweep_dir, url, study_name, data_dir)
                for _ in range(jobs - 1)]
    try:
        work(spec, sweep_dir, url, study_name, data_dir)
    except TrainingInterrupted as stop:
        stop_children(children, stop.signum)
        write_results(spec, study, sweep_dir, sweep_file, url)
        state = progress(study, spec.trials)
        raise TrainingInterrupted(stop.signum, f"Interrupted: {state['finished']} of "
                                  f"{spec.trials} trials finished; the trials in progress are "
                                  f"queued again. Continue with the same command.") from None
    except BaseException:
        stop_children(children, signal.SIGTERM)
        raise
    failed = [code for code in wait_children(children) if code not in (0, None)]
    result = write_results(spec, study, sweep_dir, sweep_file, url)
    if failed:
        raise DigitnetError(f"{len(failed)} of {jobs - 1} worker processes failed (exit "
                            f"status {failed[0]}); run the same command again to continue")
    return result


def announce(spec, study, sweep_dir: Path, url: str, jobs: int) -> None:
    state = progress(study, spec.trials)
    already = f"; {state['finished']} finished already" if state["finished"] else ""
    workers = f" with {jobs} workers" if jobs > 1 else ""
    log.info("Sweep %s: study %s in %s, %d trials%s%s; runs in %s", spec.name, study.study_name,
             redact(url), spec.trials, already, workers, sweep_dir)
    print_header(spec)


def start_child(sweep_file: Path, trials, sweep_dir: Path, url: str, study_name: str,
                data_dir) -> subprocess.Popen:
    """Another worker process on the same study. Its own session: Ctrl-C reaches it once,
    forwarded by this process, not twice (a second signal stops at once)."""
    args = {"sweep_file": str(sweep_file), "trials": trials, "sweep_dir": str(sweep_dir),
            "storage": url, "study": study_name, "data_dir": data_dir}
    return subprocess.Popen([sys.executable, "-m", "digitnet.sweep.child", json.dumps(args)],
                            start_new_session=True, env=os.environ.copy())


def stop_children(children: list, signum: int) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signum)
    wait_children(children)


def wait_children(children: list) -> list:
    """Wait for every child; their exit statuses."""
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout=CHILD_WAIT_SECONDS))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    return codes


def write_results(spec, study, sweep_dir: Path, sweep_file: Path, url: str) -> SweepResult:
    """best.yaml and sweep.html from the whole study."""
    from digitnet.sweep.report import write_sweep_report

    best_config = write_best_config(spec, study, sweep_dir)
    report = write_sweep_report(spec, study, sweep_dir, sweep_file, redact(url))
    best = best_trial(study)
    summary = None if best is None else {
        "number": best.number, "value": best.value, "params": best.params,
        "run_dir": best.user_attrs.get("run_dir")}
    return SweepResult(sweep_dir, progress(study, spec.trials), summary, best_config, report)
