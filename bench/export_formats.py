"""Each `digitnet export` format side by side with the .keras model it came from, in one run.

    .venv/bin/python bench/export_formats.py [RUN_DIR] [--data-dir ../shared/data/mnist]
        [--rounds 3] [--single 200] [--batch 1000]

Exports RUN_DIR's best model (default runs/latest) to every format in a temporary folder (each
export is verified on the test set, as `digitnet export` does), then measures each file, Keras
included as the baseline, in a fresh process per format and round, through digitnet's own
loader (what predict and evaluate use): the file's size, the seconds to import its runtime,
the seconds to load the file, the median latency of one image (--single calls) and of a batch
of --batch test images (5 calls). Rounds alternate the formats, so that a busy machine slows
them alike; the table gives the median over rounds and each time as a ratio of Keras'.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
DEFAULT_DATA_DIR = os.environ.get("DIGITNET_DATA_DIR", str(REPO.parent / "shared/data/mnist"))
RUNTIMES = {"keras": "keras", "saved-model": "tensorflow", "onnx": "onnxruntime",
            "litert": "ai_edge_litert.interpreter", "litert-int8": "ai_edge_litert.interpreter"}
BATCH_CALLS = 5


def measure(fmt: str, path: str, data_dir: str, single: int, batch: int) -> dict:
    """In this (fresh) process: import, load and latency numbers of one model file."""
    import importlib

    from digitnet.backend import quiet_backend, silenced_stderr
    from digitnet.data import load_mnist, to_model_input

    quiet_backend()
    images = to_model_input(load_mnist(data_dir).x_test[:batch])
    started = time.perf_counter()
    with silenced_stderr():
        importlib.import_module(RUNTIMES[fmt])
    imported = time.perf_counter()
    from digitnet.inference.classifier import load_classifier

    classifier = load_classifier(Path(path), backend="keras" if fmt == "keras" else "auto")
    loaded = time.perf_counter()
    classifier.predict(images[:1])  # warm-up: first-call allocation and tracing
    classifier.predict(images)
    one = []
    for i in range(single):
        start = time.perf_counter()
        classifier.predict(images[i % batch: i % batch + 1])
        one.append(time.perf_counter() - start)
    many = []
    for _ in range(BATCH_CALLS):
        start = time.perf_counter()
        classifier.predict(images)
        many.append(time.perf_counter() - start)
    return {"import_s": imported - started, "load_s": loaded - imported,
            "single_ms": 1000 * statistics.median(one), "batch_ms": 1000 * statistics.median(many)}


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def export_all(run: str | None, data_dir: str, folder: Path) -> dict[str, tuple[Path, float]]:
    """{format: (exported path, seconds to export and verify)}, Keras' own file included."""
    from digitnet.backend import import_tensorflow_quietly

    import_tensorflow_quietly()
    from digitnet.export import FORMAT_NAMES
    from digitnet.export.pipeline import export_model
    from digitnet.runs.layout import resolve_model

    files = {"keras": (resolve_model(run).path, 0.0)}
    for fmt in FORMAT_NAMES:
        start = time.perf_counter()
        exported = export_model(run, fmt, folder / f"model-{fmt}{suffix(fmt)}", data_dir)
        files[fmt] = (exported.path, time.perf_counter() - start)
    return files


def suffix(fmt: str) -> str:
    return {"saved-model": "", "onnx": ".onnx"}.get(fmt, ".tflite")


def run_measure(fmt: str, path: Path, args) -> dict:
    command = [sys.executable, __file__, "--measure", fmt, str(path), "--data-dir", args.data_dir,
               "--single", str(args.single), "--batch", str(args.batch)]
    result = subprocess.run(command, capture_output=True, text=True, check=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(result.stdout.strip().splitlines()[-1])


def times(ratio: float) -> str:
    """A speed-up as people read it: 0.74x, 26x, 18,800x."""
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.2g}x"


def table(files: dict, results: dict[str, list[dict]], batch: int) -> str:
    """A Markdown table: each format's medians, and Keras' time / its time in brackets."""
    keys = ("import_s", "load_s", "single_ms", "batch_ms")
    median = {fmt: {k: statistics.median(r[k] for r in rows) for k in keys}
              for fmt, rows in results.items()}
    base = median["keras"]
    keras_bytes = size(files["keras"][0])
    lines = [f"| format | file kB | import s | load s | 1 image ms | {batch} images ms | "
             f"export + check s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for fmt, numbers in median.items():
        path, export_s = files[fmt]
        cells = [f"{numbers[k]:.3g} ({times(base[k] / numbers[k])})" for k in keys]
        share = f" ({size(path) / keras_bytes:.2f})" if fmt != "keras" else ""
        seconds = f"{export_s:.1f}" if fmt != "keras" else "-"
        lines.append(f"| {fmt} | {size(path) / 1e3:,.0f}{share} | {' | '.join(cells)} | "
                     f"{seconds} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="run directory or .keras file [runs/latest]")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=200, help="one-image calls to time")
    parser.add_argument("--batch", type=int, default=1000, help="images in the batch call")
    parser.add_argument("--save", metavar="FILE", help="also write the raw numbers as JSON")
    parser.add_argument("--measure", nargs=2, metavar=("FORMAT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.data_dir, args.single, args.batch)))
        return
    with tempfile.TemporaryDirectory() as folder:
        files = export_all(args.run, args.data_dir, Path(folder))
        results: dict[str, list[dict]] = {fmt: [] for fmt in files}
        for _ in range(args.rounds):
            for fmt, (path, _) in files.items():
                results[fmt].append(run_measure(fmt, path, args))
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; medians of "
              f"{args.rounds} rounds, each a fresh process per format; (N) after a size: its "
              f"share of the .keras file; (Nx) after a time: Keras' time / this one")
        print(table(files, results, args.batch))
        if args.save:
            Path(args.save).write_text(json.dumps({"files": {f: [str(p), s] for f, (p, s)
                                                             in files.items()},
                                                   "results": results}, indent=2))


if __name__ == "__main__":
    main()
