"""Kill -9 a full-MNIST run in the middle of an epoch, resume it, compare with an unbroken run.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/resume_exact.py \\
        [--config configs/default.yaml] [--set SECTION.KEY=VALUE]... [--seed 0] \\
        [--kill-epoch 3] [--workdir DIR]

Issue #5: a resumed run must end with the same weights as an uninterrupted run with the same
config and seed, bit for bit on the CPU. This trains the config once without interruption, then
again in a child process that is killed with SIGKILL halfway through --kill-epoch, resumes that
run with `digitnet train --resume`, and compares every variable of model-last.keras and
model-best.keras (weights, optimizer moments and iteration count) and the history. Prints the
largest absolute difference per variable and overall; exits 1 unless everything is identical.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the claim is bit-identical on the CPU

REPO = Path(__file__).resolve().parents[1]
DIGITNET = [sys.executable, "-m", "digitnet"]
CHILD = [sys.executable, str(REPO / "tests" / "train_child.py")]  # digitnet, with a ready file
MNIST_TRAIN_IMAGES = 60000


def train(command: list[str], args, run_dir: Path) -> None:
    """Run `digitnet train` for the config and seed into `run_dir`; fail loudly."""
    subprocess.run([*command, *train_args(args, run_dir)], check=True,
                   env=child_env(args.workdir))


def train_args(args, run_dir: Path) -> list[str]:
    """`train` and its options for the config, overrides and seed, into `run_dir`."""
    sets = [part for text in args.overrides for part in ("--set", text)]
    return ["train", "--config", args.config, *sets, "--seed", str(args.seed), "--run-dir",
            str(run_dir), "--data-dir", args.data_dir]


def child_env(workdir: Path, **extra) -> dict:
    return {**os.environ, "DIGITNET_RUNS_DIR": str(workdir), **extra}


def kill_mid_epoch(args, run_dir: Path) -> str:
    """Train in a child process and SIGKILL it halfway through epoch `args.kill_epoch`."""
    ready = args.workdir / "ready"
    env = child_env(args.workdir, DIGITNET_TEST_READY=str(ready),
                    DIGITNET_TEST_EPOCH=str(args.kill_epoch),
                    DIGITNET_TEST_STEP=str(epoch_steps(args) // 2),
                    DIGITNET_TEST_HOLD="600")
    process = subprocess.Popen([*CHILD, *train_args(args, run_dir)], env=env)
    while not ready.exists():
        if process.poll() is not None:
            sys.exit(f"the child ended (status {process.returncode}) before the kill point")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    pid, epoch, step = ready.read_text().split()
    return f"killed pid {pid} with SIGKILL at step {step} of epoch {epoch} (status " \
           f"{process.returncode})"


def epoch_steps(args) -> int:
    """Training steps per epoch of the config on MNIST."""
    from digitnet.config import load_config
    from digitnet.training.train import steps_per_epoch

    config = load_config(args.config, tuple(args.overrides))
    return steps_per_epoch(MNIST_TRAIN_IMAGES - config.data.validation_size, config.training)


def variables(path: Path) -> list:
    """(name, array) for every weight and optimizer variable of a .keras file."""
    from digitnet.backend import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    import numpy as np

    model = keras.saving.load_model(path)
    return [(v.path, np.asarray(v)) for v in [*model.weights, *model.optimizer.variables]]


def compare_models(name: str, ours: Path, reference: Path) -> float:
    """Print the max abs difference of each variable; return the largest."""
    import numpy as np

    worst = 0.0
    pairs = zip(variables(ours), variables(reference), strict=True)
    for (path, a), (other, b) in pairs:
        assert path == other and a.shape == b.shape, (path, other)
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        worst = max(worst, diff)
        print(f"  {name:<16} {path:<44} {str(a.shape):<12} max |diff| {diff:.1e}")
    return worst


def history(run_dir: Path) -> list[dict]:
    """history.csv without the wall-clock column."""
    rows = csv.DictReader((run_dir / "history.csv").open())
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="passed on to digitnet train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kill-epoch", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("DIGITNET_DATA_DIR"))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if not args.data_dir:
        sys.exit("set DIGITNET_DATA_DIR or pass --data-dir (full MNIST)")
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="resume-exact-"))
    reference, resumed = args.workdir / "uninterrupted", args.workdir / "resumed"

    train(DIGITNET, args, reference)
    print(kill_mid_epoch(args, resumed), flush=True)
    state = json.loads((resumed / "state.json").read_text())
    print(f"state.json after the kill: status {state['status']}, epoch {state['epoch']} of "
          f"{state['epochs']}", flush=True)
    subprocess.run([*DIGITNET, "train", "--resume", str(resumed)], check=True,
                   env=child_env(args.workdir))

    print(f"\nComparing {resumed} with {reference}:")
    worst = max(compare_models(name, resumed / name, reference / name)
                for name in ("model-last.keras", "model-best.keras"))
    same_history = history(resumed) == history(reference)
    print(f"history.csv identical (seconds column aside): {same_history}; "
          f"epochs {[row['epoch'] for row in history(resumed)]}")
    print(f"overall max |diff| {worst!r}")
    identical = worst == 0.0 and same_history
    print("IDENTICAL" if identical else "DIFFERENT")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
