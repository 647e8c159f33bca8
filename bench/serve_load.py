"""Load on `digitnet serve` over loopback: throughput, latency, start-up time and memory.

Starts `digitnet serve` as a subprocess for each setting (micro-batching on, then off, with
--workers as given), and drives it from this process with N concurrent keep-alive clients
(asyncio, raw HTTP/1.1) posting 28x28 MNIST PNGs, then 280x280 canvas-like PNGs (the same
digits, upscaled, black on white, RGBA as a browser's canvas.toBlob makes them). Each load is
bounded by --requests and --seconds, after a short warm-up. Reports answers per second,
p50/p99 latency, the time from starting the server to its first answer, and the server's RSS.

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/serve_load.py \\
        --model runs/latest [--clients 32] [--requests 20000] [--seconds 10] [--workers 1 2]

The load generator shares the machine's cores with the server (as the targets assume), and
other jobs on the machine slow every number: the load average is printed before and after.
Writes bench/results/serve-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
DEFAULT_DATA_DIR = os.environ.get("DIGITNET_DATA_DIR", str(REPO.parent / "shared/data/mnist"))
IMAGES = 256  # distinct images of each kind, cycled through
WARM_UP_SECONDS = 1.0


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def payloads(data_dir: str) -> dict[str, list[bytes]]:
    """28x28 MNIST test PNGs, and the same digits as 280x280 canvas drawings."""
    from PIL import Image

    from digitnet.data import load_mnist

    digits = load_mnist(data_dir).x_test[:IMAGES]
    small = [png(Image.fromarray(d)) for d in digits]
    canvas = [png(Image.fromarray(255 - d).resize((280, 280), Image.BILINEAR).convert("RGBA"))
              for d in digits]
    return {"28x28": small, "280x280 canvas": canvas}


class Server:
    """`digitnet serve` on a free port; `started` is when the process was launched."""

    def __init__(self, model: str, options: list[str]):
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digitnet", "serve", model, "--port", "0", *options],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = self.process.stdout.readline()
        found = re.search(r":(\d+)/", line)
        if not found:
            self.process.kill()
            raise SystemExit(f"digitnet serve did not start: {line!r}")
        self.port = int(found.group(1))

    def rss_mb(self) -> dict:
        """Resident memory of the server and its worker processes, now and at peak, in MB."""
        now = peak = 0
        for pid in [self.process.pid, *children(self.process.pid)]:
            status = Path(f"/proc/{pid}/status").read_text()
            now += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            peak += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        return {"rss_mb": round(now / 1024, 1), "peak_rss_mb": round(peak / 1024, 1)}

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server and its workers have used so far."""
        ticks = 0
        for pid in [self.process.pid, *children(self.process.pid)]:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def wait_until_started(self, processes: int, timeout: float = 120) -> float:
        """Wait until the server's `processes` processes are all idle: each worker has loaded its
        model and waits for connections (a worker still starting would take the CPU, and none
        of the connections, of the load that follows). Seconds since launching the server."""
        deadline = time.perf_counter() + timeout
        before: dict[int, int] = {}
        while time.perf_counter() < deadline:
            now = {pid: ticks for pid, ticks in process_states(self.process.pid)}
            idle = [pid for pid, ticks in now.items() if ticks is not None
                    and before.get(pid) == ticks]
            if len(idle) >= processes:
                return time.perf_counter() - self.started
            before = now
            time.sleep(0.2)
        raise SystemExit(f"digitnet serve: {processes} processes not started in {timeout:g} s")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def process_states(pid: int) -> list[tuple[int, int | None]]:
    """(pid, CPU ticks used) for the process and its descendants; ticks None while running."""
    states = []
    for each in [pid, *children(pid)]:
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            sleeping = fields[0] == "S"
            states.append((each, int(fields[11]) + int(fields[12]) if sleeping else None))
    return states


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found + [grandchild for child in found for grandchild in children(child)]


def request(port: int, body: bytes) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def exchange(reader, writer, message: bytes) -> int:
    """Send one request on a keep-alive connection; read the answer; its status."""
    writer.write(message)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def first_answer(server: Server, body: bytes) -> float:
    """Seconds from launching the server to its first 200 answer to /predict."""
    message = request(server.port, body)
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            status = await exchange(reader, writer, message)
            writer.close()
            if status == 200:
                return time.perf_counter() - server.started
        except (OSError, asyncio.IncompleteReadError):
            pass
        await asyncio.sleep(0.005)


async def load(port: int, bodies: list[bytes], clients: int, requests: int,
               seconds: float) -> dict:
    """`clients` connections posting `bodies` in turn, until `requests` or `seconds`."""
    messages = [request(port, body) for body in bodies]
    latencies: list[float] = []
    failures = 0
    sent = 0
    warm_up = 0

    async def client(index: int, until: float, record: bool) -> None:
        nonlocal failures, sent, warm_up
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        position = index
        while time.perf_counter() < until and (not record or sent < requests):
            sent += record
            began = time.perf_counter()
            status = await exchange(reader, writer, messages[position % len(messages)])
            if record:
                latencies.append(time.perf_counter() - began)
                failures += status != 200
            else:
                warm_up += 1
            position += clients
        writer.close()

    warm = time.perf_counter() + WARM_UP_SECONDS
    await asyncio.gather(*(client(i, warm, False) for i in range(clients)))
    began = time.perf_counter()
    await asyncio.gather(*(client(i, began + seconds, True) for i in range(clients)))
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {"answers": len(latencies), "warm_up_answers": warm_up, "failures": failures,
            "seconds": round(elapsed, 2),
            "answers_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def measure(model: str, options: list[str], workers: int, inputs: dict, args) -> dict:
    server = Server(model, options)
    try:
        result = {"options": " ".join(options) or "(defaults)",
                  "first_answer_s": round(asyncio.run(
                      first_answer(server, inputs["28x28"][0])), 3),
                  # the CPU the server used until then: what the start costs on an idle machine
                  "first_answer_cpu_s": round(server.cpu_seconds(), 3)}
        result["all_started_s"] = round(server.wait_until_started(workers), 3)
        result.update(server.rss_mb())
        for kind, bodies in inputs.items():
            server_cpu, client_cpu = server.cpu_seconds(), own_cpu_seconds()
            result[kind] = row = asyncio.run(load(server.port, bodies, args.clients,
                                                  args.requests, args.seconds))
            # CPU per answer does not depend on what else the machine runs: the rate two idle
            # cores could give, with server and load generator sharing them, follows from it
            row["server_cpu_ms"] = cpu_ms(server.cpu_seconds() - server_cpu, row)
            row["client_cpu_ms"] = cpu_ms(own_cpu_seconds() - client_cpu, row)
            row["idle_2_core_answers_per_s"] = round(
                2000 / (row["server_cpu_ms"] + row["client_cpu_ms"]), 0)
        after = server.rss_mb()
        result["rss_mb"], result["peak_rss_mb"] = after["rss_mb"], after["peak_rss_mb"]
    finally:
        result["exit_status"] = server.stop()
    return result


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_ms(seconds: float, row: dict) -> float:
    """CPU milliseconds per answer, warm-up included (it is counted in the answers too)."""
    return round(1000 * seconds / max(row["answers"] + row["warm_up_answers"], 1), 3)


def print_table(results: list[dict], clients: int) -> None:
    print(f"\n{clients} concurrent clients on loopback, load generator on the same machine")
    print(f"{'server options':<28} {'images':<15} {'answers/s':>9} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'srv cpu ms':>10} {'gen cpu ms':>10} {'2 idle cores/s':>14} "
          f"{'first s':>7} {'(cpu s)':>7} {'RSS MB':>7}")
    for result in results:
        for kind in ("28x28", "280x280 canvas"):
            row = result[kind]
            print(f"{result['options']:<28} {kind:<15} {row['answers_per_s']:>9.0f} "
                  f"{row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} {row['server_cpu_ms']:>10.3f} "
                  f"{row['client_cpu_ms']:>10.3f} {row['idle_2_core_answers_per_s']:>14.0f} "
                  f"{result['first_answer_s']:>7.2f} {result['first_answer_cpu_s']:>7.2f} "
                  f"{result['peak_rss_mb']:>7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/latest", help="run directory or model file")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20_000, help="per load, at most")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load, at most")
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    inputs = payloads(args.data_dir)
    load_before = os.getloadavg()
    results = []
    for workers in args.workers:
        for batching in ("--batching", "--no-batching"):
            options = [batching] + (["--workers", str(workers)] if workers > 1 else [])
            results.append(measure(args.model, options, workers, inputs, args))
    load_after = os.getloadavg()
    print_table(results, args.clients)
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} cores)")
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": load_after,
              "clients": args.clients, "model": args.model, "results": results}
    folder = REPO / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
