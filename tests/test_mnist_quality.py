"""Quality gates on the real MNIST: fail below a stated accuracy."""

import json

import pytest

pytestmark = pytest.mark.mnist

DEFAULT_MIN_TEST_ACCURACY = 0.980  # the lesson MLP with the default recipe (issue: >= 98.0%)


def test_default_config_reaches_98_percent(default_mnist_run):
    metrics = json.loads((default_mnist_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= DEFAULT_MIN_TEST_ACCURACY, metrics


def test_evaluate_agrees_with_training_metrics(default_mnist_run):
    from digitnet.evaluate import evaluate

    report = evaluate(default_mnist_run)
    metrics = json.loads((default_mnist_run / "metrics.json").read_text())
    assert report["examples"] == 10000
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
