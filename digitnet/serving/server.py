"""Running the app on uvicorn: one process, or several sharing the listening socket (the first
one answers too: a supervisor that only waited would hold a copy of the model for nothing).

Signals: SIGTERM or Ctrl-C stops accepting, finishes the requests in flight and exits 0
(uvicorn alone would re-raise the signal after its graceful shutdown, ending with status 130
or -15).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digitnet.errors import DigitnetError, InputError, os_reason
from digitnet.serving.app import create_app
from digitnet.serving.model import ServedModel, load_served_model
from digitnet.serving.settings import ServeSettings, check_host

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 30  # in-flight requests get this long to finish after a stop signal
KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this
HEADER_SECONDS = 10  # a request's line and headers must arrive within this (then 408)
HEADER_BYTES = 64 * 1024  # ... and be no longer than this (then 431)
# Linux spreads connections over sockets sharing a port (SO_REUSEPORT); elsewhere the workers
# share the first process's socket.
SPREAD = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
PARENT_CHECK_SECONDS = 1.0  # how often a worker checks that the first process still runs


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
      workers: processes answering requests, each with its own copy of the model: this one
        and workers - 1 more.
      settings: limits and defaults.
      announce: called with one line (the URL) once the server listens; None logs it.

    Raises:
      DigitnetError: the model cannot be loaded, or the address cannot be bound.
    """
    check_host(host)
    served = load_served_model(model)  # a bad model is a one-line error before anything binds
    sock = bind(host, port)  # a port that anything listens on is refused here
    if workers > 1 and SPREAD:  # the same port, as the first of a group of sockets
        port = sock.getsockname()[1]
        sock.close()
        sock = bind(host, port, spread=True)
    shown = f"[{host}]" if ":" in host else host
    announce = announce or logging.getLogger(__name__).info
    announce(f"Serving {served.info['model']} ({served.info['backend']}) at "
             f"http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops)")
    app = create_app(None, settings, model=served)
    others = [start_worker(sock, str(served.source), settings) for _ in range(workers - 1)]
    try:
        run(Supervisor(config(app), others), sock)
    finally:
        for process in others:
            stop_worker(process)
        for process in others:
            process.wait()


def bind(host: str, port: int, spread: bool = False) -> socket.socket:
    """A socket listening on host:port.

    With `spread`, one of a group on the same port, one per worker process, over which the
    kernel spreads new connections evenly (SO_REUSEPORT). Processes sharing one listening
    socket instead take new connections as they wake: one often took all 32 of a burst,
    leaving the other idle, and a keep-alive connection stays where it was accepted.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if spread:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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
                          http=HeaderDeadline, timeout_keep_alive=KEEP_ALIVE_SECONDS,
                          timeout_graceful_shutdown=GRACE_SECONDS, server_header=False)


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with a deadline for each request's line and headers, and
    errors before a request reaches the app worded as the app words its own.

    uvicorn times a connection out only between requests, and not once a byte of the next one
    has come: a client that connects and sends nothing, or part of its headers, held its
    connection (and a file descriptor) forever, and a few thousand such clients would hold
    them all. Now it gets a 408 and is closed after HEADER_SECONDS, counted from the
    connection or from the previous answer (the body has its own timeout, body_timeout).
    Nor did it bound their size: a 40 MB header was read into memory and answered; now more
    than HEADER_BYTES is a 431. A request that is not HTTP got uvicorn's plain-text 400; it
    gets `{"error": ...}` too.
    """

    waiting_since: float | None = None  # awaiting a request's headers since (loop time)
    head_bytes = 0  # bytes received since, while awaiting them

    def data_received(self, data: bytes) -> None:
        if self.waiting_since is not None:
            self.head_bytes += len(data)
        super().data_received(data)
        if (self.waiting_since is not None and self.head_bytes > HEADER_BYTES
                and not self.transport.is_closing()):
            self.refuse(b"431 Request Header Fields Too Large",
                        f"request headers: more than {HEADER_BYTES} bytes")

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.await_headers()

    def on_headers_complete(self) -> None:
        self.waiting_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle.response_complete:  # not a pipelined request's, whose headers are in
            self.await_headers()

    def await_headers(self) -> None:
        started = self.waiting_since = self.loop.time()
        self.head_bytes = 0
        self.loop.call_later(HEADER_SECONDS, self.headers_overdue, started)

    def headers_overdue(self, started: float) -> None:
        if self.waiting_since != started or self.transport.is_closing():
            return  # they came (this deadline is an earlier request's)
        self.refuse(b"408 Request Timeout",
                    f"request headers: not received within {HEADER_SECONDS:g} s")

    def send_400_response(self, msg: str) -> None:
        self.refuse(b"400 Bad Request", f"request: not valid HTTP/1.1 ({msg.rstrip('.')})")

    def refuse(self, status: bytes, message: str) -> None:
        """Answer `{"error": message}` with `status` and close the connection."""
        body = json.dumps({"error": message}, separators=(",", ":")).encode()
        self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


def run(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve on the socket until a stop signal, in this process's one thread of work."""
    # Requests run side by side in processes (--workers), not in OpenCV's threads: a thread
    # pool per image operation spent more CPU handing work out than the operations took.
    cv2.setNumThreads(1)
    # What start-up made (modules, FastAPI's routes, the model) lives as long as the process:
    # frozen, a full collection no longer walks its 70,000 objects (about 80 ms, every request
    # in flight waiting: it set the 99th percentile latency)
    gc.freeze()
    server.run(sockets=[sock])


class Supervisor(GracefulServer):
    """The first process's server: it answers requests too, and passes a stop signal on to the
    other worker processes, so that all stop accepting at once and finish what they hold."""

    def __init__(self, config: uvicorn.Config, workers: list):
        super().__init__(config)
        self.workers = workers  # the other processes (subprocess.Popen), started

    def handle_exit(self, sig, frame) -> None:
        for process in self.workers:
            stop_worker(process)
        super().handle_exit(sig, frame)


def start_worker(sock: socket.socket, model_file: str, settings: ServeSettings):
    """Another process answering on the same port with its own copy of the model.

    A fresh interpreter (not a fork of one that may hold threads, and without the resource
    tracker process multiprocessing's spawn would add). It binds its own socket of the group
    when `sock` is one (see bind), else it is given `sock` as an inherited file descriptor.
    It ignores Ctrl-C (the first process passes the stop on) and ends with the first process,
    should that one be killed outright.
    """
    shared = SPREAD  # serve() made `sock` one of a group whenever it starts other workers
    where = ({"address": sock.getsockname()[:2]} if shared else {"fd": sock.fileno()})
    payload = json.dumps({**where, "first": os.getpid(), "model": model_file,
                          "settings": settings.__dict__})
    return subprocess.Popen([sys.executable, "-c", WORKER_MAIN, payload],
                            pass_fds=() if shared else (sock.fileno(),))


WORKER_MAIN = ("import sys; from digitnet.serving.server import worker_main; "
               "worker_main(sys.argv[1])")


def stop_worker(process: subprocess.Popen) -> None:
    """SIGTERM to a worker that is still running: it finishes its requests, then exits."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


def end_with_parent(parent: int) -> None:
    """Exit once the first process is gone: this one then has another parent (a killed first
    process that nobody has reaped yet still answers os.kill, but is no longer our parent)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def worker_main(payload: str) -> None:
    """A worker process: its own copy of the model, the shared socket, stopped by the first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the first process too
    options = json.loads(payload)
    threading.Thread(target=end_with_parent, args=(options["first"],), daemon=True).start()
    try:
        if "address" in options:  # its own socket of the group on the first process's port
            sock = bind(*options["address"], spread=True)
        else:
            sock = socket.socket(fileno=options["fd"])
        served: ServedModel = load_served_model(options["model"])
    except DigitnetError as error:  # the first process checked both: only a race gets here
        sys.exit(f"Error: {error}")
    app = create_app(None, ServeSettings(**options["settings"]), model=served)
    server = GracefulServer(config(app))
    server.capture_signals = contextlib.nullcontext  # keep SIGINT ignored ...
    signal.signal(signal.SIGTERM, server.handle_exit)  # ... and SIGTERM graceful
    run(server, sock)
