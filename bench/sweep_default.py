"""Does a sweep find a recipe at least as accurate as configs/default.yaml in no more time?

    DIGITNET_DATA_DIR=../shared/data/mnist nice -n 10 .venv/bin/python bench/sweep_default.py \\
        [--trials 30] [--seeds 3] [--cap SECONDS] [--workdir DIR] [--best CONFIG]

1. Trains configs/default.yaml (seed 0): its validation accuracy and training time.
2. Runs configs/sweeps/default-mlp.yaml for --trials trials. Its space holds the budget (no more
   epochs, width or steps than the default's), because a timed cap on a shared machine prunes
   by the neighbours' load; --cap SECONDS adds a timed cap for a quiet machine.
3. Trains the default and the sweep's best.yaml side by side (alternating) on --seeds other
   seeds (1, 2, ...) and compares test accuracy and training time, seed by seed.

The sweep chooses by validation accuracy; the verdict uses the test accuracy of fresh seeds.
"Clearly better" means better on every seed, by at least 0.1 points on average, in at most 5%
more training time. Timings on a shared machine are noisy: each comparison is a ratio of runs
taken side by side. Writes WORKDIR/result.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
SWEEP = REPO / "configs" / "sweeps" / "default-mlp.yaml"
MIN_GAIN = 0.001  # accuracy: 0.1 points on average
MAX_TIME_RATIO = 1.05


def train(config_path: Path, seed: int, run_dir: Path, data_dir: str) -> dict:
    """Train `config_path` with `seed` into `run_dir`; its metrics."""
    import keras

    from digitnet.config import load_config
    from digitnet.training.train import train_and_evaluate

    run_dir.mkdir(parents=True)
    config = load_config(config_path, shortcuts={"training.seed": seed})
    metrics = train_and_evaluate(config, run_dir, data_dir, tensorboard=False).metrics
    keras.backend.clear_session()
    return {key: metrics[key] for key in ("val_accuracy", "test_accuracy", "train_seconds",
                                           "epochs")}


def sweep(workdir: Path, trials: int, cap: float, data_dir: str) -> tuple[dict, Path, float]:
    """Run the default-mlp sweep with `cap`; (its result summary, best.yaml, wall seconds)."""
    from digitnet.sweep.runner import run_sweep

    spec = yaml.safe_load(SWEEP.read_text())
    spec.update(name="bench-default-mlp", base=str(DEFAULT), trials=trials)
    spec["objective"]["max_train_seconds"] = round(cap, 2) if cap else 0
    path = workdir / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    started = time.perf_counter()
    result = run_sweep(path, data_dir=data_dir)
    return ({"progress": result.progress, "best": result.best}, result.best_config,
            time.perf_counter() - started)


def compare(best: Path, seeds: int, workdir: Path, data_dir: str) -> list[dict]:
    """Default and best, side by side, on seeds 1..seeds."""
    rows = []
    for seed in range(1, seeds + 1):
        default = train(DEFAULT, seed, workdir / f"default-seed{seed}", data_dir)
        found = train(best, seed, workdir / f"best-seed{seed}", data_dir)
        rows.append({"seed": seed, "default": default, "best": found})
        print(f"seed {seed}: default {default['test_accuracy']:.4f} in "
              f"{default['train_seconds']:.2f} s; best {found['test_accuracy']:.4f} in "
              f"{found['train_seconds']:.2f} s", flush=True)
    return rows


def verdict(rows: list[dict]) -> dict:
    gains = [r["best"]["test_accuracy"] - r["default"]["test_accuracy"] for r in rows]
    ratios = [r["best"]["train_seconds"] / r["default"]["train_seconds"] for r in rows]
    mean = statistics.mean
    summary = {
        "default_test_accuracy": mean(r["default"]["test_accuracy"] for r in rows),
        "best_test_accuracy": mean(r["best"]["test_accuracy"] for r in rows),
        "mean_gain": mean(gains), "gains": gains,
        "time_ratio_median": statistics.median(ratios), "time_ratios": ratios,
    }
    summary["clearly_better"] = (all(g > 0 for g in gains) and mean(gains) >= MIN_GAIN
                                 and summary["time_ratio_median"] <= MAX_TIME_RATIO)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cap", type=float, default=0.0,
                        help="a timed cap on each trial's training, in seconds [default: none]")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--best", type=Path, help="skip the sweep: compare this config (e.g. "
                        "a stopped sweep's best.yaml) with the default")
    args = parser.parse_args()
    data_dir = os.environ.get("DIGITNET_DATA_DIR") or str(REPO.parent / "shared/data/mnist")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="digitnet-sweep-bench-"))
    os.environ["DIGITNET_RUNS_DIR"] = str(workdir)
    from digitnet.backend import import_tensorflow_quietly

    import_tensorflow_quietly()
    if args.best:
        rows = compare(args.best, args.seeds, workdir, data_dir)
        report({"best_config": str(args.best), "seeds": rows, "verdict": verdict(rows)},
               args.seeds, workdir)
        return 0
    baseline = train(DEFAULT, 0, workdir / "default-seed0", data_dir)
    print(f"configs/default.yaml, seed 0: val {baseline['val_accuracy']:.4f}, test "
          f"{baseline['test_accuracy']:.4f}, {baseline['train_seconds']:.2f} s of training",
          flush=True)
    found, best_config, sweep_seconds = sweep(workdir, args.trials, args.cap, data_dir)
    if best_config is None:
        print("No trial completed", flush=True)
        return 1
    rows = compare(best_config, args.seeds, workdir, data_dir)
    result = {"baseline_seed0": baseline, "cap_seconds": args.cap, "trials": args.trials,
              "sweep_wall_seconds": sweep_seconds, "sweep": found, "seeds": rows,
              "verdict": verdict(rows), "best_config": str(best_config)}
    report(result, args.seeds, workdir)
    return 0


def report(result: dict, seeds: int, workdir: Path) -> None:
    """Write WORKDIR/result.json and print the verdict."""
    (workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    v = result["verdict"]
    print(f"\nover seeds 1-{seeds}: default {v['default_test_accuracy']:.4f}, sweep's best "
          f"{v['best_test_accuracy']:.4f} (gain {v['mean_gain'] * 100:+.2f} points), training "
          f"time best/default x{v['time_ratio_median']:.2f} (median); clearly better: "
          f"{v['clearly_better']}\nbest config: {result['best_config']}; all results: "
          f"{workdir / 'result.json'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
