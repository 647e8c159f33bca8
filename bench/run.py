"""Speed benchmarks, side by side with the lesson baseline in one run, reported as ratios.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/run.py [--seeds 3] [--cnn]

Measures (issue #4): the default recipe's test accuracy and train_seconds over seeds against the
lesson recipe's time to reach 98.0%; epoch time against the GEMM floor; the one-epoch CNN
(configs/cnn-one-epoch.yaml) over the same seeds; `digitnet --help` and
single-image `digitnet predict` latency; evaluate of the 10,000 test images; batch predict of
10,000 PNG files. Prints a table and writes bench/results/speed-<time>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402
from predict_speed import write_pngs  # noqa: E402
from save import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DIGITNET = [sys.executable, "-m", "digitnet"]
TARGET_ACCURACY = 0.980


def machine() -> dict:
    """What ran the benchmark."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def train_cli(config: str, seed: int, data_dir: str, workdir: Path) -> dict:
    """Run `digitnet train` in a fresh process; return its metrics and per-epoch history."""
    run_dir = workdir / f"{Path(config).stem}-seed{seed}"
    subprocess.run([*DIGITNET, "train", "--config", config, "--seed", str(seed), "--run-dir",
                    str(run_dir), "--data-dir", data_dir], check=True, capture_output=True,
                   env={**os.environ, "DIGITNET_RUNS_DIR": str(workdir)})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["history"] = list(csv.DictReader((run_dir / "history.csv").open()))
    metrics["run_dir"] = str(run_dir)
    return metrics


def lesson_time_to_target(data_dir: str, max_epochs: int = 12) -> dict:
    """Train the lesson as taught, in plain Keras; the training seconds until test accuracy >= 98%.

    Plain `keras.optimizers.Adam` (not digitnet's fused one), batch 32, constant 1e-3, sparse
    cross-entropy, numpy arrays straight into `fit`: configs/lesson.yaml, without digitnet.
    """
    from digitnet.data import load_mnist, split_validation, to_model_input

    keras.utils.set_random_seed(0)
    splits = split_validation(load_mnist(data_dir), 5000, 0)
    x_train, x_test = to_model_input(splits.x_train), to_model_input(splits.x_test)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    timer = TestAccuracyTimer(x_test, splits.y_test)
    model.fit(x_train, splits.y_train, batch_size=32, epochs=max_epochs, verbose=0,
              callbacks=[timer])
    keras.backend.clear_session()
    return {"epochs_to_target": timer.reached_epoch, "seconds_to_target": timer.reached_seconds,
            "epoch_seconds": timer.epoch_seconds, "test_accuracy": timer.accuracies}


class TestAccuracyTimer(keras.callbacks.Callback):
    """Training seconds per epoch (test evaluation excluded) and test accuracy per epoch."""

    def __init__(self, x_test, y_test):
        super().__init__()
        self.x_test, self.y_test = x_test, y_test
        self.epoch_seconds, self.accuracies = [], []
        self.reached_epoch = self.reached_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self.started)
        probabilities = self.model.predict(self.x_test, batch_size=1000, verbose=0)
        self.accuracies.append(float(np.mean(probabilities.argmax(1) == self.y_test)))
        if self.reached_epoch is None and self.accuracies[-1] >= TARGET_ACCURACY:
            self.reached_epoch, self.reached_seconds = epoch + 1, sum(self.epoch_seconds)
            self.model.stop_training = True


def gemm_gflops(seconds: float = 2.0) -> float:
    """float32 matmul throughput on this machine with TensorFlow's CPU kernels."""
    import tensorflow as tf

    a = tf.random.normal((1024, 1024))
    b = tf.random.normal((1024, 1024))
    tf.matmul(a, b).numpy()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tf.matmul(a, b).numpy()
        count += 1
    return 2 * 1024**3 * count / (time.perf_counter() - started) / 1e9


def mlp_epoch_gflop(train_images: int = 55000, validation_images: int = 5000) -> float:
    """Forward + backward (3x forward) on the training images, forward on validation."""
    macs = 784 * 256 + 256 * 10
    return (6 * macs * train_images + 2 * macs * validation_images) / 1e9


def wall(command: list[str], repeat: int = 5, **kwargs) -> float:
    """Median wall seconds of a whole process."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, **kwargs)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def evaluate_seconds(run_dir: str, data_dir: str) -> float:
    """Seconds to score the 10,000 test images once the model and data are loaded."""
    from digitnet.data import load_mnist, to_model_input
    from digitnet.evaluation.evaluate import score
    from digitnet.inference.classifier import load_classifier

    classifier = load_classifier(Path(run_dir) / "model-best.keras")
    mnist = load_mnist(data_dir)
    images, labels = to_model_input(mnist.x_test), mnist.y_test
    started = time.perf_counter()
    score(classifier.predict(images), labels)
    return time.perf_counter() - started


def benchmark(data_dir: str, seeds: int, with_cnn: bool) -> dict:
    """Every measurement, side by side; see the module docstring."""
    results: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        lesson = lesson_time_to_target(data_dir)
        runs = [train_cli(str(REPO / "configs/default.yaml"), seed, data_dir, workdir)
                for seed in range(seeds)]
        results["lesson"] = lesson
        results["default"] = summarise_runs(runs)
        # A lesson that never reaches the target gives a lower bound: all the time it trained.
        lesson_seconds = lesson["seconds_to_target"] or sum(lesson["epoch_seconds"])
        results["default"]["speedup_vs_lesson"] = (
            lesson_seconds / results["default"]["median_train_seconds"])
        results["default"]["speedup_is_lower_bound"] = lesson["seconds_to_target"] is None
        gflops = gemm_gflops()
        floor = mlp_epoch_gflop() / gflops
        results["epoch"] = {"gemm_gflops": gflops, "floor_seconds": floor,
                            "median_epoch_seconds": results["default"]["median_epoch_seconds"],
                            "ratio_to_floor": results["default"]["median_epoch_seconds"] / floor}
        results["latency"] = latencies(runs[0]["run_dir"], data_dir, workdir)
        results["cnn_one_epoch"] = summarise_runs([
            train_cli(str(REPO / "configs/cnn-one-epoch.yaml"), seed, data_dir, workdir)
            for seed in range(seeds)])
        if with_cnn:
            results["cnn"] = summarise_runs([train_cli(str(REPO / "configs/cnn.yaml"), 0,
                                                       data_dir, workdir)])
    return results


def summarise_runs(runs: list[dict]) -> dict:
    """Accuracy and timing over seeds; steady-state epoch time excludes the compiling epoch 1."""
    epochs = [float(row["seconds"]) for run in runs for row in run["history"][1:]]
    return {
        "test_accuracy": [run["test_accuracy"] for run in runs],
        "train_seconds": [run["train_seconds"] for run in runs],
        "median_train_seconds": statistics.median(run["train_seconds"] for run in runs),
        "min_test_accuracy": min(run["test_accuracy"] for run in runs),
        "median_epoch_seconds": statistics.median(epochs) if epochs else None,
    }


def latencies(run_dir: str, data_dir: str, workdir: Path) -> dict:
    """CLI start-up, single-image predict, evaluate and batch predict timings."""
    pngs = write_pngs(data_dir, workdir / "pngs", 10000)
    one = [*DIGITNET, "predict", str(pngs[0]), "--model", run_dir]
    started = time.perf_counter()
    subprocess.run([*DIGITNET, "predict", str(workdir / "pngs"), "--model", run_dir, "--json"],
                   check=True, stdout=subprocess.DEVNULL)
    batch_seconds = time.perf_counter() - started
    return {
        "help_seconds": wall([*DIGITNET, "--help"]),
        "predict_one_seconds": wall(one),
        "evaluate_10k_seconds": evaluate_seconds(run_dir, data_dir),
        "batch_predict_images_per_second": len(pngs) / batch_seconds,
    }


def report(results: dict) -> str:
    """A readable summary of the results with each target beside it."""
    default, lesson, epoch, latency = (results[k] for k in ("default", "lesson", "epoch",
                                                            "latency"))
    lines = [
        f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores",
        f"default: test accuracy {default['test_accuracy']} (target >= 0.980 each), "
        f"train_seconds {default['train_seconds']} (median target <= 4 s)",
        f"lesson:  98.0% after {lesson['epochs_to_target']} epochs, "
        f"{lesson['seconds_to_target']:.1f} s of training" if lesson["seconds_to_target"] else
        f"lesson:  never reached 98.0% in {len(lesson['epoch_seconds'])} epochs "
        f"({sum(lesson['epoch_seconds']):.1f} s; best {max(lesson['test_accuracy']):.4f})",
        f"speedup: {'>= ' if default['speedup_is_lower_bound'] else ''}"
        f"{default['speedup_vs_lesson']:.1f}x less time to 98% (target >= 5x)",
        f"epoch:   {epoch['median_epoch_seconds']:.3f} s vs GEMM floor "
        f"{epoch['floor_seconds']:.3f} s ({epoch['gemm_gflops']:.0f} GFLOP/s): "
        f"{epoch['ratio_to_floor']:.2f}x (target <= 1.5x)",
        f"help:    {latency['help_seconds']:.3f} s (target <= 0.2 s)",
        f"predict: one image {latency['predict_one_seconds']:.3f} s (target <= 0.25 s); "
        f"10,000 PNGs at {latency['batch_predict_images_per_second']:.0f} images/s "
        f"(target >= 3000)",
        f"evaluate: 10,000 test images in {latency['evaluate_10k_seconds']:.3f} s after loading "
        f"(target <= 1 s)",
    ]
    one = results["cnn_one_epoch"]
    lines.append(f"cnn one epoch: test accuracy {one['test_accuracy']} (target >= 0.990), "
                 f"train_seconds {one['train_seconds']} (target <= 15 s)")
    if "cnn" in results:
        cnn = results["cnn"]
        lines.append(f"cnn:     test accuracy {cnn['test_accuracy']} in {cnn['train_seconds']} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DIGITNET_DATA_DIR"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cnn", action="store_true", help="also train configs/cnn.yaml")
    args = parser.parse_args()
    if not args.data_dir:
        sys.exit("bench/run.py: set DIGITNET_DATA_DIR or --data-dir to a local MNIST")
    results = benchmark(args.data_dir, args.seeds, args.cnn)
    out = write_results("speed", results)
    print(report(results))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
