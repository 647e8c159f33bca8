"""The JAX backend against TensorFlow, side by side in one run, reported as ratios (issue #16).

    DIGITNET_DATA_DIR=../shared/data/mnist nice -n 10 .venv/bin/python bench/backends.py

For each backend, `digitnet train` with configs/default.yaml in a fresh process: its steady epoch
time (epochs 2 on) against the GEMM floor of bench/run.py, its time to 98% validation accuracy,
test accuracy, and the whole process as a user waits for it: wall time against its own
train_seconds (target <= 2x) and peak memory (largest process, target <= 800 MB). Then the JAX
default as a job of two processes on 127.0.0.1 (one CPU device each) against one process.
Prints a table and writes bench/results/backends-<time>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from save import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DIGITNET = [sys.executable, "-m", "digitnet"]
TARGET = 0.98


def start(args: list[str], workdir: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*DIGITNET, "train", "--config", str(REPO / "configs/default.yaml"),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "DIGITNET_RUNS_DIR": str(workdir), **(env or {})})


def finish(process: subprocess.Popen, started: float) -> dict:
    """Wait for `process`; its wall seconds and peak memory (largest of it and its children)."""
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"digitnet train failed:\n{output[-2000:]}")
    return {"wall_seconds": time.perf_counter() - started,
            "peak_mb": usage.ru_maxrss / 1024}  # kilobytes on Linux


def read_run(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = list(csv.DictReader((run_dir / "history.csv").open()))
    seconds = [float(row["seconds"]) for row in history]
    reached = [i for i, row in enumerate(history) if float(row["val_accuracy"]) >= TARGET]
    return {"test_accuracy": metrics["test_accuracy"], "train_seconds": metrics["train_seconds"],
            "epoch_seconds": seconds, "median_epoch_seconds": statistics.median(seconds[1:]),
            "seconds_to_98": sum(seconds[: reached[0] + 1]) if reached else None}


def one_process(backend: str, data_dir: str, workdir: Path) -> dict:
    run_dir = workdir / backend
    started = time.perf_counter()
    result = finish(start(["--backend", backend, "--run-dir", str(run_dir), "--data-dir",
                           data_dir], workdir), started)
    result.update(read_run(run_dir))
    result["wall_over_train"] = result["wall_seconds"] / result["train_seconds"]
    return result


def two_processes(data_dir: str, workdir: Path) -> dict:
    """The JAX default as two processes on loopback, one CPU device each."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_dir = workdir / "jax-2"
    args = ["--backend", "jax", "--run-dir", str(run_dir), "--data-dir", data_dir,
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id"]
    started = time.perf_counter()
    processes = [start([*args, str(i)], workdir) for i in (0, 1)]
    results = [finish(process, started) for process in processes]
    result = read_run(run_dir)
    result["wall_seconds"] = max(r["wall_seconds"] for r in results)
    result["peak_mb"] = max(r["peak_mb"] for r in results)
    return result


def images_per_epoch() -> int:
    """The images the default config trains on per epoch: full batches of digits and its
    outliers (bench/run.py's floor counts the 55,000 digits alone)."""
    from digitnet.config import load_config
    from digitnet.training.train import steps_per_epoch

    training = load_config(str(REPO / "configs/default.yaml"), (), {}).training
    return steps_per_epoch(55000, training) * (
        training.batch_size + round(training.outliers * training.batch_size))


def floor_and_machine() -> dict:
    """The GEMM floor, the images per epoch and the machine, measured in a child process.

    bench/run.py imports TensorFlow, and a process forked from this one starts its ru_maxrss
    from this one's resident set: with TensorFlow here, every trained process's peak read as
    this process's 835 MB.
    """
    code = ("import json; from run import gemm_gflops, machine, mlp_epoch_gflop; "
            "from backends import images_per_epoch; gflops = gemm_gflops(); "
            "images = images_per_epoch(); "
            "print(json.dumps({'machine': machine(), 'gemm_gflops': gflops, "
            "'floor_seconds': mlp_epoch_gflop() / gflops, 'images_per_epoch': images, "
            "'floor_all_seconds': mlp_epoch_gflop(images) / gflops}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict) -> str:
    floor, floor_all = results["floor_seconds"], results["floor_all_seconds"]
    lines = [f"GEMM floor of one default epoch: {floor:.3f} s ({results['gemm_gflops']:.0f} "
             f"GFLOP/s; x all: against {floor_all:.3f} s, the floor of the "
             f"{results['images_per_epoch']:,} images with outliers trained per epoch); "
             f"machine loaded by other work, read ratios, not absolutes",
             "backend      epoch s  x floor  x all  to 98% s  test acc  train s  wall s  "
             "wall/train  peak MB"]
    for name in ("tensorflow", "jax", "jax-2"):
        r = results[name]
        ratio = r["wall_seconds"] / r["train_seconds"]
        lines.append(f"{name:<11} {r['median_epoch_seconds']:>8.3f} "
                     f"{r['median_epoch_seconds'] / floor:>8.2f} "
                     f"{r['median_epoch_seconds'] / floor_all:>6.2f} "
                     f"{r['seconds_to_98'] or float('nan'):>9.2f} {r['test_accuracy']:>9.4f} "
                     f"{r['train_seconds']:>8.2f} {r['wall_seconds']:>7.1f} {ratio:>11.2f} "
                     f"{r['peak_mb']:>8.0f}")
    scaling = results["jax"]["median_epoch_seconds"] / results["jax-2"]["median_epoch_seconds"]
    lines.append(f"1 -> 2 processes (JAX): epoch {scaling:.2f}x as fast")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DIGITNET_DATA_DIR"))
    parser.add_argument("--workdir", default="/tmp/digitnet-bench-backends")
    args = parser.parse_args()
    if not args.data_dir:
        raise SystemExit("set DIGITNET_DATA_DIR or pass --data-dir")
    workdir = Path(args.workdir)
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.mkdir(parents=True)
    results = {**floor_and_machine(), "load_average": os.getloadavg()}
    for backend in ("tensorflow", "jax"):
        results[backend] = one_process(backend, args.data_dir, workdir)
    results["jax-2"] = two_processes(args.data_dir, workdir)
    results["bench_rusage_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(report(results))
    print(f"Results written to {write_results('backends', results)}")


if __name__ == "__main__":
    main()
