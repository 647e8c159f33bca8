"""`digitnet serve` as a subprocess on a free 127.0.0.1 port, for the tests that need sockets."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

START_SECONDS = 60  # a loaded machine may take this long to import and load


class Server:
    """A running `digitnet serve`; `url` ends with a slash."""

    def __init__(self, model, *options: str):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digitnet", "serve", str(model), "--port", "0", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.process.stdout.readline()  # printed once the port is bound
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not found:
            self.process.kill()
            raise AssertionError(f"no URL from digitnet serve: {line!r} "
                                 f"{self.process.stderr.read()!r}")
        self.port = int(found.group(1))
        self.url = f"http://127.0.0.1:{self.port}/"
        self.wait_until_healthy()

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        """Send `sig` (None: send nothing); the exit status and what the server wrote on
        stderr."""
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return self.process.returncode, err


@contextlib.contextmanager
def serving(model, *options: str):
    server = Server(model, *options)
    try:
        yield server
    finally:
        server.stop()
