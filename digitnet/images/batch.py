"""Preprocessing image files for predict: one at a time, or many in a pool of worker
processes, kept in order; and saving the 28x28 inputs the model saw.

Runs the stages of digitnet.images.preprocess over files. No TensorFlow here: the worker processes
import this module, and through it only those stages.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from digitnet.backend import available_cpus
from digitnet.errors import DigitnetError
from digitnet.images.preprocess import FIELD, preprocess_file

PARALLEL_MIN = 64  # fewer files than this are preprocessed in this process
CHUNK_FILES = 64  # files per task for a worker, at most: enough to amortise the task
CHUNK_SECONDS = 0.03  # ... and about this much work: little left for one worker at the end
QUEUED_CHUNKS = 4  # tasks queued per worker, so that none waits for the caller
SERIAL_SECONDS = 0.2  # work done here while a new pool's fork server starts (about as long)
CALLER_CHECK_SECONDS = 1.0  # how often a worker checks that its caller still runs
INPUT_WAIT_SECONDS = 0.05  # input quiet this long: the workers get the part of a chunk read

_pools: dict[int, ProcessPoolExecutor] = {}


@dataclass(frozen=True)
class Preprocessed:
    """One file through the pipeline: the 28x28 input the model gets, or why there is none."""

    path: str
    image: np.ndarray | None = None  # float32 (28, 28) in [0, 1], from preprocess_file
    error: DigitnetError | None = None  # the file cannot be read as an image


def preprocess_or_error(path) -> Preprocessed:
    """preprocess_file, keeping a user-input error instead of raising it."""
    try:
        return Preprocessed(os.fspath(path), image=preprocess_file(path))
    except DigitnetError as err:
        return Preprocessed(os.fspath(path), error=err)


def preprocess_files(paths, workers: int | None = None) -> list[Preprocessed]:
    """Preprocess many image files, in parallel processes when there are many.

    Args:
      paths: image files.
      workers: processes to use; None for one per CPU. Fewer than PARALLEL_MIN files are
        done in this process, where starting workers would cost more than it saves.

    Returns:
      One Preprocessed per path, in order: the (28, 28) array, or the DigitnetError explaining
      why that file could not be used (kept, not raised, so one bad file spoils nothing).
    """
    return list(preprocess_stream(paths, workers))


def preprocess_stream(paths: Iterable, workers: int | None = None) -> Iterator[Preprocessed]:
    """Preprocess image files as they come, any number of them, keeping the workers busy.

    Args:
      paths: image files, read lazily (a generator over a folder tree, say).
      workers: as for preprocess_files.

    Yields:
      A Preprocessed for each path, in order. Up to QUEUED_CHUNKS
      chunks per worker are in flight, so the workers go on while the caller uses the
      results, and memory stays bounded however many files there are.
    """
    paths = (str(path) for path in paths)
    head = list(itertools.islice(paths, PARALLEL_MIN))
    workers = workers or available_cpus()
    if workers == 1 or len(head) < PARALLEL_MIN:
        for path in itertools.chain(head, paths):
            yield preprocess_or_error(path)
        return
    started = workers in _pools
    pool = worker_pool(workers)  # a new pool's fork server starts in the background
    rest = itertools.chain(head, paths)
    size = CHUNK_FILES
    if not started:
        # meanwhile, work here: a batch of small files is often done before the workers
        # would have been ready (and then they never are needed)
        began = time.perf_counter()
        done = 0
        for path in rest:
            if time.perf_counter() - began >= SERIAL_SECONDS:
                rest = itertools.chain([path], rest)
                break
            yield preprocess_or_error(path)
            done += 1
        # chunks of about CHUNK_SECONDS at the pace seen here: MNIST-size files go many to a
        # task, photos few, so that neither worker is left with a long last chunk
        pace = (time.perf_counter() - began) / max(done, 1)
        size = max(1, min(CHUNK_FILES, round(CHUNK_SECONDS / pace)))
    yield from in_workers(pool, rest, size, workers)


def in_workers(pool: ProcessPoolExecutor, paths: Iterator[str], size: int,
               workers: int) -> Iterator[Preprocessed]:
    """preprocess_stream's pool part: chunks of `size` paths to the workers, results in order.

    The paths are read on a thread of their own, so that finished results are handed on while
    the input is slow to come (paths piped into `predict -` by a program that has not finished,
    say): what is done never waits for input that may never come. When the input stalls, the
    part of a chunk read so far goes to the workers as it is.
    """
    arrivals: queue.Queue = queue.Queue(maxsize=size * QUEUED_CHUNKS * workers)  # bounded memory
    threading.Thread(target=feed, args=(paths, arrivals), daemon=True).start()
    pending: collections.deque = collections.deque()
    chunk: list[str] = []
    ended = False
    while not ended or chunk or pending:
        try:
            item = arrivals.get(timeout=INPUT_WAIT_SECONDS if chunk or pending else None)
        except queue.Empty:
            item = None  # the input is slow: send on what there is
        if isinstance(item, Exception):
            raise item
        if item is _END:
            ended = True
        elif item is not None:
            chunk.append(item)
        if chunk and (len(chunk) == size or item is None or ended):
            pending.append((chunk, pool.submit(preprocess_chunk, chunk)))
            chunk = []
        while pending and (pending[0][1].done() or len(pending) > QUEUED_CHUNKS * workers
                           or (ended and not chunk)):
            yield from unpack(*pending.popleft())


_END = object()  # feed's mark for the end of the paths


def feed(paths: Iterator[str], arrivals: queue.Queue) -> None:
    """Put each path on `arrivals`, then _END; or the exception reading them raised."""
    try:
        for path in paths:
            arrivals.put(path)
    except Exception as err:  # raised again by the reader, in its own thread
        arrivals.put(err)
        return
    arrivals.put(_END)


def preprocess_chunk(paths: list[str]) -> tuple[np.ndarray, dict[int, DigitnetError]]:
    """preprocess_or_error over many files, packed for the trip back from a worker process.

    One (N, 28, 28) array and the errors by position pickle far quicker than N arrays.
    """
    arrays = np.zeros((len(paths), FIELD, FIELD), np.float32)
    errors = {}
    for index, path in enumerate(paths):
        result = preprocess_or_error(path)
        if result.error is not None:
            errors[index] = result.error
        else:
            arrays[index] = result.image
    return arrays, errors


def unpack(paths: list[str], future) -> Iterator[Preprocessed]:
    """A Preprocessed for each file of a chunk, once its worker has finished it."""
    arrays, errors = future.result()
    for index, path in enumerate(paths):
        error = errors.get(index)
        yield Preprocessed(path, image=None if error else arrays[index], error=error)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool kept for the next batch, so predict pays the start-up only once.

    Workers come from a fork server, not a fork of this process: the caller may have loaded
    TensorFlow, whose threads make forking unsafe. The server imports this module once, before
    it forks, so that no worker spends its first tenth of a second importing it again; it is
    started here, and imports while the caller goes on (the workers start at the first task).
    """
    if workers not in _pools:
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["__main__", __name__])
            from multiprocessing import forkserver

            # The server starts as `python -c ...`, which would put the current folder first
            # on sys.path: a digitnet.py (or an old checkout) there must not replace this
            # package. Only the server's start needs it: set for the whole process, every
            # later child (a user's `python script.py`) would lose its own folder from sys.path.
            with safe_path_for_children():
                forkserver.ensure_running()
        else:  # spawn's children take this process's sys.path before they import anything
            context = multiprocessing.get_context("spawn")
        _pools[workers] = ProcessPoolExecutor(workers, mp_context=context,
                                              initializer=start_worker,
                                              initargs=(os.getpid(),))
    return _pools[workers]


@contextlib.contextmanager
def safe_path_for_children():
    """PYTHONSAFEPATH=1 for the processes started inside this block, as it was after it."""
    before = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = before


def start_worker(caller: int) -> None:
    """Set up a worker process: one OpenCV thread, as the pool already keeps every CPU busy.

    The caller's process keeps OpenCV's default, a thread per CPU: one photo at a time is a
    tenth quicker with them (MNIST-size images are too small to be split at all). Ctrl-C is
    for the caller, which stops the pool: a worker that took it too would print a traceback.
    A caller killed outright (kill -9) cannot stop the pool, and a worker waiting for tasks
    would wait forever (its task queue never closes; the fork server waits for the workers):
    so each worker watches its caller and ends with it.
    """
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=end_with, args=(caller,), daemon=True).start()


def end_with(caller: int) -> None:
    """Exit this process once the process `caller` is gone."""
    while True:
        time.sleep(CALLER_CHECK_SECONDS)
        try:
            os.kill(caller, 0)  # signal 0: only asks whether the process exists
        except (ProcessLookupError, PermissionError):  # gone, or its pid now another user's
            os._exit(0)


@atexit.register
def close_pools() -> None:
    """Stop the kept worker processes when the program ends."""
    for pool in _pools.values():
        pool.shutdown(cancel_futures=True)
    _pools.clear()


def save_preprocessed(array: np.ndarray, path) -> None:
    """Write a preprocessed digit as the 8-bit grayscale 28x28 PNG that the model saw.

    Args:
      array: the (28, 28) or (28, 28, 1) float array in [0, 1] from to_mnist.
      path: the PNG file to write.

    Raises:
      WriteError: naming `path`, when it cannot be written (a full disk, no such folder).
    """
    from digitnet.runs.layout import atomic_path

    with atomic_path(path) as partial:  # an interrupted write leaves no half PNG under `path`
        Image.fromarray(preprocessed_pixels(array)).save(partial, format="PNG")


def preprocessed_pixels(array: np.ndarray) -> np.ndarray:
    """The 8-bit (28, 28) image the model saw, from a to_mnist array in [0, 1]."""
    pixels = np.round(np.clip(np.squeeze(np.asarray(array, np.float32)), 0, 1) * 255)
    return pixels.astype(np.uint8)
