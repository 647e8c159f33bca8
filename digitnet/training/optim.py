"""The optimizer and its learning-rate schedule, built from the training config.

On TensorFlow, Adam and AdamW run its fused Adam kernel: Keras' Adam updates each variable with
about ten separate element-wise ops; one pass takes 10% off the default recipe's epoch time
(bench/fused_adam.py).
"""

from __future__ import annotations

import keras

from digitnet.config import TrainingConfig


def make_schedule(training: TrainingConfig, epoch_steps: int):
    """Learning rate per step: linear warm-up to the peak, then constant or cosine to zero."""
    warmup = int(training.warmup_epochs * epoch_steps)
    total = training.epochs * epoch_steps
    if training.schedule == "constant" and warmup == 0:
        return training.learning_rate
    decay_steps = max(total - warmup, 1) if training.schedule == "cosine" else 10**12
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else training.learning_rate,
        decay_steps=decay_steps, alpha=0.0,
        warmup_target=training.learning_rate if warmup else None, warmup_steps=warmup)


def make_optimizer(training: TrainingConfig, epoch_steps: int):
    """The configured optimizer, with the schedule for `epoch_steps` steps per epoch."""
    rate = make_schedule(training, epoch_steps)
    if training.optimizer == "adam":
        return fuse_adam(keras.optimizers.Adam(rate))
    if training.optimizer == "adamw":
        return fuse_adam(keras.optimizers.AdamW(rate, weight_decay=training.weight_decay))
    if training.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)


def fuse_adam(optimizer: keras.optimizers.Adam) -> keras.optimizers.Adam:
    """`optimizer` with the backend's fastest update: TensorFlow's one-pass Adam kernel, or as is
    (digitnet/training/backends/)."""
    from digitnet.training import backends

    return backends.current().fuse_adam(optimizer)


def current_learning_rate(optimizer) -> float:
    """The rate of the optimizer's next step, as a float (for history.csv and TensorBoard)."""
    from digitnet.training import backends

    return backends.current().learning_rate(optimizer)


def eager_learning_rate(optimizer) -> float:
    """The rate of the optimizer's next step, its schedule evaluated eagerly (Keras' way; a
    backend may evaluate it its own way: `current_learning_rate`)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
