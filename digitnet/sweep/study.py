"""The Optuna study behind a sweep: its storage, sampler and pruner, and how many trials it has.

The storage is an SQLite file in the sweep directory unless --storage names a database that
many machines share (postgresql://user:password@host/db). Either way it keeps a heartbeat: a
trial whose worker died (kill -9, a lost machine) is marked failed after the grace period and
queued again with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback).
"""

from __future__ import annotations

import json
import random
import re
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy

from digitnet.errors import InputError, first_line
from digitnet.sweep.spec import SweepSpec

STUDY_FILE = "study.db"
FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")
SPEC_ATTR = "digitnet_sweep"  # the study remembers the search it was created for
SCHEMA_ATTEMPTS = 5
SURPLUS_ATTR = "surplus"  # a trial asked for after the study was full: it never trains
CONNECT_SECONDS = 10  # a PostgreSQL server not answering by then is reported, not waited for


def quiet_optuna() -> None:
    """No per-trial log lines (digitnet prints its own table), no experimental-API warnings."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def default_storage(sweep_dir: Path) -> str:
    """The SQLite file in the sweep directory, as an SQLAlchemy URL."""
    return f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"


def redact(url: str) -> str:
    """The storage URL without its password, for printing."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str, spec: SweepSpec):
    """An RDBStorage with the sweep's heartbeat; failed stale trials are queued again."""
    quiet_optuna()
    engine = engine_options(url)
    try:
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine,
                    heartbeat_interval=spec.heartbeat.interval_seconds,
                    grace_period=spec.heartbeat.grace_seconds,
                    heartbeat_stale_trial_callback=retry_callback())
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers starting together race to create Optuna's tables; one wins.
                if attempt == SCHEMA_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 + random.random())
    except ImportError as error:
        raise InputError("storage", redact(url), f"no database driver for it ({error}); "
                         f"PostgreSQL needs psycopg (pip install 'digitnet[sweep]')") from None
    except Exception as error:  # SQLAlchemy: a bad URL, an unreachable server, a refused login
        raise InputError("storage", redact(url),
                         f"cannot open the study database ({first_line(error)})") from None


def engine_options(url: str) -> dict:
    """SQLAlchemy's engine options for the storage at `url`.

    SQLite waits for the file's lock (local workers share it). PostgreSQL gives up on a server
    that does not answer within CONNECT_SECONDS (a wrong host or port that accepts but never
    speaks would otherwise wait forever), unless the URL sets its own connect_timeout.
    """
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    engine = {"pool_pre_ping": True}
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:  # refused by RDBStorage, in its words
        return engine
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        engine["connect_args"] = {"connect_timeout": CONNECT_SECONDS}
    return engine


def retry_callback():
    """Queue a failed trial again with the same parameters (at most 3 times)."""
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)


def open_study(spec: SweepSpec, storage, study_name: str):
    """Create the study, or load it if it exists and was made for the same search.

    Raises:
      InputError: the study exists but was created from another search space, base config
        or objective.
    """
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                sampler=make_sampler(spec), pruner=make_pruner(spec),
                                load_if_exists=True)
    recorded = study.user_attrs.get(SPEC_ATTR)
    wanted = json.loads(json.dumps(spec.fingerprint()))  # as stored: tuples become lists
    if recorded is None:
        study.set_user_attr(SPEC_ATTR, wanted)
    elif recorded != wanted:
        changed = " and ".join(key for key in wanted if recorded.get(key) != wanted[key])
        raise InputError("study", study_name, f"made for another search (this sweep file's "
                         f"{changed} differ); give this search a study name of its own")
    return study


def make_sampler(spec: SweepSpec):
    """TPE (or random), reseeded for every trial from (seed, trial number)."""
    sampler = spec.sampler

    def build(seed: int):
        if sampler.type == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=sampler.startup_trials)

    return TrialSeeded(build, sampler.seed)


class TrialSeeded(optuna.samplers.BaseSampler):
    """A sampler made afresh for each trial, seeded by (seed, trial number).

    One seeded sampler per worker would make every worker draw the same first parameters; the
    trial number is unique in the study, so each trial draws its own and a rerun draws the same.
    """

    def __init__(self, build, seed: int):
        self.build = build
        self.seed = seed
        self.current = build(seed)

    def before_trial(self, study, trial) -> None:
        self.current = self.build(self.seed * 1_000_003 + trial.number)
        self.current.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.current.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.current.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.current.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.current.reseed_rng()


def make_pruner(spec: SweepSpec):
    """Median, Hyperband or no pruning, on the val_accuracy reported after each epoch."""
    pruner = spec.pruner
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.startup_trials,
                                           n_warmup_steps=pruner.warmup_epochs)
    if pruner.type == "hyperband":
        epochs = spec.trial_config({}).training.epochs
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_epochs, max_resource=max(epochs, pruner.min_epochs),
            reduction_factor=pruner.reduction_factor)
    return optuna.pruners.NopPruner()


# ---- counting trials ---------------------------------------------------------------------------


def counted_trials(study) -> list:
    """The trials that take one of the study's places, by number.

    A failed trial that was queued again is replaced by its retry; a surplus trial (asked for
    after the study was full) never trained. Running and waiting trials hold their place.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", [])}
    return sorted((t for t in trials
                   if t.number not in retried and not t.user_attrs.get(SURPLUS_ATTR)),
                  key=lambda t: t.number)


def has_place(study, trial_number: int, places: int) -> bool:
    """Whether trial `trial_number` is among the first `places` counted trials."""
    numbers = [t.number for t in counted_trials(study)]
    return trial_number in numbers[:places]


def progress(study, places: int) -> dict:
    """How many counted trials are finished, running and waiting, and whether the study is done."""
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
    for trial in counted_trials(study)[:places]:
        counts[trial.state.name] += 1
    finished = sum(counts[state] for state in FINISHED_STATES)
    return {**{k.lower(): v for k, v in counts.items()}, "finished": finished,
            "places": places, "done": finished >= places}
