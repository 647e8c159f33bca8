"""Evaluate a trained model on the test or validation split: accuracy, loss, per-class scores."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.config import NUM_CLASSES, Config, read_config
from digitnet.data import load_mnist, resolve_source, split_validation, to_model_input
from digitnet.errors import DigitnetError, InputError
from digitnet.evaluation import SPLITS
from digitnet.runs import layout


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """10x10 counts: row = true digit, column = predicted digit."""
    return np.bincount(labels * NUM_CLASSES + predicted,
                       minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def per_class_scores(confusion: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support of each digit from the confusion matrix."""
    true_positive = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros(NUM_CLASSES), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros(NUM_CLASSES), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(NUM_CLASSES), where=total > 0)
    return [{"digit": d, "precision": float(precision[d]), "recall": float(recall[d]),
             "f1": float(f1[d]), "support": int(actual[d])} for d in range(NUM_CLASSES)]


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (no label smoothing)."""
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, loss, per-class scores and the confusion matrix of predictions.

    Args:
      probabilities: (N, 10) model outputs.
      labels: (N,) true digits.

    Returns:
      A JSON-ready dict.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted)
    classes = per_class_scores(confusion)
    return {
        "examples": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "loss": cross_entropy(probabilities, labels),
        "macro_f1": float(np.mean([c["f1"] for c in classes])),
        "per_class": classes,
        "confusion_matrix": confusion.tolist(),
    }


def run_temperature(run_dir: Path | None) -> float | None:
    """The temperature folded into the run's best model (metrics.json); None when unknown: a bare
    model file, a run still training, or a run made before calibration."""
    if run_dir is None:
        return None
    try:
        temperature = layout.read_json(run_dir / layout.METRICS_FILE).get("temperature")
    except DigitnetError:
        return None
    return float(temperature) if isinstance(temperature, (int, float)) else None


def calibration_report(probabilities: np.ndarray, labels: np.ndarray,
                       temperature: float | None) -> dict:
    """ECE, NLL and the reliability bins of these probabilities; with the run's temperature,
    also the ECE and NLL the model had before it was folded in."""
    from digitnet.evaluation.calibration import calibration_scores, reliability, uncalibrated

    labels = np.asarray(labels, dtype=np.int64)
    report = {"temperature": temperature, **calibration_scores(probabilities, labels),
              "reliability": reliability(probabilities, labels)}
    if temperature is not None:
        before = calibration_scores(uncalibrated(probabilities, temperature), labels)
        report["before"] = {"ece": before["ece"], "nll": before["nll"],
                            "median_confidence_correct": before["median_confidence_correct"]}
    return report


def run_config(run_dir: Path | None) -> Config:
    """The run's own config, so the split matches training; the defaults for a bare model."""
    if run_dir is None:
        return Config()
    return read_config(run_dir / layout.CONFIG_FILE)


@dataclass(frozen=True)
class ScoredImages:
    """The images a model is scored on, and what they came from."""

    images: np.ndarray  # model-ready float32 (N, 28, 28, 1)
    labels: np.ndarray  # int64 (N,)
    data: dict  # {"source", "files" (path -> sha256), "count"}, recorded in the evaluation


def load_split(config: Config, split: str, data_dir: str | None) -> ScoredImages:
    """The test split, or the run's own validation split, ready for the model."""
    mnist = load_mnist(resolve_source(data_dir, config.data.source))
    if split == "test":
        images, labels = to_model_input(mnist.x_test), mnist.y_test.astype(np.int64)
    else:
        splits = split_validation(mnist, config.data.validation_size, config.training.seed)
        images, labels = to_model_input(splits.x_val), splits.y_val
    data = {"source": mnist.source, "files": mnist.files, "count": len(labels)}
    return ScoredImages(images, labels, data)


def evaluate(model_or_run: str | Path | None, split: str = "test",
             data_dir: str | None = None) -> dict:
    """Evaluate a run's best model (or a .keras file) and save the report in the run directory.

    Args:
      model_or_run: a run directory, a model file (.keras, .tflite, .onnx), a SavedModel
        folder, or None for runs/latest.
      split: "test" or "val" (the run's own held-out validation images).
      data_dir: an IDX folder or .npz, or None for $DIGITNET_DATA_DIR, the run's config, or a
        download.

    Returns:
      The report from `score`, plus the model file used ("model", "model_sha256",
      "keras_sha256"), the split and the data it was scored on ("data": source, files with
      their sha256, count); for a run, also its most confident mistakes, the plots drawn into
      RUN_DIR/plots/ and where the report was saved.
    """
    from digitnet.inference.classifier import load_classifier
    from digitnet.inference.modelfile import resolve_model_file

    if split not in SPLITS:
        raise InputError("split", split, f"expected one of {', '.join(SPLITS)}")
    model = resolve_model_file(model_or_run)
    run_dir = model.run_dir
    if split == "val" and run_dir is None:  # its validation images depend on the run's seed
        raise InputError("split", split, f"{model.named} has no run directory, whose config.yaml "
                                         f"says which images were held out (use test)")
    classifier = load_classifier(model)  # a bad model fails before the data is read
    scored = load_split(run_config(run_dir), split, data_dir)
    images, labels = scored.images, scored.labels
    probabilities = classifier.predict(images)
    report = {**model.describe(), "split": split, "data": scored.data,
              **score(probabilities, labels),
              "calibration": calibration_report(probabilities, labels, run_temperature(run_dir))}
    # only the run's own model on the run's own data is the run's evaluation: a bare .keras file
    # has nowhere to keep plots, an export (.onnx, int8 .tflite, SavedModel) is scored without
    # replacing it, and other images must not replace the evaluation of the run's own
    if run_dir is not None and model.named in own_models(run_dir):
        not_own = foreign_data(report, run_dir)
        if not_own:
            report["not_saved"] = f"{not_own}; {run_dir} keeps its evaluation of its own images"
            return report
        from digitnet.evaluation.plots import confident_mistakes, write_evaluation_plots

        report["mistakes"] = confident_mistakes(probabilities, labels)
        report["plots"] = write_evaluation_plots(run_dir, report, images)
        report["saved_to"] = str(layout.evaluation_file(run_dir, split))
        layout.write_json(report["saved_to"], report)
    return report


def foreign_data(evaluation: dict, run_dir: Path) -> str | None:
    """Why `evaluation` was not made on the data the run was trained on, or None.

    The data files' sha256 must be among those in the run's manifest.json: the run's own
    images, wherever they are now.
    """
    from digitnet.runs.listing import read_mapping

    data = evaluation.get("data")
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not files:
        split = evaluation.get("split")
        return f"{layout.evaluation_file(run_dir, split if split in SPLITS else 'test')}: " \
               f"does not record its data"
    manifest, _ = read_mapping(run_dir / layout.MANIFEST_FILE, json.loads)
    trained = manifest.get("data_files")
    # hand-edited files may hold anything: only strings are sha256s
    known = {v for v in trained.values() if isinstance(v, str)} if isinstance(trained, dict) \
        else set()
    for path, digest in files.items():
        if not isinstance(digest, str) or digest not in known:
            return (f"{path}: not the data {run_dir} was trained on (its sha256 is not in "
                    f"{layout.MANIFEST_FILE})")
    return None


def calibration_lines(calibration: dict | None) -> list[str]:
    """One line of calibration scores, with the uncalibrated ones when the temperature is known."""
    if not calibration:
        return []
    line = (f"ECE:      {calibration['ece']:.2%}   NLL: {calibration['nll']:.4f}   "
            f"median top probability when right: {calibration['median_confidence_correct']:.4f}")
    if calibration.get("before"):
        line += (f"\n          (temperature {calibration['temperature']:.3f}; before it: ECE "
                 f"{calibration['before']['ece']:.2%}, NLL {calibration['before']['nll']:.4f})")
    return [line]


def own_models(run_dir: Path) -> tuple[Path, Path]:
    """The run's best model and the LiteRT file training wrote beside it."""
    return run_dir / layout.BEST_MODEL, run_dir / layout.BEST_LITERT


def format_report(report: dict) -> str:
    """A readable table: overall scores, per-class scores, confusion matrix."""
    lines = [f"Model:    {report['model']}",
             f"Split:    {report['split']} ({report['examples']} images)",
             f"Accuracy: {report['accuracy']:.4f}   Loss: {report['loss']:.4f}   "
             f"Macro F1: {report['macro_f1']:.4f}", *calibration_lines(report.get("calibration")),
             "", "digit  precision  recall      f1  support"]
    lines += [f"{c['digit']:>5}  {c['precision']:>9.4f}  {c['recall']:>6.4f}  {c['f1']:>6.4f}  "
              f"{c['support']:>7}" for c in report["per_class"]]
    lines += ["", "Confusion matrix (rows: true digit, columns: predicted)",
              "     " + "".join(f"{d:>6}" for d in range(NUM_CLASSES))]
    lines += [f"{d:>5}" + "".join(f"{n:>6}" for n in row)
              for d, row in enumerate(report["confusion_matrix"])]
    if "saved_to" in report:
        lines += ["", f"Saved to {report['saved_to']}"]
    if "not_saved" in report:
        lines += ["", f"Not saved: {report['not_saved']}"]
    if report.get("plots"):
        lines += [f"Plots in {Path(next(iter(report['plots'].values()))).parent}"]
    return "\n".join(lines)
