"""A worker: run the study's trials one after another until the study has all of its trials.

Any number of workers, in this process, in child processes (--jobs) or on other machines
(--storage), share one study: each asks the storage for the next trial, so every trial number
is taken once. A worker with nothing left to start stays until the trials still running
elsewhere finish, or have their heartbeat go stale and are queued again (then it runs them).

`digitnet sweep --jobs K` starts the extra workers with `python -m digitnet.sweep.child`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import optuna

from digitnet.errors import DigitnetError
from digitnet.sweep.objective import STOP_ERRORS, Objective, TrialFailed
from digitnet.sweep.results import print_row
from digitnet.sweep.spec import SweepSpec, load_sweep
from digitnet.sweep.study import (
    SURPLUS_ATTR,
    open_storage,
    open_study,
    progress,
)
from digitnet.training.interrupt import InterruptGuard, TrainingInterrupted

log = logging.getLogger(__name__)


def work(spec: SweepSpec, sweep_dir: Path, storage_url: str, study_name: str,
         data_dir: str | None) -> None:
    """Run trials of the study until it is done.

    Raises:
      TrainingInterrupted: SIGINT or SIGTERM; the trial in progress is queued again.
      DigitnetError: the data or the sweep directory failed (the trial is queued again), or the
        storage cannot be opened.
    """
    study = open_study(spec, open_storage(storage_url, spec), study_name)
    with InterruptGuard() as guard:
        objective = Objective(spec, sweep_dir, data_dir, guard)
        while not progress(study, spec.trials)["done"]:
            guard.check()
            if not something_to_start(study, spec.trials):
                wait_for_others(study, spec.heartbeat.interval_seconds, guard)
                continue
            run_one(study, objective)


def something_to_start(study, places: int) -> bool:
    """Whether a trial is queued, or the study has places no trial has taken yet."""
    state = progress(study, places)
    return state["waiting"] > 0 or state["finished"] + state["running"] < places


def wait_for_others(study, seconds: float, guard: InterruptGuard) -> None:
    """Sleep a heartbeat, then fail (and queue again) trials whose worker has gone silent."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        guard.check()
        time.sleep(0.2)
    optuna.storages.fail_stale_trials(study)


def run_one(study, objective: Objective) -> None:
    """Ask for one trial and run it; queue it again if the sweep has to stop."""
    objective.trial_number = None
    try:
        study.optimize(objective, n_trials=1, catch=(TrialFailed,),
                       callbacks=[lambda study, trial: print_finished(trial)])
    except STOP_ERRORS:
        requeue(study, objective.trial_number)
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("trial %s: another worker marked it failed (no heartbeat within the grace "
                    "period) and queued it again", objective.trial_number)


def print_finished(trial) -> None:
    if not trial.user_attrs.get(SURPLUS_ATTR):
        print_row(trial)


def requeue(study, number: int | None) -> None:
    """Queue the stopped trial again with the same parameters, and show it as interrupted."""
    if number is None:
        return
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    if trial.state.name != "FAIL" or trial.user_attrs.get(SURPLUS_ATTR):
        return
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)  # no limit: not its fault
    print_row(trial)


def main(argv: list[str]) -> int:
    """A child worker of `digitnet sweep --jobs K`; exit status as the CLI's."""
    args = json.loads(argv[0])
    try:
        spec = load_sweep(args["sweep_file"], args["trials"])
        work(spec, Path(args["sweep_dir"]), args["storage"], args["study"], args["data_dir"])
    except TrainingInterrupted as stop:
        return stop.exit_code
    except DigitnetError as error:
        sys.stderr.write(f"Error: {error}\n")
        return 1
    return 0

