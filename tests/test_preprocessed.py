"""training.augment.pipeline: training digits swapped for what predict's preprocessing makes
of them (digitnet/training/preprocessed.py)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from digitnet.config import AugmentConfig, TrainingConfig, load_config
from digitnet.data import to_model_input
from digitnet.images import preprocess
from digitnet.images.preprocess import preprocess_file
from digitnet.training.backends import tensorflow as tf_backend
from digitnet.training.interrupt import TrainingInterrupted
from digitnet.training.preprocessed import (
    FLAG_DEGREES,
    SCAN_SCALE,
    bank_path,
    flag_one,
    preprocessed_bank,
    preprocessed_images,
    scan_to_mnist,
    training_bank,
)
from tests.conftest import REPO, TINY_OVERRIDES


def drawn_digits() -> np.ndarray:
    """Three MNIST-like digits, white ink on black, 20 px tall: a 7, a 0 and a 1."""
    digits = np.zeros((3, 28, 28), np.uint8)
    cv2.polylines(digits[0], [np.array([[8, 5], [20, 5], [12, 22]])], False, 255, 2, cv2.LINE_AA)
    cv2.ellipse(digits[1], (14, 14), (6, 9), 0, 0, 360, 255, 2, cv2.LINE_AA)
    cv2.line(digits[2], (15, 5), (13, 22), 255, 2, cv2.LINE_AA)
    return digits


def centre(image: np.ndarray) -> np.ndarray:
    """(row, column) of the image's centre of mass."""
    weights, places = image / image.sum(), np.arange(28)
    return np.array([(weights.sum(1) * places).sum(), (weights.sum(0) * places).sum()])


def test_a_digit_is_what_predict_makes_of_a_clean_scan_of_it(tmp_path):
    """Each digit of the bank is predict's 28x28 input for a PNG of the digit drawn as dark ink
    on white paper, SCAN_SCALE times larger; for a clean MNIST-like digit that is the digit
    itself, redrawn: the same shape, 20 px long, centred by mass."""
    digits = drawn_digits()
    bank = scan_to_mnist(digits)
    assert bank.dtype == np.uint8 and bank.shape == digits.shape
    side = 28 * SCAN_SCALE
    for index, (digit, made) in enumerate(zip(digits, bank)):
        path = tmp_path / f"scan{index}.png"
        Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR).save(path)
        np.testing.assert_array_equal(made, np.round(preprocess_file(path) * 255))
        assert made.any() and not np.array_equal(made, digit)  # redrawn, not copied
        rows = np.flatnonzero((made > 127).any(axis=1))
        assert 19 <= rows[-1] - rows[0] + 1 <= 21
        assert np.abs(centre(made) - 14).max() <= 0.6
        shift = np.round(centre(made) - centre(digit)).astype(int)
        moved = np.roll(digit, tuple(shift), axis=(0, 1)) > 127
        ink = made > 127
        assert (ink & moved).sum() / (ink | moved).sum() > 0.6


def scanned_one(lean: float = 0.0, ink: int = 60) -> np.ndarray:
    """The uint8 scan of a 1 (grey `ink` on white, SCAN_SCALE x 28 px): a stem 60 px tall,
    leaning `lean` columns per row (its top to the right)."""
    side = 28 * SCAN_SCALE
    scan = np.full((side, side), 255, np.uint8)
    cv2.line(scan, (round(42 + 30 * lean), 12), (round(42 - 30 * lean), 72), ink, 7, cv2.LINE_AA)
    return scan


class Always:
    """A generator whose first draw always flags, then the middle of each range."""

    def random(self):
        return 0.0

    def uniform(self, low, high):
        return (low + high) / 2


def test_a_flag_is_drawn_from_the_top_of_an_upright_one_down_to_the_left():
    """flag_one: a straight stroke as dark as the stem, from its top down to the left at an
    angle within FLAG_DEGREES; nothing else changes. A leaning 1 (a 7's stem leans) and a draw
    at or above FLAGGED_ONES keep their scan."""
    scan = scanned_one()
    flagged = flag_one(scan, Always())
    added = (flagged < 128) & (scan >= 128)
    assert np.all(flagged <= scan) and added.sum() > 50
    rows, columns = np.nonzero(added)
    stem_rows = np.flatnonzero((scan < 128).any(axis=1))
    top, height = stem_rows[0], len(stem_rows)
    # from the top, at most FLAG_LENGTH of the height down, left of the stem and its round cap
    assert rows.max() <= top + 0.4 * height + 7 and columns.max() <= 42 + 7
    assert columns.min() < 42 - 0.15 * height
    down_per_left = -np.polyfit(columns, rows, 1)[0]  # rows down per column to the left
    assert FLAG_DEGREES[0] <= np.degrees(np.arctan(down_per_left)) <= FLAG_DEGREES[1]
    assert flagged[added].min() == 60  # as dark as the stem's ink, not black
    leaning = scanned_one(lean=0.4)
    np.testing.assert_array_equal(flag_one(leaning, Always()), leaning)

    class Never(Always):
        def random(self):
            return 0.99

    np.testing.assert_array_equal(flag_one(scan, Never()), scan)


def test_with_labels_about_half_the_upright_ones_get_a_flag_and_nothing_else_does():
    """scan_to_mnist(digits, labels): a 1's row is flagged or not by its own pixels (the same
    digit alike wherever it is); other labels are the label-free rows."""
    rng = np.random.default_rng(3)
    ones = np.zeros((40, 28, 28), np.uint8)
    for digit in ones:  # upright 1s, each a little different
        top, x = int(rng.integers(4, 7)), int(rng.integers(11, 17))
        cv2.line(digit, (x, top), (x + int(rng.integers(-1, 2)), 23), 255, 2, cv2.LINE_AA)
    digits = np.concatenate([ones, drawn_digits()[:2]])
    labels = np.array([1] * 40 + [7, 0])
    plain, made = scan_to_mnist(digits), scan_to_mnist(digits, labels)
    changed = (made != plain).reshape(len(digits), -1).any(axis=1)
    assert not changed[40:].any() and 10 <= changed[:40].sum() <= 30
    reordered = scan_to_mnist(digits[::-1], labels[::-1])[::-1]
    np.testing.assert_array_equal(reordered, made)


def test_the_bank_made_in_worker_processes_is_the_serial_one(monkeypatch):
    """Chunks made by workers, labels sliced with their digits: the serial bank's rows, the 1s
    flagged alike (a label a row off would flag another digit)."""
    monkeypatch.setattr("digitnet.training.preprocessed.CHUNK", 2)
    seven, zero, one = drawn_digits()
    ones = [np.roll(one, shift, axis=1) for shift in (-3, -1, 2, 4)]  # four different 1s
    digits = np.stack([seven, ones[0], zero, ones[1], ones[2], seven, ones[3], zero])
    labels = np.array([7, 1, 0, 1, 1, 7, 1, 0])
    made = preprocessed_bank(digits, labels, workers=2)
    np.testing.assert_array_equal(made, scan_to_mnist(digits, labels))
    assert (made != scan_to_mnist(digits)).any()  # some 1 got its flag
    np.testing.assert_array_equal(preprocessed_bank(digits, workers=2), scan_to_mnist(digits))


def test_the_bank_is_named_by_its_labels_too():
    """Which 1s get a flag depends on the labels: another labelling is another bank."""
    digits = drawn_digits()
    names = {bank_path(digits), bank_path(digits, np.array([7, 0, 1])),
             bank_path(digits, np.array([7, 0, 7]))}
    assert len(names) == 3
    assert bank_path(digits, np.array([7, 0, 1], np.uint8)) == bank_path(digits,
                                                                         np.array([7, 0, 1]))


def test_the_bank_is_made_once_per_training_set_and_then_read_from_the_cache(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path))
    calls = []

    def counting(digits, labels=None, check=None):
        calls.append(len(digits))
        return scan_to_mnist(digits, labels)

    monkeypatch.setattr("digitnet.training.preprocessed.preprocessed_bank", counting)
    digits = drawn_digits()
    first = preprocessed_images(digits)
    np.testing.assert_array_equal(preprocessed_images(digits), first)
    assert calls == [3] and len(list(tmp_path.glob("preprocessed-*.npy"))) == 1
    other = preprocessed_images(digits[:2])  # another training set: another bank
    np.testing.assert_array_equal(other, first[:2])
    assert calls == [3, 2] and len(list(tmp_path.glob("preprocessed-*.npy"))) == 2


def test_tensorflow_batches_swap_that_share_of_the_digits_for_their_pipeline_versions():
    """With training.augment.pipeline p each digit of a batch is its preprocessed version with
    probability p (drawn by the step: the same again, and the same after a resume), its label
    unchanged; p = 0 never swaps, p = 1 always."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 30).astype(np.int32)
    preprocessed = 255 - x
    raw, swapped = to_model_input(x), to_model_input(preprocessed)
    counts = {}
    for share in (0.0, 0.5, 1.0):
        training = TrainingConfig(batch_size=10, seed=1, augment=AugmentConfig(pipeline=share))
        stream = tf_backend.training_batches(x, y, training, 0, 3, None, preprocessed)
        batches = [(a.numpy(), b.numpy()) for a, b in stream.take(6)]
        counts[share] = 0
        for images, labels in batches:
            for image, label in zip(images, labels):
                raw_rows = [j for j in range(30) if np.array_equal(image, raw[j])]
                swapped_rows = [j for j in range(30) if np.array_equal(image, swapped[j])]
                assert len(raw_rows + swapped_rows) == 1
                assert label.argmax() == y[(raw_rows + swapped_rows)[0]] and label.max() == 1
                counts[share] += len(swapped_rows)
        resumed = tf_backend.training_batches(x, y, training, 1, 3, None, preprocessed)
        for (images, _), (again, _) in zip(batches[3:], resumed.take(3)):
            np.testing.assert_array_equal(images, again.numpy())
    assert counts[0.0] == 0 and counts[1.0] == 60 and 15 <= counts[0.5] <= 45


def test_training_with_the_pipeline_share_trains_on_the_training_splits_bank(tmp_path,
                                                                             monkeypatch,
                                                                             tiny_data_dir):
    from digitnet.data import load_mnist, resolve_source, split_validation
    from digitnet.training import train

    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DIGITNET_RUNS_DIR", str(tmp_path / "runs"))
    given = []
    real = train.training_batches

    def recording(x, y, training, first_epoch, outliers=None, preprocessed=None):
        given.append((x, preprocessed))
        return real(x, y, training, first_epoch, outliers, preprocessed)

    monkeypatch.setattr(train, "training_batches", recording)
    config = load_config(None, (*TINY_OVERRIDES, "training.augment.pipeline=0.5"))
    (tmp_path / "run").mkdir()
    train.train_and_evaluate(config, tmp_path / "run", str(tiny_data_dir))
    mnist = load_mnist(resolve_source(str(tiny_data_dir)))
    split = split_validation(mnist, config.data.validation_size, config.training.seed)
    (x, bank), = given
    np.testing.assert_array_equal(x, split.x_train)
    # the same images for each training digit as a bank of the split's own training digits
    np.testing.assert_array_equal(bank, scan_to_mnist(split.x_train, split.y_train))
    banks = list((tmp_path / "cache").glob("preprocessed-*.npy"))
    # one bank, of the whole MNIST training set and its labels
    assert banks == [bank_path(mnist.x_train, mnist.y_train)]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["preprocessed_sha256"] == hashlib.sha256(np.load(banks[0]).data).hexdigest()
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_every_seed_and_validation_size_indexes_one_bank_of_the_whole_training_set(
        tmp_path, monkeypatch):
    """The bank is made once over the source's training set; a split's rows are exactly those
    of a bank made from its own training digits (so trained results do not change)."""
    from digitnet.data import Mnist, split_validation

    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path))
    digits = np.concatenate([drawn_digits()] * 4)
    digits[3:] = np.roll(digits[3:], 1, axis=2)  # not all alike: the order matters
    mnist = Mnist(digits, np.arange(12) % 10, digits[:2], np.arange(2))
    for seed, validation_size in ((0, 3), (1, 3), (2, 5)):
        split = split_validation(mnist, validation_size, seed)
        rows, path, _ = training_bank(digits, mnist.y_train, split.train_index)
        np.testing.assert_array_equal(rows, scan_to_mnist(split.x_train, split.y_train))
        assert path == bank_path(digits, mnist.y_train)
    assert list(tmp_path.glob("preprocessed-*.npy")) == [bank_path(digits, mnist.y_train)]


def test_the_training_digits_are_hashed_once_per_bank(tmp_path, monkeypatch):
    """bank_path hashes every training digit (47 MB for MNIST): training_bank does it once."""
    from digitnet.training import preprocessed

    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path))
    hashed = []
    real = preprocessed.bank_sha256
    monkeypatch.setattr(preprocessed, "bank_sha256", lambda array: hashed.append(
        array.shape) or real(array))
    digits, labels = drawn_digits(), np.array([7, 0, 1])
    for _ in range(2):  # made, then read from the cache
        hashed.clear()
        rows, path, digest = training_bank(digits, labels)
        assert hashed == [digits.shape, labels.shape, rows.shape]
        assert path == bank_path(digits, labels)


def test_a_cached_bank_made_by_other_preprocessing_code_is_made_again(tmp_path, monkeypatch):
    """The cache file is named by the digits, not the code: a change of to_mnist since the
    bank was made is found by making its first rows again, and the bank is made again."""
    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path))
    digits = drawn_digits()
    before = preprocessed_images(digits)
    real = preprocess.to_mnist
    monkeypatch.setattr(preprocess, "to_mnist", lambda image: real(image)[::-1])
    after = preprocessed_images(digits)
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, scan_to_mnist(digits))
    np.testing.assert_array_equal(np.load(bank_path(digits)), after)  # the cache is replaced


def test_a_signal_during_the_build_stops_it_at_once_and_writes_nothing(tmp_path, monkeypatch):
    """The build checks for a signal as its chunks come back: once `check` raises, the rest is
    cancelled, the exception goes on, and no bank is left in the cache."""
    from digitnet.images import batch

    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("digitnet.training.preprocessed.CHUNK", 1)
    monkeypatch.setattr("digitnet.training.preprocessed.available_cpus", lambda: 2)
    digits = np.concatenate([drawn_digits()] * 40)
    checks = []

    def check():
        checks.append(1)
        if len(checks) > 1:
            raise TrainingInterrupted(signal.SIGINT)

    started = time.monotonic()
    with pytest.raises(TrainingInterrupted):
        preprocessed_images(digits, check=check)
    assert time.monotonic() - started < 5
    assert not list(tmp_path.iterdir())
    pool = batch._pools[2]  # predict's kept pool: its workers ignore Ctrl-C and end with us
    assert pool._initializer is batch.start_worker
    # cancelled: the pool is free for the next build at once
    np.testing.assert_array_equal(preprocessed_bank(digits[:4], workers=2), scan_to_mnist(
        digits[:4]))


def test_a_signal_while_train_makes_the_bank_stops_it_before_any_run_file_is_written(
        tmp_path, monkeypatch, tiny_data_dir):
    """train makes the bank where it loads the data, under its interrupt guard: Ctrl-C there
    is an interruption (exit 130), and the run folder is left as it was (here: none)."""
    from digitnet.training import train

    monkeypatch.setenv("DIGITNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DIGITNET_RUNS_DIR", str(tmp_path / "runs"))

    def making(digits, labels, check, *path):
        os.kill(os.getpid(), signal.SIGINT)  # the guard's first signal only sets its flag
        check()
        raise AssertionError("check did not stop the build")

    monkeypatch.setattr("digitnet.training.preprocessed.preprocessed_images", making)
    config = load_config(None, (*TINY_OVERRIDES, "training.augment.pipeline=0.5"))
    (tmp_path / "run").mkdir()
    with pytest.raises(TrainingInterrupted) as stop:
        train.train_and_evaluate(config, tmp_path / "run", str(tiny_data_dir))
    assert stop.value.exit_code == 130
    assert not (tmp_path / "run").exists()  # nothing written: the empty folder is removed


BUILD_CHILD = """
import sys
import numpy as np
import digitnet.training.preprocessed as preprocessed
from digitnet.images import batch
from digitnet.training.interrupt import InterruptGuard, TrainingInterrupted

preprocessed.CHUNK = 10
shown = []

def ignores_sigint(pid):
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("SigIgn:")[1].split()[0], 16) & 2  # bit of signal 2, SIGINT

def check(guard):
    workers = list(batch._pools[2]._processes)
    if not shown and len(workers) == 2 and all(map(ignores_sigint, workers)):
        shown.append(print(*workers, flush=True))  # set up: Ctrl-C is the caller's now
    guard.check()

with InterruptGuard() as guard:
    try:
        preprocessed.preprocessed_bank(np.load(sys.argv[1]), workers=2, check=lambda: check(guard))
    except TrainingInterrupted as stop:
        sys.exit(stop.exit_code)
print("built", flush=True)
"""


def start_build(tmp_path):
    """A process building a long bank in worker processes, and its workers' pids."""
    np.save(tmp_path / "digits.npy", np.concatenate([drawn_digits()] * 3000))
    process = subprocess.Popen([sys.executable, "-c", BUILD_CHILD, str(tmp_path / "digits.npy")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    return process, [int(pid) for pid in process.stdout.readline().split()]


def running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_ctrl_c_at_a_terminal_during_the_build_is_an_interruption(tmp_path):
    """SIGINT to the whole process group (Ctrl-C at a terminal) reaches the workers too: they
    ignore it, and the build ends as an interruption (exit 130), not a worker's traceback."""
    process, workers = start_build(tmp_path)
    assert len(workers) == 2
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "built" not in out and "Traceback" not in err and "KeyboardInterrupt" not in err


def test_workers_end_with_a_builder_killed_outright(tmp_path):
    process, workers = start_build(tmp_path)
    assert len(workers) == 2 and all(running(pid) for pid in workers)
    process.kill()
    process.wait(timeout=60)  # not communicate: the workers hold its pipes while they run
    deadline = time.monotonic() + 20
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in workers)
    process.stdout.close()
    process.stderr.close()
