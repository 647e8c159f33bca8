"""Run `digitnet` commands in one process that sees two CPU devices (for --devices tests).

    python tests/devices_child.py BACKEND '[["train", "--devices", "2", ...], ...]'

TensorFlow gets two logical CPU devices (tf.config.set_logical_device_configuration); JAX two
host devices (XLA_FLAGS=--xla_force_host_platform_device_count=2). Both must be set up before the
backend starts, hence a process of its own. Prints whether TensorFlow was imported.
"""

from __future__ import annotations

import json
import os
import sys


def two_cpu_devices(backend: str) -> None:
    if backend == "jax":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


if __name__ == "__main__":
    backend, commands = sys.argv[1], json.loads(sys.argv[2])
    os.environ["KERAS_BACKEND"] = backend
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from digitnet.training import backends

    backends.use(backend)
    two_cpu_devices(backend)
    from digitnet.cli import cli

    for command in commands:
        cli.main(command, prog_name="digitnet", standalone_mode=False)
    print("tensorflow imported" if "tensorflow" in sys.modules else "no tensorflow")
