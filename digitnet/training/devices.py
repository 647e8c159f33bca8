"""Choose the device TensorFlow trains on, before any tensor is created."""

from __future__ import annotations

from digitnet.errors import InputError

DEVICES = ("auto", "cpu", "gpu")


def select_device(device: str) -> str:
    """Make only the chosen device visible and return its description.

    Args:
      device: "auto" (a GPU when TensorFlow sees one, else the CPU), "cpu" or "gpu".

    Returns:
      A human-readable name such as "CPU" or "GPU:0 (/physical_device:GPU:0)".

    Raises:
      InputError: "gpu" was asked for and TensorFlow sees none.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise InputError("device", device, "TensorFlow sees no GPU on this machine (use auto "
                                           "or cpu)")
    if device == "cpu" or not gpus:
        tf.config.set_visible_devices([], "GPU")
        return "CPU"
    return f"GPU:0 ({gpus[0].name})"
