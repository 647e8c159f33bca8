"""The sweep file: a base config, a search space over config keys, the objective and the search.

A sweep file (YAML) is checked as strictly as a config file: an unknown key, a wrong type or an
out-of-range value is a one-line error naming the file and the key. Every key of the search space
is tried against the base config at its bounds (or each choice) before any trial runs, so a typo
such as `model.layers.5.units` fails at once rather than in every trial.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digitnet.config import (
    Config,
    ConfigError,
    _build,
    _coerce,
    _require,
    load_config,
    read_yaml,
    to_dict,
)
from digitnet.errors import DigitnetError, InputError

PARAM_TYPES = ("float", "int", "choice")
METRICS = ("val_accuracy",)  # maximised; the test split stays untouched by the search
SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median", "hyperband")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a folder under runs/ and a study name


class SweepError(DigitnetError):
    """A sweep file that is missing, malformed, or names a config key or value that is wrong."""


@dataclass(frozen=True)
class Param:
    """One searched config key: a float or int range (linear or log) or a list of choices."""

    type: str = ""  # float, int or choice
    low: Any = None  # range bounds, inclusive
    high: Any = None
    log: bool = False  # sample evenly in log space (learning rates, widths)
    step: Any = None  # linear ranges only: the grid spacing (int default 1)
    values: Any = None  # choice only: the list to pick from

    def check(self, key: str) -> Param:
        """Validate and normalise (ints for int ranges, floats for float ranges)."""
        _require(f"{key}.type", self.type in PARAM_TYPES, f"one of {PARAM_TYPES}", self.type)
        if self.type == "choice":
            return self.check_choice(key)
        kind = float if self.type == "float" else int
        low = _coerce(f"{key}.low", self.low, kind)
        high = _coerce(f"{key}.high", self.high, kind)
        _require(f"{key}.high", high > low, f"a number above low={low}", high)
        _require(f"{key}.low", not self.log or low > 0, "a number > 0 with log: true", low)
        step = None
        if self.step is not None:
            _require(f"{key}.step", not self.log, "no step with log: true", self.step)
            step = _coerce(f"{key}.step", self.step, kind)
            _require(f"{key}.step", 0 < step <= high - low, f"a number in (0, {high - low}]",
                     step)
        _require(f"{key}.values", self.values is None, "no values (only for type: choice)",
                 self.values)
        return dataclasses.replace(self, low=low, high=high, step=step)

    def check_choice(self, key: str) -> Param:
        ok = isinstance(self.values, list) and len(self.values) >= 1
        _require(f"{key}.values", ok, "a non-empty list", self.values)
        scalar = all(value is None or isinstance(value, (bool, int, float, str))
                     for value in self.values)
        _require(f"{key}.values", scalar, "a list of numbers, strings or booleans", self.values)
        _require(f"{key}.values", len(set(map(repr, self.values))) == len(self.values),
                 "a list without repeats", self.values)
        for name in ("low", "high", "step"):
            value = getattr(self, name)
            _require(f"{key}.{name}", value is None, "nothing (not with type: choice)", value)
        _require(f"{key}.log", not self.log, "false (not with type: choice)", self.log)
        return dataclasses.replace(self, values=tuple(self.values))

    def examples(self) -> tuple:
        """The values that bound this parameter: both ends of a range, or every choice."""
        return self.values if self.type == "choice" else (self.low, self.high)


@dataclass(frozen=True)
class Objective:
    metric: str = "val_accuracy"  # the best epoch's accuracy on the held-out validation images
    max_train_seconds: float = 0.0  # a trial training longer is pruned; 0 = no cap

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        _require("objective.metric", self.metric in METRICS, f"one of {METRICS}", self.metric)
        _require("objective.max_train_seconds", self.max_train_seconds >= 0, "a number >= 0",
                 self.max_train_seconds)


@dataclass(frozen=True)
class Sampler:
    type: str = "tpe"  # tree-structured Parzen estimator; random for a baseline
    seed: int = 0  # each trial's draws are seeded by (seed, trial number): reproducible
    startup_trials: int = 10  # TPE samples at random until this many trials have finished

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        _require("sampler.type", self.type in SAMPLERS, f"one of {SAMPLERS}", self.type)
        _require("sampler.seed", self.seed >= 0, "an integer >= 0", self.seed)
        _require("sampler.startup_trials", self.startup_trials >= 1, "an integer >= 1",
                 self.startup_trials)


@dataclass(frozen=True)
class Pruner:
    type: str = "none"  # median or hyperband stop unpromising trials by per-epoch val_accuracy
    startup_trials: int = 5  # median: never prune before this many trials have finished
    warmup_epochs: int = 1  # median: never prune a trial before this many epochs
    min_epochs: int = 1  # hyperband: the smallest number of epochs a trial gets
    reduction_factor: int = 3  # hyperband: keep about 1/this of the trials at each rung

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        _require("pruner.type", self.type in PRUNERS, f"one of {PRUNERS}", self.type)
        for name in ("startup_trials", "warmup_epochs"):
            value = getattr(self, name)
            _require(f"pruner.{name}", value >= 0, "an integer >= 0", value)
        _require("pruner.min_epochs", self.min_epochs >= 1, "an integer >= 1", self.min_epochs)
        _require("pruner.reduction_factor", self.reduction_factor >= 2, "an integer >= 2",
                 self.reduction_factor)


@dataclass(frozen=True)
class Heartbeat:
    interval_seconds: int = 10  # a running trial tells the storage it is alive this often
    grace_seconds: int = 60  # silent this long, its trial is marked failed and queued again

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        _require("heartbeat.interval_seconds", self.interval_seconds >= 1, "an integer >= 1",
                 self.interval_seconds)
        _require("heartbeat.grace_seconds", self.grace_seconds > self.interval_seconds,
                 f"an integer above interval_seconds={self.interval_seconds}",
                 self.grace_seconds)


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep file."""

    name: str = ""  # runs/<name>/ and the default study name; the file's stem when not given
    base: str = ""  # a config file, relative to the sweep file; "" for the defaults
    set: dict = field(default_factory=dict)  # config key -> value, applied to every trial
    space: dict = field(default_factory=dict)  # config key -> Param
    objective: Objective = field(default_factory=Objective)
    trials: int = 20  # trials in the whole study, over every worker; --trials overrides
    sampler: Sampler = field(default_factory=Sampler)
    pruner: Pruner = field(default_factory=Pruner)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """The file's own keys (each section checked itself when made; `build_spec` checks
        each Param of the space)."""
        named = isinstance(self.name, str) and NAME_PATTERN.fullmatch(self.name) is not None
        _require("name", named, "a folder name of letters, digits, '.', '_' and '-'", self.name)
        _require("trials", self.trials >= 1, "an integer >= 1", self.trials)
        _require("set", isinstance(self.set, dict), "a mapping of config keys to values", self.set)
        _require("space", isinstance(self.space, dict) and self.space,
                 "a mapping of config keys to {type: float|int|choice, ...}", self.space)

    def trial_config(self, params: dict) -> Config:
        """The config of one trial: the base, then `set`, then the trial's parameters."""
        shortcuts = {"name": self.name, **self.set, **params}
        return load_config(self.base or None, shortcuts=shortcuts)

    def fingerprint(self) -> dict:
        """What makes two sweep files the same search (a study may only continue the same)."""
        return {"base": to_dict(self.trial_config({})),
                "space": {key: dataclasses.asdict(param) for key, param in self.space.items()},
                "objective": dataclasses.asdict(self.objective)}


def load_sweep(path: str | Path, trials: int | None = None) -> SweepSpec:
    """Read and check a sweep file.

    Args:
      path: the sweep YAML file.
      trials: --trials, replacing the file's `trials` when given.

    Returns:
      The checked SweepSpec, its `base` made relative to the working directory.

    Raises:
      SweepError: one line naming the file and the key that is wrong.
    """
    path = Path(path)
    try:
        values = read_yaml(path)
        values.setdefault("name", path.stem)
        if trials is not None:
            values["trials"] = trials
        spec = build_spec(values, path)
        check_space_against_config(spec)
    except ConfigError as error:
        message = str(error)
        raise SweepError(message if message.startswith(str(path)) else f"{path}: {message}") \
            from None
    return spec


def study_name_of(spec: SweepSpec, study_name: str | None) -> str:
    """The study's name: `study_name` (--study), or the sweep's name.

    Raises:
      InputError: a name that cannot name the folder of its trials.
    """
    study_name = study_name or spec.name
    if not NAME_PATTERN.fullmatch(study_name):
        raise InputError("study", repr(study_name), "expected a name of letters, digits, '.', "
                         "'_' and '-' (it names the folder of its trials)")
    return study_name


def build_spec(values: dict, path: Path) -> SweepSpec:
    """The SweepSpec from the file's mapping, every section type-checked."""
    values = {**values, "set": values.get("set") or {}, "space": values.get("space")}
    spec = _build(SweepSpec, values, "")  # checks itself: name, trials, set, space a mapping
    space = {}
    for key, raw in spec.space.items():
        _require(f"space.{key}", isinstance(raw, dict), "a mapping such as {type: float, low: "
                 "0.001, high: 0.1, log: true}", raw)
        space[str(key)] = _build(Param, raw, f"space.{key}").check(f"space.{key}")
    base = str(path.parent / spec.base) if spec.base else ""
    return dataclasses.replace(spec, base=base, space=space,
                               set={str(k): v for k, v in spec.set.items()})


def check_space_against_config(spec: SweepSpec) -> None:
    """Build the base config, then a config at each bound or choice of every searched key."""
    try:
        spec.trial_config({})
    except ConfigError as error:
        where = f"base {spec.base}" if spec.base else "set"
        raise ConfigError(f"{where}: {error}") from None
    for key, param in spec.space.items():
        for value in param.examples():
            try:
                spec.trial_config({key: value})
            except ConfigError as error:
                raise ConfigError(f"space.{key}: the value {value!r} gives a bad config "
                                  f"({error})") from None
