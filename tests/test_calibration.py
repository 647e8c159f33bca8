"""Temperature scaling: the fit, the fold into the model, ECE, and runs with and without it."""

import json
import shutil

import keras
import numpy as np
import pytest

from digitnet.config import load_config
from digitnet.evaluation.calibration import (
    calibration_scores,
    expected_calibration_error,
    fit_temperature,
    fold_temperature,
    logits_nll,
    model_logits,
    softmax,
    uncalibrated,
)
from digitnet.evaluation.evaluate import evaluate, format_report
from digitnet.inference.classifier import LiteRTClassifier
from digitnet.runs import layout
from digitnet.runs.layout import checkpoint_file
from digitnet.training.model import build_model
from digitnet.training.resume import resume_config
from digitnet.training.train import train_and_evaluate
from tests.conftest import runs_root


def sampled(scale: float, count: int = 2000, seed: int = 0):
    """Logits `scale` times too sharp, with labels drawn from the unscaled softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, (count, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(logits)])
    return logits * scale, labels


@pytest.mark.parametrize("scale", [3.0, 0.4])
def test_fitted_temperature_undoes_over_and_under_confidence(scale):
    logits, labels = sampled(scale)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(scale, rel=0.15)
    assert logits_nll(logits, labels, temperature) < logits_nll(logits, labels) - 0.02
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits / temperature), labels)
    assert after < before / 2 and after < 0.03


def test_a_few_images_all_right_do_not_send_the_temperature_to_zero():
    logits = np.eye(10)[np.arange(10)] * 4.0
    temperature = fit_temperature(logits, np.arange(10))
    assert 0.2 < temperature < 1.0  # sharper, but bounded by the prior
    assert fit_temperature(np.zeros((0, 10)), np.zeros(0, int)) == 1.0


def test_ece_is_the_weighted_gap_between_confidence_and_accuracy():
    # 10 images at confidence 0.9 (8 right) and 10 at 0.55 (6 right): |0.8-0.9|, |0.6-0.55|
    probabilities = np.full((20, 10), 0.0)
    probabilities[:10, 0], probabilities[:10, 1] = 0.9, 0.1
    probabilities[10:, 0], probabilities[10:, 1] = 0.55, 0.45
    labels = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.075)
    scores = calibration_scores(probabilities, labels)
    assert scores["median_confidence_correct"] == pytest.approx(0.9)
    assert scores["nll"] == pytest.approx(-np.mean(np.log(
        [0.9] * 8 + [0.1] * 2 + [0.55] * 6 + [0.45] * 4)))


def test_folded_model_gives_softmax_of_logits_over_t():
    keras.utils.set_random_seed(1)
    model = build_model(load_config(None).model)
    images = np.random.default_rng(2).random((64, 28, 28, 1)).astype(np.float32)
    logits = model_logits(model, images)
    fold_temperature(model, 0.37)
    folded = model.predict(images, verbose=0)
    np.testing.assert_allclose(folded, softmax(logits / 0.37), atol=2e-6)
    np.testing.assert_allclose(uncalibrated(folded, 0.37), softmax(logits), atol=2e-5)


def test_training_folds_the_temperature_into_the_best_model_and_its_litert_export(tiny_run):
    metrics = json.loads((tiny_run / layout.METRICS_FILE).read_text())
    temperature = metrics["temperature"]
    val = metrics["calibration"]["val"]
    assert val["nll_after"] <= val["nll_before"] + 1e-9  # fitted on these images
    best = keras.saving.load_model(tiny_run / layout.BEST_MODEL)
    trained = keras.saving.load_model(checkpoint_file(tiny_run, metrics["best_epoch"]))
    images = np.random.default_rng(3).random((20, 28, 28, 1)).astype(np.float32)
    expected = softmax(model_logits(trained, images) / temperature)
    np.testing.assert_allclose(best.predict(images, verbose=0), expected, atol=2e-6)
    litert = LiteRTClassifier(tiny_run / "model-best.tflite").predict(images)
    np.testing.assert_allclose(litert, expected, atol=1e-5)


def test_resume_recalibrates_from_the_uncalibrated_checkpoints(tiny_run, tiny_data_dir,
                                                                tmp_path):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    with runs_root(tmp_path):
        result = train_and_evaluate(resume_config(run_dir, shortcuts={"training.epochs": 3}),
                                    run_dir, str(tiny_data_dir), resume=True)
    metrics = result.metrics
    assert metrics["epochs"] == 3 and metrics["temperature"] > 0
    best = keras.saving.load_model(run_dir / layout.BEST_MODEL)
    trained = keras.saving.load_model(checkpoint_file(run_dir, metrics["best_epoch"]))
    kernel, bias = best.layers[-1].get_weights()
    trained_kernel, trained_bias = trained.layers[-1].get_weights()
    np.testing.assert_allclose(kernel, trained_kernel / metrics["temperature"], rtol=1e-6)
    np.testing.assert_allclose(bias, trained_bias / metrics["temperature"], rtol=1e-6)


def test_evaluate_reports_calibration_before_and_after(tiny_run, tiny_data_dir, tmp_path):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    report = evaluate(run_dir, "val", str(tiny_data_dir))
    calibration = report["calibration"]
    metrics = json.loads((run_dir / layout.METRICS_FILE).read_text())
    assert calibration["temperature"] == metrics["temperature"]
    assert calibration["nll"] == pytest.approx(metrics["calibration"]["val"]["nll_after"],
                                               abs=1e-4)
    assert calibration["before"]["nll"] == pytest.approx(
        metrics["calibration"]["val"]["nll_before"], abs=1e-3)
    assert len(calibration["reliability"]) == 15
    saved = json.loads((run_dir / "evaluation-val.json").read_text())
    assert saved["calibration"]["ece"] == calibration["ece"]
    assert "ECE:" in format_report(report) and "before it" in format_report(report)


def test_a_run_made_before_calibration_still_evaluates(tiny_run, tiny_data_dir, tmp_path):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    metrics = json.loads((run_dir / layout.METRICS_FILE).read_text())
    for key in ("temperature", "calibration"):
        metrics.pop(key)
    (run_dir / layout.METRICS_FILE).write_text(json.dumps(metrics))
    report = evaluate(run_dir, "test", str(tiny_data_dir))
    assert report["calibration"]["temperature"] is None
    assert "before" not in report["calibration"]
    assert "before it" not in format_report(report)
    assert (run_dir / "plots" / "reliability-test.png").is_file()
