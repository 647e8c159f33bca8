"""Run `digitnet` commands in one process that sees two CPU devices (for --devices tests).

    python tests/devices_child.py BACKEND '[["train", "--devices", "2", ...], ...]'

A command that starts with "--no-litert" runs without the LiteRT export of its run.

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
    from train_child import skip_litert  # beside this file

    import digitnet.training.train as train
    from digitnet.cli import cli
    from digitnet.export import converter

    export, prepare, early = train.start_litert_export, train.prepare_export, converter.start_early
    for command in commands:
        # "--no-litert" first: that run's LiteRT export is not what its test checks; skip its time
        skip = command[:1] == ["--no-litert"]
        train.start_litert_export = skip_litert if skip else export
        train.prepare_export = (lambda: None) if skip else prepare
        converter.start_early = (lambda backend: None) if skip else early
        cli.main(command[skip:], prog_name="digitnet", standalone_mode=False)
    print("tensorflow imported" if "tensorflow" in sys.modules else "no tensorflow")
