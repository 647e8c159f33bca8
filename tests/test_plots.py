"""Plots and TensorBoard logs: valid PNGs of the promised sizes, the right mistakes, the scalars."""

import csv
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from digitnet.cli import cli
from digitnet.evaluation import plots
from digitnet.evaluation.evaluate import calibration_report, evaluate
from tests.conftest import TINY_OVERRIDES

SPLIT_PLOTS = ("confusion", "confusion-normalized", "per-class-accuracy", "mistakes")


def png_size(path) -> tuple[int, int]:
    """The size of a PNG, after checking its signature and decoding it whole."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.load()
        return image.size


def expected_size(name: str) -> tuple[int, int]:
    width, height = plots.SIZES[name]
    return round(width * plots.DPI), round(height * plots.DPI)


def one_hot_probabilities(predicted, confidence) -> np.ndarray:
    """(N, 10) probabilities putting `confidence` on `predicted`, the rest spread evenly."""
    probabilities = np.tile((1 - np.asarray(confidence))[:, None] / 9, (1, 10))
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_confident_mistakes_are_the_wrong_answers_most_confident_first():
    labels = np.array([0, 1, 2, 3, 4])
    probabilities = one_hot_probabilities([0, 5, 7, 3, 9], [0.99, 0.6, 0.95, 0.9, 0.7])
    mistakes = plots.confident_mistakes(probabilities, labels, count=2)
    assert mistakes == [{"index": 2, "label": 2, "predicted": 7, "probability": 0.95},
                        {"index": 4, "label": 4, "predicted": 9, "probability": 0.7}]
    assert plots.confident_mistakes(probabilities, probabilities.argmax(axis=1)) == []


def write_history(path, epochs: int) -> None:
    columns = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for epoch in range(1, epochs + 1):
            writer.writerow([epoch, 1 / epoch, 1 - 0.1 / epoch, 1.1 / epoch, 1 - 0.12 / epoch,
                             1e-3 / epoch, 1.5])


@pytest.mark.parametrize("wrong", [24, 0])
def test_evaluation_plots_are_pngs_of_the_promised_sizes(tmp_path, wrong):
    rng = np.random.default_rng(0)
    confusion = np.diag(rng.integers(900, 1100, 10)) + rng.integers(0, 8, (10, 10)) * (wrong > 0)
    report = {"split": "test", "examples": int(confusion.sum()),
              "confusion_matrix": confusion.tolist(),
              "mistakes": [{"index": i, "label": i % 10, "predicted": (i + 1) % 10,
                            "probability": 0.9 - i / 100} for i in range(wrong)]}
    labels = rng.integers(0, 10, 500)
    report["calibration"] = calibration_report(one_hot_probabilities(
        np.where(np.arange(500) < wrong, (labels + 1) % 10, labels), rng.uniform(0.3, 1, 500)),
        labels, temperature=0.5)
    write_history(tmp_path / "history.csv", epochs=5)
    written = plots.write_evaluation_plots(tmp_path, report, rng.random((30, 28, 28, 1)))
    assert set(written) == {*SPLIT_PLOTS, "reliability", "learning-curves"}
    for name, path in written.items():
        assert path == str(plots.plot_path(tmp_path, name, None if name == "learning-curves"
                                           else "test"))
        assert png_size(tmp_path / "plots" / path.rsplit("/", 1)[1]) == expected_size(name)


def test_no_learning_curves_without_a_history(tmp_path):
    report = {"split": "val", "examples": 10, "confusion_matrix": np.eye(10, dtype=int).tolist(),
              "mistakes": []}
    written = plots.write_evaluation_plots(tmp_path, report, np.zeros((10, 28, 28, 1)))
    assert set(written) == set(SPLIT_PLOTS)
    assert (tmp_path / "plots" / "confusion-val.png").is_file()


def test_evaluating_a_run_draws_its_plots_and_a_bare_model_none(tiny_run, tiny_data_dir,
                                                                  tmp_path):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    report = evaluate(run_dir, "test", str(tiny_data_dir))
    assert set(report["plots"]) == {*SPLIT_PLOTS, "reliability", "learning-curves"}
    for name in report["plots"]:
        split = None if name == "learning-curves" else "test"
        assert png_size(plots.plot_path(run_dir, name, split)) == expected_size(name)
    wrong = report["examples"] - np.trace(report["confusion_matrix"])
    assert len(report["mistakes"]) == min(wrong, 24)

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "model-best.keras", bare / "model.keras")
    report = evaluate(bare / "model.keras", "test", str(tiny_data_dir))
    assert "plots" not in report and "mistakes" not in report
    assert sorted(path.name for path in bare.iterdir()) == ["model.keras"]


def read_scalars(folder) -> dict:
    """{tag: [(step, value)]} from the TensorBoard event files in `folder`."""
    import tensorflow as tf

    scalars = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                scalars.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return scalars


def test_training_logs_the_history_to_tensorboard(tiny_run):
    with open(tiny_run / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    train = read_scalars(tiny_run / "tensorboard" / "train")
    validation = read_scalars(tiny_run / "tensorboard" / "validation")
    assert set(train) == {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
    assert set(validation) == {"epoch_loss", "epoch_accuracy"}
    for tag, key in (("epoch_accuracy", "val_accuracy"), ("epoch_loss", "val_loss")):
        assert validation[tag] == [(int(row["epoch"]), pytest.approx(float(row[key]), rel=1e-6))
                                   for row in history]
    assert [step for step, _ in train["epoch_learning_rate"]] == [1, 2]


def test_no_tensorboard_writes_no_logs(runs_dir, tiny_data_dir):
    args = [part for text in TINY_OVERRIDES for part in ("--set", text)]
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(tiny_data_dir), *args,
                                      "--epochs", "1", "--run-dir", "quiet", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert (runs_dir.parent / "quiet" / "history.csv").is_file()
    assert not (runs_dir.parent / "quiet" / "tensorboard").exists()
