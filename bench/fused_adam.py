"""Epoch time of the default recipe with digitnet's fused Adam against Keras' own Adam.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/fused_adam.py [--rounds 3]

Each round trains configs/default.yaml for 3 epochs twice in this process, once per optimizer,
alternating which goes first; the steady epochs (2 and 3) of all rounds give each side's median.
Also prints each side's test accuracy: the same arithmetic (tests/test_optim.py checks the
steps agree within 1e-6), though rounding differences grow over thousands of steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402

from digitnet.config import load_config  # noqa: E402
from digitnet.data import load_mnist, split_validation, to_model_input  # noqa: E402
from digitnet.training.model import build_model  # noqa: E402
from digitnet.training.train import (  # noqa: E402
    compile_model,
    seed_everything,
    steps_per_epoch,
    training_batches,
)

REPO = Path(__file__).resolve().parents[1]


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def train(splits, fused: bool) -> tuple[list[float], float]:
    """Steady epoch seconds and test accuracy after 3 epochs of the default recipe."""
    config = load_config(REPO / "configs/default.yaml", ("training.epochs=3",))
    seed_everything(0, False)
    model = build_model(config.model)
    compile_model(model, config.training, len(splits.x_train))
    if not fused:
        del model.optimizer.update_step  # back to keras.optimizers.Adam.update_step
    timer = EpochTimer()
    model.fit(training_batches(splits.x_train, splits.y_train, config.training, 0),
              steps_per_epoch=steps_per_epoch(len(splits.x_train), config.training),
              epochs=3, verbose=0, callbacks=[timer])
    probabilities = model.predict(to_model_input(splits.x_test), batch_size=1000, verbose=0)
    keras.backend.clear_session()
    return timer.seconds[1:], float(np.mean(probabilities.argmax(1) == splits.y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DIGITNET_DATA_DIR"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.data_dir:
        sys.exit("bench/fused_adam.py: set DIGITNET_DATA_DIR or --data-dir to a local MNIST")
    splits = split_validation(load_mnist(args.data_dir), 5000, 0)
    epochs, accuracy = {True: [], False: []}, {}
    for round_ in range(args.rounds):
        for fused in ((True, False) if round_ % 2 == 0 else (False, True)):
            seconds, accuracy[fused] = train(splits, fused)
            epochs[fused] += seconds
    for fused, name in ((False, "Keras Adam"), (True, "fused Adam")):
        print(f"{name}: median epoch {statistics.median(epochs[fused]):.3f} s "
              f"({len(epochs[fused])} epochs), test accuracy {accuracy[fused]:.4f}")
    ratio = statistics.median(epochs[True]) / statistics.median(epochs[False])
    print(f"fused / Keras epoch time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
