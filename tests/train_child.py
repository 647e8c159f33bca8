"""Run the digitnet CLI in a child process that says when training reaches a given step.

Used by tests/test_resume.py and bench/resume_exact.py to kill or interrupt training in the
middle of an epoch. At the end of step $DIGITNET_TEST_STEP (or the first step after it) of
epoch $DIGITNET_TEST_EPOCH (1-based), the child writes the file $DIGITNET_TEST_READY, then
holds still until the file $DIGITNET_TEST_GO exists or $DIGITNET_TEST_HOLD seconds have passed,
so that a signal sent on seeing the ready file lands in the middle of that epoch. With
$DIGITNET_TEST_FIT=N only the N-th training in the process (a sweep's N-th trial) is watched;
$DIGITNET_TEST_NO_LITERT=1 skips each run's LiteRT export (a third of a tiny run's time);
$DIGITNET_TEST_CONVERTER=CODE runs the Python code CODE as the LiteRT converter process.
With $DIGITNET_TEST_WEIGHTS set, the child saves its model's weights there (.npz) at the end of
training (each process of a multi-process job holds its own copy).

    DIGITNET_TEST_READY=/tmp/ready DIGITNET_TEST_EPOCH=3 DIGITNET_TEST_STEP=3 \\
        python tests/train_child.py train --run-dir runs/x ...
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def ready_callback():
    """A Keras callback that writes the ready file at the configured step, then holds."""
    import keras

    class ReadyAt(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.path = Path(os.environ["DIGITNET_TEST_READY"])
            self.epoch = int(os.environ.get("DIGITNET_TEST_EPOCH", "1"))
            self.step = int(os.environ.get("DIGITNET_TEST_STEP", "0"))
            self.hold = float(os.environ.get("DIGITNET_TEST_HOLD", "0"))
            self.go = Path(os.environ.get("DIGITNET_TEST_GO") or self.path.with_suffix(".go"))
            self.current = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.current = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            if self.current == self.epoch and batch >= self.step and not self.path.exists():
                self.path.write_text(f"{os.getpid()} {self.current} {batch}\n")
                deadline = time.monotonic() + self.hold
                while time.monotonic() < deadline and not self.go.exists():
                    time.sleep(0.02)

    return ReadyAt()


def weights_callback():
    """A Keras callback that saves the model's weights to $DIGITNET_TEST_WEIGHTS after fit."""
    import keras
    import numpy as np

    class SaveWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            weights = [np.asarray(w) for w in self.model.weights]
            np.savez(os.environ["DIGITNET_TEST_WEIGHTS"], *weights)

    return SaveWeights()


def skip_litert(model, path, source):
    """A stand-in for digitnet.training.train.start_litert_export that exports nothing: its
    wait returns the export record's part that metrics.json takes (the .keras file's sha256)."""
    from digitnet.runs import layout

    return lambda: {"source": {"sha256": layout.file_sha256(source)}}


def patch_fit() -> None:
    """Add the test callbacks to those that digitnet.training.train.fit passes to Keras."""
    import digitnet.training.train as train

    original = train.fit
    watched = int(os.environ.get("DIGITNET_TEST_FIT", "1"))
    calls = []

    def fit(model, splits, config, first_epoch=0, callbacks=(), **kwargs):
        calls.append(first_epoch)
        extra = [make() for variable, make in (("DIGITNET_TEST_READY", ready_callback),
                                               ("DIGITNET_TEST_WEIGHTS", weights_callback))
                 if os.environ.get(variable) and len(calls) == watched]
        return original(model, splits, config, first_epoch=first_epoch,
                        callbacks=(*callbacks, *extra), **kwargs)

    train.fit = fit


if __name__ == "__main__":
    from digitnet.backend import quiet_backend
    from digitnet.cli import main

    quiet_backend()
    if any(os.environ.get(f"DIGITNET_TEST_{name}") for name in ("READY", "WEIGHTS", "NO_LITERT")):
        from digitnet.training import backends

        # the patches import Keras: on the backend the test chose, without its start-up lines
        backends.use(os.environ["KERAS_BACKEND"])
    if os.environ.get("DIGITNET_TEST_READY") or os.environ.get("DIGITNET_TEST_WEIGHTS"):
        patch_fit()
    if os.environ.get("DIGITNET_TEST_CONVERTER"):  # Python code run as the LiteRT converter
        import digitnet.export.converter

        digitnet.export.converter.command = lambda: [
            sys.executable, "-c", os.environ["DIGITNET_TEST_CONVERTER"]]
    if os.environ.get("DIGITNET_TEST_NO_LITERT"):
        import digitnet.export.converter
        import digitnet.training.train

        digitnet.training.train.start_litert_export = skip_litert
        digitnet.training.train.prepare_export = lambda: None
        digitnet.export.converter.start_early = lambda backend: None
    main()
