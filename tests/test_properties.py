"""Property-based tests (Hypothesis) of the promise made for every input: exit status 0, 1 or 2;
on failure one `Error:` line of bounded length and no traceback; no run directory left behind by
a refused command; `latest` never pointing at a run without a model.

Generated: config files, `--set` strings, IDX and .npz headers, image files. Seeds and example
counts are fixed (derandomize), so a run is the same every time and takes a few seconds.
"""

import contextlib
import functools
import gzip
import io
import os
import shutil
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitnet.cli import cli
from digitnet.config import ACTIVATIONS, LAYER_TYPES, Config, to_dict
from digitnet.errors import LINE_MAX
from digitnet.training.train import TrainResult
from tests.conftest import TINY_OVERRIDES, synthetic_digits, write_idx_dir

ERROR_LINE_MAX = LINE_MAX + 100  # the message, "Error: " and a "Try '... --help'." hint


def fixed(examples: int):
    """Settings for a property: a fixed seed and example count, no deadline for the first calls
    (which import Keras), fixtures shared across examples on purpose."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_promise(result, allowed=(0, 1, 2), one_error=False):
    """The promise for one command: a known exit status, no traceback, errors one short line
    (`one_error`: a single `Error:` line, for a command refused as a whole)."""
    assert result.exit_code in allowed, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"traceback: {result.exception!r}"
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert errors, result.output
        assert max(len(line) for line in errors) <= ERROR_LINE_MAX
        assert len(errors) == 1 or not one_error, result.output


@contextlib.contextmanager
def workspace():
    """A fresh current folder with its own runs/ root, for one example."""
    old_cwd, old_runs = os.getcwd(), os.environ.get("DIGITNET_RUNS_DIR")
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        os.environ["DIGITNET_RUNS_DIR"] = str(Path(folder) / "runs")
        try:
            yield Path(folder)
        finally:
            os.chdir(old_cwd)
            if old_runs is None:
                os.environ.pop("DIGITNET_RUNS_DIR")
            else:
                os.environ["DIGITNET_RUNS_DIR"] = old_runs


def assert_nothing_left(folder: Path) -> None:
    """A refused command left no run directory and no `latest`."""
    runs = folder / "runs"
    assert not (folder / "r").exists()
    assert not runs.exists() or not any(runs.iterdir())


def assert_latest_has_a_model(folder: Path) -> None:
    latest = folder / "runs" / "latest"
    assert not latest.exists() or (latest / "model-best.keras").is_file()


@pytest.fixture
def no_training(monkeypatch):
    """train_and_evaluate replaced by a stub that only does with the config what training does
    first: seed, build the model and run it on one image, which must give ten probabilities.
    Model memory is capped at 256 MiB, so that no accepted model allocates much to build."""
    import keras

    from digitnet.training.model import build_model

    calls = []

    def stub(config, run_dir, *args, **kwargs):
        calls.append(config)
        keras.utils.set_random_seed(config.training.seed)
        output = build_model(config.model)(np.zeros((1, 28, 28, 1), np.float32))
        assert tuple(output.shape) == (1, 10)
        metrics = {"epochs": 1, "test_accuracy": 0.5, "test_loss": 1.0, "train_seconds": 0.0}
        return TrainResult(Path(run_dir), metrics)

    monkeypatch.setattr("digitnet.training.train.train_and_evaluate", stub)
    monkeypatch.setattr("digitnet.training.model.machine_memory", lambda: 256 << 20)
    return calls


# ---- configs and --set --------------------------------------------------------------------------

SECTIONS = {name: sorted(section) for name, section in to_dict(Config()).items()
            if isinstance(section, dict)}
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.integers(), st.floats(),
    st.text(max_size=12), st.sampled_from(["relu", "softmax", "same", "valid", "adam", "1e-3",
                                           "cosine", "x" * 500]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
LAST = {"type": "dense", "units": 10, "activation": "softmax"}
FIELD_VALUES = {"activation": st.sampled_from(ACTIVATIONS), "rate": st.floats(0, 0.9),
                "padding": st.sampled_from(["same", "valid"])}
# any layers, mostly ending in the one last layer a config may have, so that most get past
# validation to the model checks
def layer_strategy(kind: str, cls: type):
    """One layer of `kind`: its own fields, mostly with values of the right type."""
    fields = set(cls.__dataclass_fields__) - {"type"}
    good = {field: FIELD_VALUES.get(field, st.integers(0, 40)) for field in fields}
    return st.fixed_dictionaries({"type": st.just(kind)}, optional={
        field: st.one_of(strategy, strategy, strategy, values) for field, strategy in good.items()})


layers = st.builds(lambda body, last: body + last, st.lists(
    st.one_of(*[layer_strategy(kind, cls) for kind, cls in LAYER_TYPES.items()]) | st.lists(
        values, max_size=1), max_size=5), st.sampled_from([[LAST], [LAST], []]))
other_sections = {name: st.one_of(values, st.dictionaries(st.sampled_from(keys + ["nope"]), values,
                                                          max_size=4))
                  for name, keys in SECTIONS.items() if name != "model"}
sections = st.fixed_dictionaries({}, optional={
    "name": values, "model": st.one_of(values, st.fixed_dictionaries({"layers": layers})),
    **other_sections})
# half the configs are a model alone: those mostly get past validation to the model checks
configs = st.one_of(st.fixed_dictionaries({"model": st.fixed_dictionaries({"layers": layers})}),
                    sections, values)


@fixed(30)
@given(config=configs)
def test_any_config_file_is_trained_or_refused_in_one_line(no_training, config):
    with workspace() as folder:
        path = folder / "generated.yaml"
        path.write_text(yaml.safe_dump(config))
        result = CliRunner().invoke(cli, ["train", "--config", str(path), "--run-dir", "r"])
        assert_promise(result, one_error=True)
        if result.exit_code != 0:
            assert_nothing_left(folder)


yaml_texts = st.one_of(
    st.text(max_size=40),
    st.builds(lambda value: yaml.safe_dump(value, default_flow_style=True).strip(), values),
    st.sampled_from(["&a [1, *a]", "[&a 1, *a]", "{a: 1, a: 2}", "[" * 50 + "]" * 50,
                     "!!python/none", "nan", ".inf", "-.inf", "1e999", "0x10", "~", "'", "{",
                     "99999999999999999999"]),
)
dotted = st.one_of(
    st.sampled_from([f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys]
                    + ["name", "model.layers", "model.layers.0.units", "model.layers.9.type",
                       "training.augment.scale", "training.epochs.x", "model.layers.-1.units"]),
    st.text(max_size=20),
)
overrides = st.lists(st.builds(lambda key, value: f"{key}={value}", dotted, yaml_texts)
                     | st.text(max_size=30), max_size=2)
shortcut_values = st.one_of(st.integers(-3, 10**20).map(str), st.sampled_from(["0", "1", "3"]),
                            st.text(max_size=8))


@fixed(60)
@given(texts=overrides, epochs=st.none() | shortcut_values, seed=st.none() | shortcut_values)
def test_any_set_strings_and_shortcuts_are_taken_or_refused_in_one_line(no_training, texts,
                                                                         epochs, seed):
    args = ["train", "--run-dir", "r", *[part for text in texts for part in ("--set", text)]]
    args += ["--epochs", epochs] if epochs is not None else []
    args += ["--seed", seed] if seed is not None else []
    with workspace() as folder:
        result = CliRunner().invoke(cli, args)
        assert_promise(result, one_error=True)
        if result.exit_code != 0:
            assert_nothing_left(folder)


image_layers = st.lists(st.one_of(
    st.builds(lambda k: {"type": "conv2d", "filters": 2, "kernel_size": k}, st.integers(1, 30)),
    st.builds(lambda p: {"type": "max_pool", "pool_size": p}, st.integers(1, 30)),
    st.just({"type": "dropout"}), st.just({"type": "batch_norm"})), max_size=2)
flat_layers = st.lists(st.one_of(
    st.builds(lambda n: {"type": "dense", "units": n}, st.integers(1, 16)),
    st.just({"type": "dropout"}), st.just({"type": "batch_norm"})), max_size=2)
# mostly models that build (image layers, flatten, flat layers), some that cannot
small_layers = st.builds(lambda head, flatten, tail: head + flatten + tail, image_layers,
                         st.sampled_from([[{"type": "flatten"}]] * 3 + [[]]), flat_layers)


@fixed(3)
@given(body=small_layers)
def test_real_training_of_generated_models_keeps_latest_usable(tiny_data_dir, body):
    last = {"type": "dense", "units": 10, "activation": "softmax"}
    layers = yaml.safe_dump([*body, last], default_flow_style=True).strip()
    with workspace() as folder:
        result = CliRunner().invoke(cli, [
            "train", "--data-dir", str(tiny_data_dir), "--run-dir", "r", "--no-tensorboard",
            "--epochs", "1", *[part for text in TINY_OVERRIDES for part in ("--set", text)],
            "--set", f"model.layers={layers}"])
        assert_promise(result, allowed=(0, 1), one_error=True)
        if result.exit_code != 0:
            assert_nothing_left(folder)
        assert_latest_has_a_model(folder)


# ---- data files: IDX and .npz headers -----------------------------------------------------------


@pytest.fixture(scope="module")
def bare_model(tiny_run, tmp_path_factory) -> Path:
    """The tiny run's LiteRT export alone: evaluate answers quickly and writes nothing."""
    path = tmp_path_factory.mktemp("bare") / "model.tflite"
    shutil.copy(tiny_run / "model-best.tflite", path)
    return path


def evaluate_bounded(model: Path, data: Path):
    """Evaluate on `data`; the peak of memory traced must stay far below what headers claim."""
    tracemalloc.start()
    try:
        result = CliRunner().invoke(cli, ["evaluate", str(model), "--data-dir", str(data),
                                          "--json"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    return result


sizes = st.one_of(st.integers(0, 40), st.sampled_from([28, 60_000, 2**31, 2**32 - 1]))
idx_headers = st.tuples(
    st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    st.sampled_from([2049, 2051, 0, 2**32 - 1]), st.lists(sizes, max_size=4),
    st.integers(0, 3000), st.booleans(), st.sampled_from([b"", b"\x00" * 1_000_000]),
    st.sampled_from([0, 0, 96 << 20]))  # 96 MiB of zeros after the data (a gzip bomb's tail)


@functools.cache
def zeros_gz(size: int) -> bytes:
    return gzip.compress(bytes(size), compresslevel=1)


@fixed(30)
@given(header=idx_headers)
def test_any_idx_header_is_read_or_refused_in_one_line(bare_model, header):
    name, magic, shape, payload, gz, tail, bomb = header
    with tempfile.TemporaryDirectory() as folder:
        write_idx_dir(Path(folder), train=20, test=10, gz=False)
        body = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape)
        body += bytes(range(256)) * (payload // 256) + tail
        target = Path(folder) / name
        if gz:
            target.unlink()
            target = target.with_name(name + ".gz")
            # a second gzip member inflates to `bomb` zeros: gzip reads on across members
            body = gzip.compress(body, compresslevel=1) + (zeros_gz(bomb) if bomb else b"")
        target.write_bytes(body)
        assert_promise(evaluate_bounded(bare_model, Path(folder)), allowed=(0, 1))


npz_members = st.fixed_dictionaries({
    "shape": st.lists(sizes, max_size=4).map(tuple),
    "descr": st.sampled_from(["|u1", "<f4", "<i8", "|b1", "|O"]),
    "fortran_order": st.booleans(),
    "data": st.integers(0, 2000),
    "compress": st.booleans(),
})


def npz_bytes(members: dict) -> bytes:
    """A Keras-layout .npz: valid arrays, except the members given (written by hand)."""
    x, y = synthetic_digits(20, 0)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, \
            zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            spec = members.get(name.removesuffix(".npy"))
            data = source.read(name)
            if spec is not None:
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {
                    "descr": spec["descr"], "fortran_order": spec["fortran_order"],
                    "shape": spec["shape"]})
                data = header.getvalue() + bytes(spec["data"])
            compression = zipfile.ZIP_DEFLATED if spec and spec["compress"] else zipfile.ZIP_STORED
            target.writestr(name, data, compress_type=compression)
    return out.getvalue()


@fixed(30)
@given(members=st.dictionaries(st.sampled_from(["x_train", "y_train", "x_test", "y_test"]),
                               npz_members, min_size=1, max_size=2))
def test_any_npz_header_is_read_or_refused_in_one_line(bare_model, members):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npz"
        path.write_bytes(npz_bytes(members))
        assert_promise(evaluate_bounded(bare_model, path), allowed=(0, 1))


# ---- image files --------------------------------------------------------------------------------

FORMATS = ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"]
MODES = ["L", "RGB", "RGBA", "P", "1", "LA", "I;16"]
images = st.fixed_dictionaries({
    "mode": st.sampled_from(MODES), "format": st.sampled_from(FORMATS),
    "size": st.tuples(st.integers(1, 90), st.integers(1, 90)), "seed": st.integers(0, 9),
    "cut": st.none() | st.integers(0, 400), "flip": st.none() | st.integers(0, 400),
    "name": st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1,
                    max_size=12),
})


def image_bytes(spec: dict) -> bytes:
    """An image of random pixels in the given mode and format, then maybe cut or corrupted."""
    pixels = np.random.default_rng(spec["seed"]).integers(0, 256, (*spec["size"][::-1], 3))
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    try:
        image.convert(spec["mode"]).save(buffer, spec["format"])
    except (OSError, ValueError, KeyError):  # a mode this format cannot store
        image.save(buffer, spec["format"])
    data = bytearray(buffer.getvalue())
    if spec["flip"] is not None and spec["flip"] < len(data):
        data[spec["flip"]] ^= 0xFF
    if spec["cut"] is not None:
        data = data[: spec["cut"]]
    return bytes(data)


@fixed(25)
@given(specs=st.lists(images, min_size=1, max_size=4, unique_by=lambda spec: spec["name"]))
def test_any_image_files_are_predicted_or_refused_in_one_line_each(bare_model, specs):
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for spec in specs:
            path = Path(folder) / f"{spec['name']}.{spec['format'].lower()}"
            path.write_bytes(image_bytes(spec))
            paths.append(str(path))
        result = CliRunner().invoke(cli, ["predict", *paths, "--model", str(bare_model)])
        assert_promise(result, allowed=(0, 1))
        header, *rows = result.output.splitlines()
        assert header == f"Model: {bare_model}"
        assert len(rows) == len(paths)  # one line each, whatever the name
