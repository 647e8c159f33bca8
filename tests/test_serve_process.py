"""`digitnet serve` as a real process on a socket: the URL, signals, slow clients, big bodies."""

import contextlib
import http.client
import io
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from digitnet.cli import cli
from tests.servers import Server, serving


def digit_png() -> bytes:
    image = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(image).line([(25, 25), (95, 25), (50, 100)], fill=0, width=9)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def post(port: int, body: bytes, timeout: float = 30) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("POST", "/predict", body=body, headers={"content-type": "image/png"})
    response = connection.getresponse()
    answer = (response.status, json.loads(response.read()))
    connection.close()
    return answer


def send_head(port: int, length: int) -> socket.socket:
    """A client that sends a /predict request's head and none of its body (yet)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                   f"Content-Length: {length}\r\n\r\n".encode())
    return client


def read_response(client: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < body_length(data):
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def body_length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode().lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":")[1])
    return 0


@pytest.fixture(scope="module")
def server(tiny_run):
    with serving(tiny_run, "--max-body", "1MB") as running:
        yield running


def test_prints_the_url_and_answers(server):
    status, answer = post(server.port, digit_png())
    assert status == 200 and len(answer["probabilities"]) == 10


def test_a_body_over_the_limit_is_refused_before_it_is_sent(server):
    client = send_head(server.port, 50_000_000)  # announced, never sent
    status, answer = read_response(client)
    client.close()
    assert status == 413
    assert answer["error"] == ("request body: 50000000 bytes, above this server's limit of "
                               "1000000 bytes")


def test_a_slow_client_does_not_hold_up_others(server):
    body = digit_png()
    slow = send_head(server.port, len(body))
    slow.sendall(body[:10])  # ... and the rest much later
    began = time.monotonic()
    for _ in range(3):
        assert post(server.port, body)[0] == 200
    assert time.monotonic() - began < 10
    slow.sendall(body[10:])
    assert read_response(slow)[0] == 200
    slow.close()


def test_a_vanished_client_does_not_hold_up_others(server):
    body = digit_png()
    gone = send_head(server.port, len(body))
    gone.sendall(body[:10])
    gone.close()
    assert post(server.port, body)[0] == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_finishes_requests_in_flight_and_exits_0(tiny_run, sig):
    server = Server(tiny_run)
    body = digit_png()
    client = send_head(server.port, len(body))
    client.sendall(body[:20])
    time.sleep(0.3)  # the request is in flight
    server.process.send_signal(sig)
    time.sleep(0.3)
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(("127.0.0.1", server.port), timeout=5).recv(1)
    client.sendall(body[20:])
    status, answer = read_response(client)
    client.close()
    code, err = server.stop(None)  # the one signal was enough
    assert (status, code) == (200, 0), err
    assert "Traceback" not in err and len(answer["probabilities"]) == 10


def test_workers_share_the_port_and_stop_cleanly(tiny_run):
    server = Server(tiny_run, "--workers", "2")
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(server.port, digit_png())))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    code, err = server.stop(signal.SIGTERM)
    assert [status for status, _ in results] == [200] * 6
    assert code == 0 and "Traceback" not in err, err


def test_workers_are_this_process_and_others_that_end_with_it(tiny_run):
    """--workers 2 is two processes in all (the first answers too; no supervisor holding a third
    copy of the model), and a worker whose first process is killed outright does not live on."""
    server = Server(tiny_run, "--workers", "2")
    deadline = time.monotonic() + 60
    while not (others := descendants(server.process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(others) == 1, others
    assert post(server.port, digit_png())[0] == 200
    server.process.kill()  # SIGKILL: it cannot stop its worker
    deadline = time.monotonic() + 30
    while alive(others[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(others[0])
    server.stop(None)


def test_workers_each_take_a_share_of_a_burst_of_connections(tiny_run):
    """Sharing one listening socket, one process often accepted nearly all of a burst (and
    kept them: keep-alive) while the other idled; with a socket each on the port, the kernel
    spreads them (by a hash of the client's address: 5 or more of 32 each but once in 50,000)."""
    server = Server(tiny_run, "--workers", "2")
    worker = wait_until_started(server.process.pid)
    clients = [socket.socket() for _ in range(32)]
    for client in clients:  # all at once, as 32 clients starting together
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", server.port))
    time.sleep(1)  # accepted
    shares = [accepted(pid, server.port) for pid in (server.process.pid, worker)]
    for client in clients:
        client.close()
    code, err = server.stop(signal.SIGTERM)
    assert sum(shares) == 32 and min(shares) >= 5, shares
    assert code == 0, err


def wait_until_started(first: int) -> int:
    """The worker of a --workers 2 server, once it has loaded its model and waits (idle)."""
    deadline, used = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        others = descendants(first)
        if others:
            fields = Path(f"/proc/{others[0]}/stat").read_text().rsplit(")", 1)[1].split()
            now = int(fields[11]) + int(fields[12]) if fields[0] == "S" else None
            if now is not None and now == used:
                return others[0]
            used = now
        time.sleep(0.3)
    raise AssertionError("the worker did not start within 60 s")


def accepted(pid: int, port: int) -> int:
    """How many established connections to `port` the process holds (from /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            found += fields[3] == "01" and local_port == port and fields[9] in inodes
    return found


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found + [grandchild for child in found for grandchild in descendants(child)]


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_port_in_use_is_a_one_line_error(server, tiny_run):
    result = CliRunner().invoke(cli, ["serve", str(tiny_run), "--port", str(server.port)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: address 127.0.0.1:{server.port}: cannot listen "
                                    f"there (") and result.output.count("\n") == 1


def test_a_server_freezes_what_start_up_made_before_it_answers():
    """Full collections then skip the modules, routes and model (they paused every request)."""
    import gc

    from digitnet.serving.server import run

    class Recorder:
        def run(self, sockets):
            self.frozen = gc.get_freeze_count()

    recorder = Recorder()
    gc.unfreeze()
    try:
        run(recorder, socket.socket())
    finally:
        gc.unfreeze()
    assert recorder.frozen > 10_000  # this test process's modules, at least


@contextlib.contextmanager
def in_process(model, monkeypatch, **constants):
    """The server's app on uvicorn, as `digitnet serve` runs it, in a thread of this process
    (so that its constants can be patched); yields the port."""
    from digitnet.serving import server as serving
    from digitnet.serving.app import create_app
    from digitnet.serving.model import load_served_model
    from digitnet.serving.settings import ServeSettings

    for name, value in constants.items():
        monkeypatch.setattr(serving, name, value)
    app = create_app(None, ServeSettings(), model=load_served_model(model))
    uvicorn_server = serving.GracefulServer(serving.config(app))
    sock = serving.bind("127.0.0.1", 0)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        while not uvicorn_server.started:
            time.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        uvicorn_server.should_exit = True
        thread.join(30)


def refused(client: socket.socket, head: bytes) -> tuple[int, dict]:
    """The answer to `head` (sent, and no more), once the server has closed the connection."""
    client.sendall(head)
    answer = read_response(client)
    assert client.recv(1) == b""  # closed
    client.close()
    return answer


def test_a_client_that_never_finishes_its_headers_gets_408_and_is_closed(tiny_run,
                                                                          monkeypatch):
    """uvicorn timed a connection out only between requests: one that sent nothing, or part
    of its headers (also after a first answer), was held forever, a file descriptor each."""
    with in_process(tiny_run, monkeypatch, HEADER_SECONDS=0.5) as port:
        answered = socket.create_connection(("127.0.0.1", port), timeout=10)
        answered.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(answered)[0] == 200
        for client, head in ((socket.create_connection(("127.0.0.1", port), timeout=10), b""),
                             (socket.create_connection(("127.0.0.1", port), timeout=10),
                              b"POST /predict HTTP/1.1\r\nHost: x\r\n"),
                             (answered, b"GET /heal")):
            began = time.monotonic()
            assert refused(client, head) == (408, {"error": "request headers: not received "
                                                            "within 0.5 s"})
            assert time.monotonic() - began < 5


def test_headers_too_long_are_431_and_what_is_not_http_is_a_json_400(tiny_run, monkeypatch):
    """A 40 MB header was read into memory (and answered); garbage got uvicorn's plain text."""
    with in_process(tiny_run, monkeypatch, HEADER_SECONDS=30) as port:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000
        assert refused(socket.create_connection(("127.0.0.1", port), timeout=10), head) == (
            431, {"error": "request headers: more than 65536 bytes"})
        assert refused(socket.create_connection(("127.0.0.1", port), timeout=10),
                       b"NOT HTTP AT ALL\r\n\r\n") == (
            400, {"error": "request: not valid HTTP/1.1 (Invalid HTTP request received)"})
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 60_000
                       + b"\r\n\r\n")
        assert read_response(client)[0] == 200  # long, within the limit
        client.close()
