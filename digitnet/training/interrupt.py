"""Ctrl-C and SIGTERM during training: note the signal, stop at the next safe point.

A signal handler that raised at once could land anywhere, e.g. inside TensorFlow; instead the
first SIGINT or SIGTERM only sets a flag that training checks after each step and before each
epoch. A second signal stops at once (every file is written atomically, so that is safe too).
"""

from __future__ import annotations

import os
import signal
import threading

from digitnet.errors import DigitnetError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(DigitnetError):
    """Training stopped on a signal; the exit status is 128 + the signal number (130, 143)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class InterruptGuard:
    """Within a `with` block, turn SIGINT and SIGTERM into a flag that `check()` raises."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():  # signals go to the main one
            self.previous = {signum: signal.signal(signum, self.handle) for signum in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        outer = getattr(self.previous.get(self.signum), "__self__", None)
        if isinstance(outer, InterruptGuard) and outer.signum is None:
            outer.signum = self.signum  # a nested guard's signal: the outer loop stops too

    def handle(self, signum: int, frame) -> None:
        """Record the first signal; raise on the second."""
        if self.signum is not None:
            raise TrainingInterrupted(signum)
        self.signum = signum
        # os.write, not print: a handler may interrupt a print on the same stream.
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step and keeping the "
                    f"last completed epoch (send it again to stop at once)\n".encode())

    def check(self) -> None:
        """Raise TrainingInterrupted if a signal arrived."""
        if self.signum is not None:
            raise TrainingInterrupted(self.signum)
