"""Running the app on uvicorn: one process, or several workers sharing the listening socket.

Signals: SIGTERM or Ctrl-C stops accepting, finishes the requests in flight and exits 0
(uvicorn alone would re-raise the signal after its graceful shutdown, ending with status 130
or -15).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import threading

import uvicorn

from digitnet.errors import InputError, os_reason
from digitnet.serving.app import create_app
from digitnet.serving.model import ServedModel, load_served_model
from digitnet.serving.settings import ServeSettings

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 30  # in-flight requests get this long to finish after a stop signal
KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose stop signals end with a clean exit instead of being re-raised."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(model: str | None, host: str, port: int, workers: int, settings: ServeSettings,
          announce=None) -> None:
    """Load the model, bind host:port, announce the URL, and serve until a stop signal.

    Args:
      model: run directory, .keras or .tflite file, or None for runs/latest.
      host, port: where to listen (port 0: any free port; the URL announced says which).
      workers: processes answering requests, each with its own copy of the model.
      settings: limits and defaults.
      announce: called with one line (the URL) once the server listens; None logs it.

    Raises:
      DigitnetError: the model cannot be loaded, or the address cannot be bound.
    """
    served = load_served_model(model)  # a bad model is a one-line error before anything binds
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    announce = announce or logging.getLogger(__name__).info
    announce(f"Serving {served.info['model']} ({served.info['backend']}) at "
             f"http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops)")
    if workers == 1:
        run_one(sock, create_app(None, settings, model=served))
    else:
        run_workers(sock, str(served.source), settings, workers)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InputError("address", f"{host}:{port}",
                         f"cannot listen there ({os_reason(error)})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def config(app) -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                          timeout_keep_alive=KEEP_ALIVE_SECONDS,
                          timeout_graceful_shutdown=GRACE_SECONDS, server_header=False)


def run_one(sock: socket.socket, app) -> None:
    GracefulServer(config(app)).run(sockets=[sock])


def run_workers(sock: socket.socket, model_file: str, settings: ServeSettings,
                workers: int) -> None:
    """Start `workers` processes on the one socket; a stop signal is passed on to each."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    payload = json.dumps({"model": model_file, "settings": settings.__dict__})
    processes = [context.Process(target=worker_main, args=(sock, payload), daemon=False)
                 for _ in range(workers)]
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        for process in processes:
            process.start()
        while not stop.wait(0.5):
            if not any(process.is_alive() for process in processes):
                break
    finally:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def worker_main(sock: socket.socket, payload: str) -> None:
    """A worker process: its own copy of the model, the shared socket, stopped by its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    options = json.loads(payload)
    served: ServedModel = load_served_model(options["model"])
    app = create_app(None, ServeSettings(**options["settings"]), model=served)
    server = GracefulServer(config(app))
    server.capture_signals = contextlib.nullcontext  # keep SIGINT ignored ...
    signal.signal(signal.SIGTERM, server.handle_exit)  # ... and SIGTERM graceful
    server.run(sockets=[sock])
