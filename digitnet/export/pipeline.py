"""`digitnet export`: write a run's model in another format, verify it, keep it with its card.

The export is written into a hidden staging folder beside its destination and checked on the
run's test images against the Keras model; only then is it moved into place (replacing an
older export) and its card written beside it. A failed check keeps nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.backend import require_extra
from digitnet.errors import DigitnetError, InputError, os_reason
from digitnet.export import card, litert, litert_int8, onnx, saved_model, verify
from digitnet.runs import layout

FORMATS = {module.FORMAT: module for module in (saved_model, onnx, litert, litert_int8)}
OUTPUT, FORMAT = "output", "format"  # the inputs InputError names (the CLI words them as flags)
REPRESENTATIVE_IMAGES = 500  # training images that calibrate int8 quantization


@dataclass
class Exported:
    """A kept export: where it is, its card and where that is."""

    path: Path
    card_path: Path
    card: dict


def default_output(keras_path: Path, module) -> Path:
    """model-best.keras -> model-best.onnx, model-best-int8.tflite, model-best-savedmodel."""
    return keras_path.with_name(keras_path.stem + module.SUFFIX)


def check_output(target: Path, module, keras_path: Path) -> None:
    """Refuse an --output the format cannot be written to, before any work is done."""
    if module is litert_int8 and target.resolve() == layout.litert_path(keras_path).resolve():
        raise InputError(OUTPUT, target, f"predict and evaluate take this file for "
                         f"{keras_path.name}'s float LiteRT twin; choose another name")
    if module is saved_model:
        if target.is_file() or target.is_symlink():
            raise InputError(OUTPUT, target, "is a file; a SavedModel is a folder")
        if (target.is_dir() and any(target.iterdir())
                and not (target / layout.SAVED_MODEL_FILE).is_file()):
            raise InputError(OUTPUT, target, "a folder that is not empty and holds no "
                             "SavedModel (choose a new folder)")
    else:
        wanted = "." + module.SUFFIX.rsplit(".", 1)[-1]  # -int8.tflite -> .tflite
        if target.suffix != wanted:
            raise InputError(OUTPUT, target, f"expected a file name ending in {wanted} for "
                             f"the {module.FORMAT} format")
        if target.is_dir():
            raise InputError(OUTPUT, target, f"is a folder; expected a {wanted} file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(OUTPUT, target, "cannot create its folder "
                         f"({os_reason(error)})") from None


@dataclass(frozen=True)
class CheckImages:
    """What an export is checked and calibrated on: the run's test images and labels, and a
    seeded sample of its training images (int8's representative data)."""

    images: np.ndarray
    labels: np.ndarray
    representative: np.ndarray


@dataclass(frozen=True)
class Verified:
    """A staged export that passed its check: its classifier and the numbers for its card."""

    classifier: object
    check: dict


def test_and_training_images(run_dir: Path | None, data_dir: str | None) -> CheckImages:
    """The run's test images and labels, and a seeded sample of its training images."""
    from digitnet.data import load_mnist, resolve_source, split_validation, to_model_input
    from digitnet.evaluation.evaluate import run_config

    config = run_config(run_dir)
    mnist = load_mnist(resolve_source(data_dir, config.data.source))
    training = split_validation(mnist, config.data.validation_size, config.training.seed).x_train
    pick = np.random.default_rng(config.training.seed).choice(
        len(training), min(REPRESENTATIVE_IMAGES, len(training)), replace=False)
    return CheckImages(to_model_input(mnist.x_test), mnist.y_test.astype(np.int64),
                       to_model_input(training[np.sort(pick)]))


@contextlib.contextmanager
def staging(target: Path):
    """A hidden folder beside `target` (same file system: a rename moves it), removed after."""
    try:
        folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=layout.temporary_prefix(target)))
    except OSError as error:
        raise InputError(OUTPUT, target, "cannot write there "
                         f"({os_reason(error)})") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write(module, model, path: Path, representative: np.ndarray) -> None:
    """module.write, with a converter's failure as one line."""
    from digitnet.inference.classifier import first_line

    try:
        module.write(model, path, representative)
    except DigitnetError:
        raise
    except Exception as error:  # converters raise many types
        raise InputError(FORMAT, module.FORMAT, "the conversion failed "
                         f"({type(error).__name__}: {first_line(error)})") from None


def move_into_place(staged: Path, target: Path, folder: Path) -> None:
    """Rename `staged` over `target`; an old SavedModel folder goes into `folder` first."""
    if target.is_dir():
        os.replace(target, folder / "replaced")
    os.replace(staged, target)
    layout.fsync_dir(target.parent)


def verified(module, staged: Path, model, reference, images, labels, folder: Path) -> Verified:
    """The classifier and the card's numbers of a staged export whose probabilities match
    `reference` (the Keras model's for `images`)."""
    from digitnet.inference.classifier import load_classifier

    classifier = load_classifier(staged)
    exported = classifier.predict(images)
    if module is litert_int8:
        float_file = folder / "float" / "model.tflite"  # the size the int8 file is held to
        float_file.parent.mkdir()
        write(litert, model, float_file, None)
        check = verify.check_int8(reference, exported, labels, staged.stat().st_size,
                                  float_file.stat().st_size)
    else:
        check = verify.check_float(reference, exported)
    check.update(test_images=len(labels), test_accuracy=verify.accuracy(exported, labels),
                 keras_test_accuracy=verify.accuracy(reference, labels))
    return Verified(classifier, check)


def export_model(run: str | Path | None, fmt: str, output: str | Path | None = None,
                 data_dir: str | None = None) -> Exported:
    """Export a run's best model (or a .keras file) to `fmt`, verified, with its card.

    Args:
      run: a run directory, a .keras file, or None for runs/latest.
      fmt: one of FORMATS (saved-model, onnx, litert, litert-int8).
      output: where to write it [default: beside the .keras file, e.g. RUN_DIR/model-best.onnx].
      data_dir: --data-dir, or None for $DIGITNET_DATA_DIR, the run's config, or a download.

    Returns:
      The kept export, its card and the card's path.

    Raises:
      DigitnetError: a bad input, or an export that differs from the Keras model (nothing kept).
    """
    from digitnet.inference.classifier import load_classifier
    from digitnet.inference.modelfile import resolve_model_file

    module = FORMATS[fmt]
    for name in module.NEEDS:
        require_extra(name, "onnx", f"exporting {fmt.upper()}")
    source = resolve_model_file(run, backend="keras")  # the model-file gate: the .keras itself
    keras_path, run_dir = source.path, source.run_dir
    if source.format != "keras":
        raise DigitnetError(f"{keras_path}: export needs a run directory or a .keras model file")
    target = Path(output) if output is not None else default_output(keras_path, module)
    check_output(target, module, keras_path)
    model = load_classifier(source).model  # refused here unless it classifies 28x28x1 digits
    data = test_and_training_images(run_dir, data_dir)
    # before writing: Keras' ONNX export refuses a model that has never been called
    reference = model.predict(data.images, batch_size=1000, verbose=0)
    with staging(target) as folder:
        staged = folder / target.name
        write(module, model, staged, data.representative)
        try:
            passed = verified(module, staged, model, reference, data.images, data.labels,
                              folder)
        except DigitnetError as error:  # a mismatch, or a file its runtime cannot load
            raise DigitnetError(f"{target}: not kept, it differs from {keras_path.name}: "
                                f"{error}") from None
        try:
            move_into_place(staged, target, folder)
        except OSError as error:
            raise DigitnetError(f"{target}: cannot write ({os_reason(error)})") from None
    description = card.build_card(fmt, target, keras_path, source.keras_sha256,
                                  passed.classifier, passed.check, module.LIBRARIES)
    layout.write_json(card.card_path(target), description)
    return Exported(target, card.card_path(target), description)


def format_exported(exported: Exported) -> str:
    """What was kept, in two lines."""
    found = exported.card
    check = found["verification"]
    agreement = (f"max |difference| from Keras {check['max_abs_difference']:.1e}"
                 if "max_abs_difference" in check else
                 f"Keras {check['keras_test_accuracy']:.4f}, "
                 f"{check['size_share_of_float']:.0%} of the float file's size")
    return (f"Exported {exported.path} ({found['bytes']:,} bytes): test accuracy "
            f"{found['test_accuracy']:.4f} on {check['test_images']:,} images ({agreement})\n"
            f"Card: {exported.card_path}")
