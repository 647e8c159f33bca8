"""TensorBoard logs of a run's per-epoch scalars, written without the `tensorboard` package.

TensorFlow no longer installs `tensorboard` (2.20 on), and without it `tf.summary.scalar` (and so
Keras' TensorBoard callback) raises. digitnet/training/event_file.py writes the same event
records with the scalars plugin's metadata, without TensorFlow (Keras on JAX does not import
it), so logging costs no dependency and a few milliseconds per epoch. Only viewing them needs
`pip install tensorboard`.
"""

from __future__ import annotations

from pathlib import Path

import keras

from digitnet.training.event_file import EventFile
from digitnet.training.optim import current_learning_rate

# Which scalar goes to which writer and under which tag; Keras' TensorBoard callback uses the same
# layout (train/ and validation/, tags epoch_*), so TensorBoard overlays train and validation.
SCALARS = {
    "train": {"epoch_loss": "loss", "epoch_accuracy": "accuracy",
              "epoch_learning_rate": "learning_rate"},
    "validation": {"epoch_loss": "val_loss", "epoch_accuracy": "val_accuracy"},
}


class EpochScalars(keras.callbacks.Callback):
    """After each epoch, write loss, accuracy and the learning rate to `log_dir`.

    The step is the epoch number as in history.csv (1 for the first epoch). Writers flush every
    epoch, so TensorBoard shows a run live and an interrupted run keeps what it logged; a resumed
    run adds a new event file beside the old ones, which TensorBoard merges.
    """

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.writers = {}

    def on_train_begin(self, logs=None):
        self.writers = {name: EventFile(self.log_dir / name) for name in SCALARS}

    def on_epoch_end(self, epoch, logs=None):
        values = dict(logs or {})
        values["learning_rate"] = current_learning_rate(self.model.optimizer)
        for name, tags in SCALARS.items():
            self.write(name, epoch + 1, {tag: values[key] for tag, key in tags.items()
                                         if key in values})

    def write(self, writer_name: str, step: int, scalars: dict) -> None:
        """Write `scalars` ({tag: number}) at `step` and flush them to disk."""
        self.writers[writer_name].scalars(step, scalars)

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
