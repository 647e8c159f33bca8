"""Where the JAX default epoch goes, against the GEMM floor, side by side in one process.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/jax_steps.py [--rounds 60]

Five ways to run the steps of configs/default.yaml's epoch (Flatten -> Dense 256 -> Dense 10,
batches of 192 digits + 38 outliers, Adam with label smoothing) on the JAX backend, timed a
call of steps_per_execution (10) steps at a time, the five taking turns:

- fit: what `digitnet train` runs, Keras' own train function (its Python loop calls the jitted
  train_step once a batch) fed by `backends/jax.py`'s `training_batches` (one compiled call a
  batch gathers its jittered 28x28 windows on the device and converts uint8 -> float32);
- fit, general path: the same, its batches made by the path any other augmentation takes
  (gather the rows, convert, then jitter with `augmenter`) instead of the windows of
  `shifted_batch_maker` (the same batches, bit for bit);
- keras step: the same train function fed batches already made on the device (no input
  pipeline);
- hand-written: the same model, loss and Adam written in plain JAX, one jitted step a batch, on
  the same device batches (no Keras);
- hand-written 512: the same at batch 512 (the issue's hand-written loop), for as many images.

Each is reported as an epoch of 280 steps (64,400 images): from the median call and from the
fastest call (a machine loaded by other work blurs the fastest call least), against the GEMM
floor of bench/run.py (TensorFlow's 1024x1024 product, in a child process) from its mean rate
and from its fastest product. Prints a table and writes bench/results/jax-steps-<time>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from save import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FLOOR_CODE = """
import json, sys, time
from run import gemm_gflops, mlp_epoch_gflop
import tensorflow as tf
a, b = tf.random.normal((1024, 1024)), tf.random.normal((1024, 1024))
tf.matmul(a, b).numpy()
fastest = float("inf")
for _ in range(200):
    started = time.perf_counter()
    tf.matmul(a, b).numpy()
    fastest = min(fastest, time.perf_counter() - started)
print(json.dumps({"gemm_gflops": gemm_gflops(), "best_gemm_gflops": 2 * 1024**3 / fastest / 1e9,
                  "floor_gflop": mlp_epoch_gflop(),
                  "floor_all_gflop": mlp_epoch_gflop(int(sys.argv[1]))}))
"""


def floor(images: int) -> dict:
    """The GEMM floor's rates, measured by TensorFlow in a child process."""
    done = subprocess.run([sys.executable, "-c", FLOOR_CODE, str(images)],
                          cwd=Path(__file__).parent, capture_output=True, text=True, check=True,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow",
                               "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def hand_written(training, batch: int):
    """fn(params, moments, step, x, y) -> (params, moments): the default model's Adam step in
    plain JAX (Keras' Dense initialisers aside), jitted with its state donated."""
    import jax
    import jax.numpy as jnp

    smoothing, rate = training.label_smoothing, training.learning_rate

    def loss(params, x, y):
        w1, b1, w2, b2 = params
        hidden = jax.nn.relu(x.reshape(batch, -1) @ w1 + b1)
        probabilities = jax.nn.softmax(hidden @ w2 + b2)
        y = y * (1 - smoothing) + smoothing / y.shape[-1]
        return -jnp.mean(jnp.sum(y * jnp.log(jnp.clip(probabilities, 1e-7, 1.0)), -1))

    def step(params, moments, count, x, y):
        grads = jax.grad(loss)(params, x, y)
        count = count + 1
        first = [0.9 * m + 0.1 * g for m, g in zip(moments[0], grads)]
        second = [0.999 * v + 0.001 * g * g for v, g in zip(moments[1], grads)]
        scale = rate * jnp.sqrt(1 - 0.999**count) / (1 - 0.9**count)
        params = [p - scale * m / (jnp.sqrt(v) + 1e-7) for p, m, v in zip(params, first, second)]
        return params, (first, second), count

    return jax.jit(step, donate_argnums=(0, 1, 2))


def sides(splits, outliers, config, steps: int) -> dict:
    """name -> (fn() running one call of steps_per_execution steps, images per call)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from digitnet.config import NUM_CLASSES
    from digitnet.training.backends import jax as backend
    from digitnet.training.model import build_model
    from digitnet.training.train import compile_model

    training = config.training
    model = build_model(config.model)
    compile_model(model, training, len(splits.x_train))
    per_call = model.steps_per_execution
    stream = backend.training_batches(splits.x_train, splits.y_train, training, 0, steps,
                                      outliers)
    shifts_only = backend.only_shifts
    backend.only_shifts = lambda augment: False  # the path of any other augmentation
    general = backend.training_batches(splits.x_train, splits.y_train, training, 0, steps,
                                       outliers)
    next(general)  # makes its batch maker, with only_shifts as set here
    backend.only_shifts = shifts_only
    made = [next(stream) for _ in range(per_call)]
    model._symbolic_build(data_batch=made[0])
    model.make_train_function()
    holder = {"state": model._get_jax_state(
        trainable_variables=True, non_trainable_variables=True, optimizer_variables=True,
        metrics_variables=True, purge_model_variables=True)}
    device_batches = itertools.cycle(made)
    total = made[0][0].shape[0]

    def keras_call(batches):
        def call():
            _, holder["state"] = model.train_function(holder["state"], batches)
            return holder["state"]
        return call

    def hand_call(batch: int, calls_per_call: int):
        rng = np.random.default_rng(0)
        shapes = [(784, 256), (256,), (256, NUM_CLASSES), (NUM_CLASSES,)]
        own = {"params": [jnp.asarray(rng.normal(0, 0.05, s).astype(np.float32))
                          for s in shapes]}
        own["moments"] = ([jnp.zeros(s) for s in shapes], [jnp.zeros(s) for s in shapes])
        own["count"] = jnp.zeros((), jnp.float32)
        x = [jnp.asarray(rng.random((batch, 28, 28, 1), np.float32)) for _ in range(per_call)]
        y = [jax.nn.one_hot(jnp.asarray(rng.integers(0, NUM_CLASSES, batch)), NUM_CLASSES)
             for _ in range(per_call)]
        step = hand_written(training, batch)

        def call():
            for i in range(calls_per_call):
                own["params"], own["moments"], own["count"] = step(
                    own["params"], own["moments"], own["count"], x[i % per_call],
                    y[i % per_call])
            return own["params"]
        return call

    big = 512
    return {"fit": (keras_call(stream), total * per_call),
            "fit, general path": (keras_call(general), total * per_call),
            "keras step": (keras_call(device_batches), total * per_call),
            "hand-written": (hand_call(total, per_call), total * per_call),
            f"hand-written {big}": (hand_call(big, round(total * per_call / big)),
                                    big * round(total * per_call / big))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DIGITNET_DATA_DIR"))
    parser.add_argument("--rounds", type=int, default=60, help="calls timed per side")
    args = parser.parse_args()
    if not args.data_dir:
        raise SystemExit("set DIGITNET_DATA_DIR or pass --data-dir")
    from digitnet.training import backends

    backends.use("jax")
    import jax

    from digitnet.config import load_config
    from digitnet.data import load_mnist, split_validation
    from digitnet.training.outliers import outlier_images
    from digitnet.training.train import seed_everything, steps_per_epoch

    config = load_config(REPO / "configs/default.yaml")
    training = config.training
    seed_everything(training.seed, True)
    splits = split_validation(load_mnist(args.data_dir), 5000, training.seed)
    outliers = outlier_images(training.seed)
    steps = steps_per_epoch(len(splits.x_train), training)
    epoch_images = steps * (training.batch_size + round(training.outliers * training.batch_size))
    results = {"load_average_before": os.getloadavg(), "epoch_images": epoch_images,
               "floors": [floor(epoch_images)]}
    runs = sides(splits, outliers, config, steps)
    for call, _ in runs.values():  # compile
        jax.block_until_ready(call())
    seconds = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (call, _) in runs.items():
            started = time.perf_counter()
            jax.block_until_ready(call())
            seconds[name].append(time.perf_counter() - started)
    results["floors"].append(floor(epoch_images))
    results["load_average_after"] = os.getloadavg()
    results["sides"] = {name: {"images_per_call": images, "call_seconds": seconds[name],
                               "epoch_median": statistics.median(seconds[name]) *
                               epoch_images / images,
                               "epoch_best": min(seconds[name]) * epoch_images / images}
                        for name, (_, images) in runs.items()}
    print(report(results))
    print(f"Results written to {write_results('jax-steps', results)}")


def report(results: dict) -> str:
    floors = results["floors"]
    mean_rate = statistics.median(f["gemm_gflops"] for f in floors)
    best_rate = max(f["best_gemm_gflops"] for f in floors)
    gflop, gflop_all = floors[0]["floor_gflop"], floors[0]["floor_all_gflop"]
    floor_s, best_floor_s = gflop / mean_rate, gflop / best_rate
    lines = [f"GEMM floor of one default epoch: {floor_s:.3f} s at the mean rate "
             f"({mean_rate:.0f} GFLOP/s), {best_floor_s:.3f} s at the fastest product "
             f"({best_rate:.0f} GFLOP/s); x all: against the floor of the "
             f"{results['epoch_images']:,} images with outliers ({gflop_all / mean_rate:.3f} s, "
             f"{gflop_all / best_rate:.3f} s)",
             f"load average {results['load_average_before'][0]:.1f} before, "
             f"{results['load_average_after'][0]:.1f} after: a loaded machine, read ratios",
             "side                epoch s (median)  x floor  x all   epoch s (fastest)  x floor  "
             "x all"]
    for name, side in results["sides"].items():
        median, best = side["epoch_median"], side["epoch_best"]
        lines.append(f"{name:<19} {median:>16.3f} {median / floor_s:>8.2f} "
                     f"{median * mean_rate / gflop_all:>6.2f} {best:>19.3f} "
                     f"{best / best_floor_s:>8.2f} {best * best_rate / gflop_all:>6.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
