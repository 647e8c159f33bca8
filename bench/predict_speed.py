"""End-to-end speed of `digitnet predict`: one image as a whole process, and a folder of PNGs.

Writes the first N MNIST test digits as PNG files (28x28, white on black) into a temporary
folder, then times `python -m digitnet predict --json` as a subprocess, as a user would:

    .venv/bin/python bench/predict_speed.py --model /tmp/clitest/runs/latest \
        [--data-dir ../shared/data/mnist] [--count 10000] [--repeat 5] [--images DIR]

--images DIR also times a folder of the user's own images (realdigits-dev, say), copied
--copies times so that the pool's start-up does not dominate. Prints medians of --repeat runs
and bests, and the load average: other jobs on the machine slow every number here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
DIGITNET = [sys.executable, "-m", "digitnet"]
DEFAULT_DATA_DIR = os.environ.get("DIGITNET_DATA_DIR", str(REPO.parent / "shared/data/mnist"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def write_pngs(data_dir: str, folder: Path, count: int) -> list[Path]:
    """The first `count` MNIST test images as PNG files (white digit on black, as MNIST)."""
    from PIL import Image

    from digitnet.data import load_mnist

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(load_mnist(data_dir).x_test[:count]):
        path = folder / f"{index:05d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def copy_images(source: Path, folder: Path, copies: int) -> int:
    """`copies` copies of every image in `source`, in `folder`; returns how many were written."""
    folder.mkdir(parents=True, exist_ok=True)
    images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for copy in range(copies):
        for path in images:
            shutil.copyfile(path, folder / f"{copy:03d}_{path.name}")
    return copies * len(images)


def wall_seconds(command: list[str], repeat: int) -> tuple[float, float]:
    """Median and least wall-clock seconds of a command run `repeat` times (it must succeed).

    Both: on a shared machine the median says what to expect, the least what the code costs
    when nothing else runs.
    """
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


def report(what: str, count: int, seconds: tuple[float, float], repeat: int) -> None:
    """Print one timing: seconds and images/second, median and best of `repeat` runs."""
    median, best = seconds
    print(f"{what}: median {median:.3f} s = {count / median:.0f} images/s, "
          f"best {best:.3f} s = {count / best:.0f} images/s (of {repeat})")


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, for the record."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run directory or model file")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="MNIST (IDX folder or .npz)")
    parser.add_argument("--count", type=int, default=10000, help="MNIST PNGs in the batch")
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing (median)")
    parser.add_argument("--images", type=Path, help="also time a folder of real images")
    parser.add_argument("--copies", type=int, default=20, help="copies of --images' files")
    args = parser.parse_args()
    predict = [*DIGITNET, "predict", "--model", args.model, "--json"]
    print(f"cores {os.cpu_count()}, load average {load_average()} (before)")
    with tempfile.TemporaryDirectory() as workdir:
        pngs = write_pngs(args.data_dir, Path(workdir) / "pngs", args.count)
        wall_seconds([*predict, str(pngs[0])], 1)  # warm the file cache
        report("single image, whole process", 1,
               wall_seconds([*predict, str(pngs[0])], args.repeat), args.repeat)
        report(f"{len(pngs)} MNIST PNGs, whole process", len(pngs),
               wall_seconds([*predict, str(Path(workdir) / "pngs")], args.repeat), args.repeat)
        if args.images:
            count = copy_images(args.images, Path(workdir) / "real", args.copies)
            report(f"{count} images from {args.images}, whole process", count,
                   wall_seconds([*predict, str(Path(workdir) / "real")], args.repeat),
                   args.repeat)
    print(f"load average {load_average()} (after)")


if __name__ == "__main__":
    main()
