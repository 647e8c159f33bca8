"""CPU time per image of preprocess_bytes, this checkout against a baseline commit, side by side.

Preprocesses the same uploads with this checkout's digitnet and with a baseline's (extracted
with `git archive`), in alternating child processes so that both see the same load, and checks
that both give the same 28x28 inputs. The uploads: 280x280 canvas PNGs made as
bench/serve_load.py makes them (MNIST test digits upscaled, black on white, RGBA), the same
white on black (RGB), grayscale, and drawn on a transparent canvas; photo-like JPEGs (uneven
lighting, grain); 28x28 MNIST PNGs; and the realdigits images.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/preprocess_speed.py \\
        [--baseline main] [--images 128] [--rounds 3]

CPU time (time.process_time, one OpenCV thread) is what is reported, as other jobs on the
machine make wall time noisy; the ratio is baseline / this checkout.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = os.environ.get("DIGITNET_DATA_DIR", str(REPO.parent / "shared/data/mnist"))
REAL_DIR = Path(
    os.environ.get("DIGITNET_REALDIGITS_DIR", REPO.parent / "shared/data/realdigits-dev"))


def encode(image, kind: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **options)
    return buffer.getvalue()


def photo_like(digit: np.ndarray, seed: int):
    """A digit as a phone photo: dark ink on lit paper with a gradient, grain, JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((300, 300), Image.BILINEAR), np.float32) / 255
    rows, cols = np.mgrid[0:300, 0:400] / 400.0
    paper = 0.75 + 0.2 * (rows * rng.uniform(-1, 1) + cols * rng.uniform(-1, 1))
    page = paper[:, :, None] * np.array([1.0, 0.97, 0.9])
    page[:, 50:350] *= 1 - 0.8 * ink[:, :, None]
    page += rng.normal(0, 0.02, page.shape)
    pixels = np.clip(page * 255, 0, 255).astype(np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=85)


def uploads(data_dir: str, count: int) -> dict[str, list[bytes]]:
    """The uploads by kind, each a list of encoded files."""
    from PIL import Image

    from digitnet.data import load_mnist

    digits = load_mnist(data_dir).x_test[:count]
    big = [Image.fromarray(255 - d).resize((280, 280), Image.BILINEAR) for d in digits]
    black = Image.new("RGB", (280, 280)).split()
    transparent = [Image.merge("RGBA", (*black, b.point(lambda v: 255 - v)))
                   for b in big[: count // 2]]
    real = sorted(path for path in REAL_DIR.iterdir() if path.suffix != ".csv")
    return {
        "canvas 280 RGBA": [encode(b.convert("RGBA")) for b in big],
        "canvas 280 RGB white on black": [encode(b.point(lambda v: 255 - v).convert("RGB"))
                                          for b in big[: count // 2]],
        "canvas 280 L": [encode(b) for b in big[: count // 2]],
        "canvas 280 transparent": [encode(t) for t in transparent],
        "photo-like JPEG": [photo_like(d, i) for i, d in enumerate(digits[: count // 4])],
        "mnist 28 PNG": [encode(Image.fromarray(d)) for d in digits[: count // 2]],
        "realdigits": [path.read_bytes() for path in real],
    }


def child(payload_file: str, out_file: str, passes: int) -> None:
    """Run in a child process with the digitnet under test first on sys.path."""
    import cv2

    try:
        from digitnet.images.preprocess import preprocess_bytes
    except ImportError:  # a baseline from before it moved out of images/batch.py
        from digitnet.images.batch import preprocess_bytes

    cv2.setNumThreads(1)
    with open(payload_file, "rb") as file:
        payloads = pickle.load(file)
    results = {}
    for kind, items in payloads.items():
        arrays = [preprocess_bytes(data, f"{kind}.png") for data in items]  # warm-up, outputs
        started = time.process_time()
        for _ in range(passes):
            for data in items:
                preprocess_bytes(data, f"{kind}.png")
        seconds = (time.process_time() - started) / (passes * len(items))
        results[kind] = (seconds, np.stack(arrays))
    with open(out_file, "wb") as file:
        pickle.dump(results, file)


def run_child(tree: Path, payload_file: str, passes: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".pkl") as out:
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, __file__, "--child", payload_file, out.name,
                        "--passes", str(passes)], env=env, check=True, cwd=tree)
        with open(out.name, "rb") as file:
            return pickle.load(file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="the git commit to compare with")
    parser.add_argument("--images", type=int, default=128, help="canvas images of each kind")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--passes", type=int, default=2, help="passes over the images per run")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.passes)
        return
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as temp:
        base = Path(temp) / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "digitnet"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        payload_file = str(Path(temp) / "payloads.pkl")
        payloads = uploads(args.data_dir, args.images)
        with open(payload_file, "wb") as file:
            pickle.dump(payloads, file)
        times = {"baseline": {}, "this": {}}
        outputs = {}
        for _ in range(args.rounds):
            for name, tree in (("baseline", base), ("this", REPO)):
                for kind, (seconds, arrays) in run_child(tree, payload_file, args.passes).items():
                    times[name].setdefault(kind, []).append(seconds)
                    outputs[name, kind] = arrays
    print(f"load average {os.getloadavg()[0]:.1f}; CPU ms per image, median of {args.rounds} "
          f"runs each; baseline {args.baseline}")
    print(f"{'uploads':32}{'n':>5}{'baseline':>10}{'this':>10}{'ratio':>8}{'max|diff|':>11}")
    for kind, items in payloads.items():
        before = float(np.median(times["baseline"][kind])) * 1000
        after = float(np.median(times["this"][kind])) * 1000
        diff = float(np.abs(outputs["baseline", kind] - outputs["this", kind]).max())
        print(f"{kind:32}{len(items):>5}{before:>10.3f}{after:>10.3f}{before / after:>8.2f}"
              f"{diff:>11.2g}")


if __name__ == "__main__":
    main()
