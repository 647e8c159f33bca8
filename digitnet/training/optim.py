"""The optimizer and its learning-rate schedule, built from the training config.

Adam and AdamW run TensorFlow's fused Adam kernel: Keras' Adam updates each variable with about
ten separate element-wise ops; one pass takes 10% off the default recipe's epoch time
(bench/fused_adam.py).
"""

from __future__ import annotations

import types

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
    """Make `optimizer` update each variable with TensorFlow's one-pass Adam kernel.

    The same arithmetic as Keras' Adam (AdamW's decay is applied before it, as in Keras). Only
    this instance's method changes, not its class, so saved models hold a plain Keras Adam that
    loads anywhere. Other backends keep Keras' own update.
    """
    if keras.backend.backend() == "tensorflow" and not optimizer.amsgrad:
        optimizer.update_step = types.MethodType(fused_adam_update, optimizer)
    return optimizer


def fused_adam_update(self, gradient, variable, learning_rate):
    """Keras' `Adam.update_step` as one `ResourceApplyAdam` op per variable."""
    import tensorflow as tf

    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    index = self._get_variable_index(variable)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=self._momentums[index].handle,
        v=self._velocities[index].handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
