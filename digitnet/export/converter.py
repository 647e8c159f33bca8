"""The LiteRT converter process: TensorFlow in a child process, started before it is needed.

Keras converts to LiteRT only on its TensorFlow backend, fixed per process, so a JAX run converts
in a TensorFlow process of its own, and importing TensorFlow takes seconds. `digitnet train
--backend jax` starts it first (`start_early`), so that it imports TensorFlow on the other core
while the training process imports JAX, loads the data and compiles. It then waits, using no
CPU, until training hands it the saved .keras file and the .tflite path (`convert`), and
converts while the training process tests the model.

No converter outlives the process that started it: one never used is ended at exit (`stop`),
and the kernel ends it when its parent dies (PR_SET_PDEATHSIG, `die_with_parent`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from digitnet.errors import DigitnetError, one_line

PARENT_ENV = "DIGITNET_CONVERTER_PARENT"  # the training process's id, in the converter's env
# How long a run waits for its conversion: a tiny model converts in about 2 s and MNIST's models
# in under 10 s on a loaded 2-core machine; a converter still busy after this is stuck (a hung
# TensorFlow), and the run fails naming the file rather than waiting forever.
CONVERT_TIMEOUT_S = 300
ERRORS_READ = 4096  # bytes read back from the end of a failed converter's standard error
_waiting: subprocess.Popen | None = None  # started, not yet handed a model
# Every converter this process started and has not reaped yet (for `stop`), with its standard
# error: an unnamed temporary file, read back for a failure's last line. Not a pipe: one read only
# once the model was handed over filled up at 64 KB (TensorFlow's import warnings, a long
# traceback) and held the converter still until then.
_errors: dict[subprocess.Popen, IO[bytes]] = {}


def start_early(backend: str) -> None:
    """Start the converter before this process imports `backend`, when the run will need one: on
    JAX. A TensorFlow run converts in its own process: a second TensorFlow process cost 3-4 s
    of CPU time to save about 0.5 s of waiting on an idle machine, and waiting was longer when
    other jobs kept the cores busy (docs/speed.md)."""
    if backend == "jax":
        start()


def start() -> None:
    """Start a converter unless one is waiting already."""
    global _waiting
    if not waiting():
        _waiting = launch()


def waiting() -> bool:
    """Whether a started converter is waiting for a model."""
    return _waiting is not None and _waiting.poll() is None


def launch() -> subprocess.Popen:
    """`python -m digitnet.export.litert -` under TensorFlow, in a process group of its own (a
    terminal's Ctrl-C goes to the training process, which ends it)."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           PARENT_ENV: str(os.getpid())}
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (it outlives this call: `last_errors`)
    try:
        process = subprocess.Popen(command(), env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=errors, text=True, process_group=0)
    except BaseException:
        errors.close()  # no converter will write to it
        raise
    _errors[process] = errors
    return process


def command() -> list[str]:
    """The converter's command line (it reads the two paths from standard input)."""
    return [sys.executable, "-m", "digitnet.export.litert", "-"]


def convert(keras_path: Path, tflite_path: Path) -> Callable[[], None]:
    """Hand the waiting converter (or a new one) the saved model and the file to write.

    Returns:
      A function that waits until `tflite_path` is written (atomically, by the converter).

    Raises (the returned function):
      DigitnetError: the conversion failed (its last line of errors, or the signal that killed
        it, is in the message) or did not finish in time. The caller then ends the converter
        and removes its partial file (`abandon`).
    """
    global _waiting
    older = identity(tflite_path)  # a file there before (a resumed run's) is not a new one
    process, _waiting = (_waiting if waiting() else launch()), None
    # written, then closed: it reads no more. One ended already breaks the pipe; its status and
    # errors say why
    with contextlib.suppress(BrokenPipeError), process.stdin:
        process.stdin.write(f"{keras_path}\n{tflite_path}\n")

    def wait() -> None:
        try:
            process.wait(timeout=CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # the caller ends it (`abandon`, train.finish)
            raise DigitnetError(f"{tflite_path}: LiteRT export did not finish within "
                                f"{CONVERT_TIMEOUT_S} s (the converter was ended)") from None
        stderr = last_errors(process)
        if process.returncode < 0:  # SIGKILL (out of memory, kill -9): its stderr says nothing
            raise DigitnetError(f"{tflite_path}: LiteRT export failed (killed by "
                                f"{signal.Signals(-process.returncode).name})")
        if process.returncode:
            lines = (stderr.strip() or f"exit status {process.returncode}").splitlines()
            reason = one_line(lines[-1]).removeprefix(f"{tflite_path}: ")  # named once
            raise DigitnetError(f"{tflite_path}: LiteRT export failed ({reason})")
        if identity(tflite_path) in (None, older):  # written: renamed into place, a new inode
            raise DigitnetError(f"{tflite_path}: LiteRT export failed (the converter wrote "
                                f"nothing)")

    return wait


def identity(path: Path) -> tuple[int, int] | None:
    """The file at `path` as (inode, modification time), or None when there is none."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns


def abandon(tflite_path: Path) -> None:
    """End every converter (one converting into `tflite_path` included) and remove the
    temporary files a killed one leaves in the run directory (`layout.remove_temporaries`:
    files only, `atomic_path`'s names); an older `tflite_path` stays as it was."""
    from digitnet.runs.layout import remove_temporaries

    stop()
    remove_temporaries(Path(tflite_path).parent)


def stop() -> None:
    """End every converter still running (one never handed a model) and reap it."""
    global _waiting
    _waiting = None
    for process in list(_errors):
        if process.poll() is None:
            process.kill()
            process.wait()
        close_errors(process)


atexit.register(stop)  # at import: ends nothing until a converter is started


def last_errors(process: subprocess.Popen) -> str:
    """The end of what an ended converter wrote to standard error (its file is closed)."""
    errors = _errors.get(process)
    if errors is None:
        return ""
    errors.seek(max(errors.seek(0, os.SEEK_END) - ERRORS_READ, 0))
    text = errors.read().decode(errors="replace")
    close_errors(process)
    return text


def close_errors(process: subprocess.Popen) -> None:
    """Close (and so delete) an ended converter's standard error file; `stop` forgets it."""
    errors = _errors.pop(process, None)
    if errors is not None:
        errors.close()


def read_paths() -> list[str]:
    """The converter's side: the .keras and .tflite paths from standard input, one a line; none
    when the training process closes it first (or ends)."""
    keras_path, tflite_path = sys.stdin.readline().strip(), sys.stdin.readline().strip()
    return [keras_path, tflite_path] if keras_path and tflite_path else []


def die_with_parent() -> None:
    """The converter's side, Linux: be killed when the training process dies, even by SIGKILL;
    leave at once, failing, if it is gone already."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's `stop` still ends it
        return
    if os.getppid() != int(parent):
        os._exit(1)
