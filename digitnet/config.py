"""The run configuration: frozen, typed dataclasses with every default in one place.

A config file (YAML) holds only what it changes; `--set section.key=value` overrides one value.
Unknown keys, wrong types and out-of-range values are errors that name the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from digitnet.errors import DigitnetError, InputError, clip, shown

MAX_SEED = 2**32 - 1  # numpy's legacy seeding (inside keras.utils.set_random_seed) takes no more
MAX_EPOCHS = 1_000_000  # far beyond any useful run; keeps step counts inside int64
NUM_CLASSES = 10  # the ten digits: the last layer must output this many probabilities
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "elu", "linear", "softmax")


class ConfigError(DigitnetError):
    """A config value that is unknown, of the wrong type or out of range.

    `key` is the value's dotted key where one is named ("model.layers.1.units"): a layer
    checks itself under its type ("dense.units") and the config renames it to its place.
    """

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key

    def placed(self, old: str, new: str) -> ConfigError:
        """The same error with the key's prefix `old` (a layer's type) replaced by `new`."""
        if not self.key.startswith(f"{old}."):
            return self
        key = new + self.key[len(old):]
        return type(self)(key + str(self)[len(self.key):], key)


class OverrideError(InputError, ConfigError):
    """An override that is not 'section.key=value'."""


def is_integer(value) -> bool:
    """An int (True is an int to Python: not an integer here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float that is finite (True is an int to Python: not a number here)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _require(key: str, ok: bool, expected: str, value: Any) -> None:
    """Raise ConfigError naming `key` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, received {shown(value)}", key)


# ---- model layers: one small frozen class per layer type --------------------------------------


@dataclass(frozen=True)
class Flatten:
    type: str = "flatten"


class CheckedLayer:
    """A layer that checks its fields when it is made, under its type: "dense.units"."""

    def __post_init__(self) -> None:
        self.check(self.type)

    def check(self, key: str) -> None:
        """Raise ConfigError naming `key`.field for the first bad field."""


@dataclass(frozen=True)
class Dense(CheckedLayer):
    units: int = 256  # the lesson's hidden width
    activation: str = "relu"
    type: str = "dense"

    def check(self, key: str) -> None:
        _require(f"{key}.units", self.units >= 1, "an integer >= 1", self.units)
        _require(f"{key}.activation", self.activation in ACTIVATIONS, f"one of {ACTIVATIONS}",
                 self.activation)


@dataclass(frozen=True)
class Conv2D(CheckedLayer):
    filters: int = 32
    kernel_size: int = 3
    activation: str = "relu"
    padding: str = "valid"  # "valid" shrinks the map, "same" keeps its size
    type: str = "conv2d"

    def check(self, key: str) -> None:
        _require(f"{key}.filters", self.filters >= 1, "an integer >= 1", self.filters)
        _require(f"{key}.kernel_size", 1 <= self.kernel_size <= 28, "an integer in 1..28",
                 self.kernel_size)
        _require(f"{key}.activation", self.activation in ACTIVATIONS, f"one of {ACTIVATIONS}",
                 self.activation)
        _require(f"{key}.padding", self.padding in ("valid", "same"), "'valid' or 'same'",
                 self.padding)


@dataclass(frozen=True)
class MaxPool(CheckedLayer):
    pool_size: int = 2
    type: str = "max_pool"

    def check(self, key: str) -> None:
        _require(f"{key}.pool_size", 1 <= self.pool_size <= 28, "an integer in 1..28",
                 self.pool_size)


@dataclass(frozen=True)
class Dropout(CheckedLayer):
    rate: float = 0.25
    type: str = "dropout"

    def check(self, key: str) -> None:
        _require(f"{key}.rate", 0.0 <= self.rate < 1.0, "a number in [0, 1)", self.rate)


@dataclass(frozen=True)
class BatchNorm:
    type: str = "batch_norm"


LAYER_TYPES = {cls.type: cls for cls in (Flatten, Dense, Conv2D, MaxPool, Dropout, BatchNorm)}
Layer = Flatten | Dense | Conv2D | MaxPool | Dropout | BatchNorm

LESSON_LAYERS = (Flatten(), Dense(256, "relu"), Dense(NUM_CLASSES, "softmax"))


# ---- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    layers: tuple[Layer, ...] = LESSON_LAYERS  # Flatten -> Dense 256 relu -> Dense 10 softmax

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """The layers checked themselves when made; here, what the list as a whole needs."""
        _require("model.layers", len(self.layers) >= 1, "a non-empty list of layers", [])
        last = self.layers[-1]
        ok = isinstance(last, Dense) and last.units == NUM_CLASSES and last.activation == "softmax"
        _require("model.layers", ok, "a last layer {type: dense, units: 10, activation: softmax}",
                 _layer_to_dict(last))


@dataclass(frozen=True)
class AugmentConfig:
    rotation_degrees: float = 0.0  # random rotation in +-degrees; 0 turns it off
    shift_pixels: float = 0.0  # random translation in +-pixels (of 28)
    scale: float = 0.0  # random zoom in +-fraction
    shear_degrees: float = 0.0  # random shear in +-degrees
    thickness: float = 0.0  # probability of thickening or thinning the strokes by one step
    jitter_pixels: int = 0  # random shift by whole pixels in +-jitter_pixels: a copy, no resampling
    elastic_pixels: float = 0.0  # elastic distortion (Simard 2003): largest displacement in px
    lines: float = 0.0  # probability of a straight line near the digit: a box edge, a ruled line
    pipeline: float = 0.0  # share of digits swapped for what predict's preprocessing makes of them

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        for name in ("rotation_degrees", "shift_pixels", "scale", "shear_degrees",
                     "elastic_pixels"):
            value = getattr(self, name)
            _require(f"training.augment.{name}", value >= 0, "a number >= 0", value)
        _require("training.augment.scale", self.scale < 1, "a number in [0, 1)", self.scale)
        for name in ("thickness", "lines", "pipeline"):
            value = getattr(self, name)
            _require(f"training.augment.{name}", 0 <= value <= 1, "a probability in [0, 1]",
                     value)
        _require("training.augment.jitter_pixels", 0 <= self.jitter_pixels <= 4,
                 "an integer in 0..4", self.jitter_pixels)

    @property
    def enabled(self) -> bool:
        """Whether any image transform is on (`pipeline` is not one: it swaps digits for rows
        of a bank before the transforms)."""
        return any(value > 0 for name, value in dataclasses.asdict(self).items()
                   if name != "pipeline")


OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
BACKENDS = ("tensorflow", "jax")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 4  # 4 epochs of this recipe give the lesson MLP 98.1-98.4% (bench/run.py)
    batch_size: int = 192  # big enough to amortise per-step overhead; 256+ lost accuracy
    optimizer: str = "adam"
    learning_rate: float = 6e-3  # peak rate after warm-up; as good in 4 epochs as 4e-3 in 5
    schedule: str = "cosine"  # cosine decay to zero over the run
    warmup_epochs: float = 0.3  # linear warm-up from 0 keeps early Adam steps stable
    weight_decay: float = 0.0  # decoupled decay; only used by adamw
    label_smoothing: float = 0.1  # softer targets generalise slightly better
    seed: int = 0  # seeds weights, split, shuffling and augmentation
    jit_compile: bool = False  # TF XLA: same MLP step time on CPU, slow convs; JAX always compiles
    steps_per_execution: int = 10  # fewer Python round-trips per epoch
    early_stopping_patience: int = 0  # epochs without val_accuracy gain before stopping; 0 = off
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    outliers: float = 0.0  # extra share of each batch: generated non-digits, uniform targets
    backend: str = "tensorflow"  # Keras' engine; jax trains across machines (docs/scaling.md)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        _require("training.backend", self.backend in BACKENDS, f"one of {BACKENDS}",
                 self.backend)
        _require("training.epochs", 1 <= self.epochs <= MAX_EPOCHS,
                 f"an integer in 1..{MAX_EPOCHS}", self.epochs)
        _require("training.batch_size", self.batch_size >= 1, "an integer >= 1", self.batch_size)
        _require("training.optimizer", self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}",
                 self.optimizer)
        _require("training.learning_rate", 0 < self.learning_rate < 10, "a number in (0, 10)",
                 self.learning_rate)
        _require("training.schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}",
                 self.schedule)
        _require("training.warmup_epochs", 0 <= self.warmup_epochs <= self.epochs,
                 f"a number in [0, epochs={self.epochs}]", self.warmup_epochs)
        _require("training.weight_decay", self.weight_decay >= 0, "a number >= 0",
                 self.weight_decay)
        _require("training.label_smoothing", 0 <= self.label_smoothing < 1, "a number in [0, 1)",
                 self.label_smoothing)
        _require("training.seed", 0 <= self.seed <= MAX_SEED, f"an integer in 0..{MAX_SEED}",
                 self.seed)
        _require("training.steps_per_execution", self.steps_per_execution >= 1,
                 "an integer >= 1", self.steps_per_execution)
        _require("training.early_stopping_patience", self.early_stopping_patience >= 0,
                 "an integer >= 0", self.early_stopping_patience)
        _require("training.outliers", 0 <= self.outliers <= 1, "a number in [0, 1]",
                 self.outliers)


@dataclass(frozen=True)
class DataConfig:
    source: str = ""  # IDX folder, .npz file, or "" for --data-dir / DIGITNET_DATA_DIR / download
    validation_size: int = 5000  # held out of the 60,000 training images, seeded

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        _require("data.validation_size", 0 < self.validation_size < 60000,
                 "an integer in 1..59999", self.validation_size)


@dataclass(frozen=True)
class Config:
    name: str = "default"  # shown by `digitnet runs`; set by the config file's name
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> Config:
        """Validate the name (each section checked itself when made); return self."""
        _require("name", bool(self.name.strip()) and "\n" not in self.name,
                 "a non-empty one-line label", self.name)
        return self


# ---- dict <-> dataclass, strictly ---------------------------------------------------------------


def _layer_to_dict(layer: Layer) -> dict:
    body = dataclasses.asdict(layer)
    return {"type": body.pop("type"), **body}


def to_dict(config: Config) -> dict:
    """Plain dict of the config, suitable for YAML or JSON."""
    body = dataclasses.asdict(config)
    body["model"]["layers"] = [_layer_to_dict(layer) for layer in config.model.layers]
    return body


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Check `value` against the field type `kind`; accept ints for floats and '1e-3' strings."""
    if kind is bool:
        _require(key, isinstance(value, bool), "true or false", value)
    elif kind is int:
        _require(key, is_integer(value), "an integer", value)
    elif kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        _require(key, is_number(value), "a number", value)
        value = float(value)
    elif kind is str:
        _require(key, isinstance(value, str), "a string", value)
    return value


def _build(cls: type, values: Any, key: str) -> Any:
    """Build dataclass `cls` from a dict, rejecting unknown keys and wrong types."""
    _require(key or "config", isinstance(values, dict), "a mapping of keys to values", values)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        path = f"{key}.{name}" if key else str(name)
        if name not in fields:
            raise ConfigError(f"{clip(path)}: unknown key (expected one of {', '.join(fields)})")
        kwargs[name] = _build_field(cls, fields[name], value, path)
    return cls(**kwargs)


def _build_field(cls: type, f: dataclasses.Field, value: Any, path: str) -> Any:
    """Convert one field's raw value to its declared type."""
    kind = _field_types(cls)[f.name]
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, path)
    if cls is ModelConfig and f.name == "layers":
        return _build_layers(value, path)
    return _coerce(path, value, kind)


def _field_types(cls: type) -> dict:
    """The resolved type of each field (annotations are strings under `from __future__`)."""
    import typing

    return typing.get_type_hints(cls)


def _build_layers(values: Any, key: str) -> tuple:
    _require(key, isinstance(values, (list, tuple)), "a list of layers", values)
    layers = []
    for index, raw in enumerate(values):
        path = f"{key}.{index}"
        _require(path, isinstance(raw, dict) and "type" in raw, "a mapping with a 'type'", raw)
        cls = LAYER_TYPES.get(raw["type"]) if isinstance(raw["type"], str) else None
        _require(f"{path}.type", cls is not None, f"one of {tuple(LAYER_TYPES)}", raw["type"])
        try:
            layers.append(_build(cls, raw, path))
        except ConfigError as error:  # checked under its type: name its place in the list
            raise error.placed(raw["type"], path) from None
    return tuple(layers)


def from_dict(values: dict) -> Config:
    """A checked Config from a (possibly partial) nested dict merged over the defaults."""
    merged = _merge(to_dict(Config()), values or {})
    return _build(Config, merged, "")


def _merge(base: dict, update: dict) -> dict:
    """Recursively merge `update` into a copy of `base`; lists are replaced whole."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ---- files and overrides ------------------------------------------------------------------------


YAML_MAX_DEPTH = 20  # a config nests 4 deep (model.layers.0.units); deeper is a mistake
YAML_MAX_BYTES = 1 << 20  # a config file is a few hundred bytes


class StrictYAMLError(yaml.MarkedYAMLError):
    """YAML that parses but that a config never needs: aliases, duplicate keys, deep nesting."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (a few lines of them can expand to gigabytes), keys given
    twice (the last would win silently) and nesting deeper than YAML_MAX_DEPTH."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise StrictYAMLError(problem="YAML aliases (*name) are not supported; write the "
                                          "value out", problem_mark=mark)
        self.depth += 1
        if self.depth > YAML_MAX_DEPTH:
            raise StrictYAMLError(problem=f"nested deeper than {YAML_MAX_DEPTH} levels",
                                  problem_mark=self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                raise StrictYAMLError(problem=f"key {shown(key)} given twice",
                                      problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise StrictYAMLError(problem=f"an integer of {len(node.value):,} characters is too "
                                          "long", problem_mark=node.start_mark) from None


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def parse_yaml(text: str) -> Any:
    """YAML text as Python values, strictly (see StrictLoader).

    Raises:
      yaml.YAMLError: invalid YAML; StrictYAMLError for what StrictLoader refuses.
    """
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader)


def yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what a YAML error is, in a few words."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    if isinstance(error, StrictYAMLError):
        return f"{error.problem}{where}"
    return f"invalid YAML{where}"


def read_yaml(path: str | Path) -> dict:
    """Parse a YAML mapping, turning every failure into a one-line ConfigError."""
    from digitnet.inputs import read_small_file

    path = Path(path)
    try:
        values = parse_yaml(read_small_file(path, YAML_MAX_BYTES, "config file", ConfigError))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read config file (not UTF-8 text)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: {yaml_problem(error)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of sections, received {shown(values)}")
    return values


def read_config(path: str | Path) -> Config:
    """A run's saved config.yaml as a checked Config; errors name the file."""
    try:
        return from_dict(read_yaml(path))
    except ConfigError as error:
        message = str(error)
        prefix = f"{path}: "
        raise ConfigError(message if message.startswith(prefix) else prefix + message) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'section.key=value' into its key path and YAML-parsed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise OverrideError("override", shown(text), "expected section.key=value")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except StrictYAMLError as error:
        raise ConfigError(f"{key.strip()}: {error.problem}") from None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply_override(values: dict, path: list[str], value: Any) -> None:
    """Set values[path] in place, indexing lists by number (model.layers.1.units)."""
    node: Any = values
    for depth, part in enumerate(path[:-1]):
        node = _step(node, part, ".".join(path[:depth]), ".".join(path[: depth + 1]))
    last = path[-1]
    _require_container(node, ".".join(path[:-1]))
    if isinstance(node, list):
        node[_list_index(node, last, ".".join(path))] = value
    else:
        node[last] = value


def _require_container(node: Any, key: str) -> None:
    """Refuse to set a key inside a value that is not a section or a list (e.g. `training: null`
    in the file, then --set training.epochs=1)."""
    _require(key or "config", isinstance(node, (dict, list)), "a mapping of keys to values", node)


def _step(node: Any, part: str, parent: str, key: str) -> Any:
    _require_container(node, parent)
    if isinstance(node, list):
        return node[_list_index(node, part, key)]
    if part not in node:
        raise ConfigError(f"{clip(key)}: unknown key")
    return node[part]


def _list_index(node: list, part: str, key: str) -> int:
    ok = part.isascii() and part.isdigit() and int(part) < len(node)
    expected = f"a list index in 0..{len(node) - 1}" if node else "no index (the list is empty)"
    _require(key, ok, expected, part)
    return int(part)


def load_config(
    path: str | Path | None = None,
    overrides: tuple[str, ...] = (),
    shortcuts: dict[str, Any] | None = None,
    base: Config | None = None,
) -> Config:
    """Load the config: defaults (or `base`), then the file, then `--set` overrides, shortcuts.

    Args:
      path: YAML file holding only what it changes, or None for the defaults.
      overrides: 'section.key=value' strings from `--set`.
      shortcuts: {'training.epochs': 3, ...} from flags such as --epochs; None values skipped.
      base: the config to start from instead of the defaults (a resumed run's own config).

    Returns:
      The checked, frozen Config.

    Raises:
      ConfigError: a bad file, an unknown key, a wrong type or an out-of-range value.
    """
    values = to_dict(base or Config())
    if path is not None:
        from_file = read_yaml(path)
        from_file.setdefault("name", Path(path).stem)  # runs are listed by their config's name
        values = _merge(values, from_file)
    for text in overrides:
        _apply_override(values, *parse_override(text))
    for key, value in (shortcuts or {}).items():
        if value is not None:
            _apply_override(values, key.split("."), value)
    return from_dict(values)


def save_config(config: Config) -> str:
    """The config as YAML text (the run directory's config.yaml)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
