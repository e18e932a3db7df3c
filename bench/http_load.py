"""Load generators and the ceiling the benchmarks measure HTTP routes against.

- ``wrk_load``: a closed loop of N connections (Debian's ``wrk``), for capacity.
- ``open_loop``: a fixed offered rate (requests sent on schedule, whether or not earlier ones
  were answered; latency counted from the scheduled send time, so a stalled server cannot hide
  its stall by slowing the generator down), in a process of its own, for latency at light load.
- ``BareServer``: a bare aiohttp handler returning recorded bytes for each path: the most an
  aiohttp server can do on this machine with these very answers, measured in the same run.
- ``BareFileServer``: a file copied over loopback by sendfile(2) from a plain socket server: the
  ceiling of any HTTP server handing out that file.

Run as a script it is one of those processes (``serve`` or ``open-loop``); the benchmarks start it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve()
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class OpenLoopResult:
    rate: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    late_sends: int  # sends that left more than 5 ms after their scheduled time (the generator lagged)
    timeouts: int = 0  # requests not answered within REQUEST_TIMEOUT_SECONDS (counted at that latency)


# --- wrk: closed loop ------------------------------------------------------------------------------

WRK_SCRIPT = """
local paths = {%s}
local index = 0
request = function()
    index = index + 1
    return wrk.format("GET", paths[(index %% #paths) + 1], {["Authorization"] = "Bearer %s"})
end
done = function(summary, latency, requests)
    io.write(string.format("ENVSTORE p50_us=%%d p99_us=%%d requests=%%d errors=%%d seconds=%%f\\n",
        latency:percentile(50), latency:percentile(99), summary.requests,
        summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
            + summary.errors.timeout,
        summary.duration / 1e6))
end
"""


def wrk_load(base_url: str, token: str, paths: list[str], connections: int, seconds: int) -> LoadResult:
    """``connections`` connections on two threads, each sending its next request when the last
    one is answered, cycling through ``paths``. Non-2xx/3xx answers count as errors."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as directory:
        script = Path(directory) / "paths.lua"
        script.write_text(WRK_SCRIPT % (", ".join(f'"{path}"' for path in paths), token))
        command = [
            "wrk", f"--threads={min(2, connections)}", f"--connections={connections}", f"--duration={seconds}s",
            "--timeout=30s", f"--script={script}", base_url + paths[0],
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    found = re.search(r"ENVSTORE p50_us=(\d+) p99_us=(\d+) requests=(\d+) errors=(\d+) seconds=([\d.]+)", output)
    if found is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    p50, p99, requests, errors, elapsed = found.groups()
    return LoadResult(int(requests), int(errors), float(elapsed), int(p50) / 1000, int(p99) / 1000)


# --- open loop -----------------------------------------------------------------------------------


async def _open_loop(base_url: str, token: str, paths: list[str], rate: float, seconds: float) -> OpenLoopResult:
    latencies: list[float] = []
    errors = 0
    late = 0
    timeouts = 0
    interval = 1 / rate
    total = int(rate * seconds)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as http:
        # Warm the connections so the first second does not measure TCP handshakes.
        await asyncio.gather(*(_timed_get(http, paths[index % len(paths)]) for index in range(20)))
        loop = asyncio.get_running_loop()

        async def one(path: str, scheduled: float) -> None:
            nonlocal errors, late, timeouts
            if loop.time() - scheduled > 0.005:
                late += 1
            try:
                status = await asyncio.wait_for(_timed_get(http, path), REQUEST_TIMEOUT_SECONDS)
            except TimeoutError:
                timeouts += 1
                latencies.append(REQUEST_TIMEOUT_SECONDS)
                return
            latencies.append(loop.time() - scheduled)
            if not 200 <= status < 400:
                errors += 1

        tasks = []
        start = loop.time() + 0.1
        for index in range(total):
            scheduled = start + index * interval
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(paths[index % len(paths)], scheduled)))
        await asyncio.gather(*tasks)
    latencies.sort()
    quantiles = statistics.quantiles(latencies, n=1000)
    return OpenLoopResult(
        rate=rate,
        requests=len(latencies),
        errors=errors,
        p50_ms=quantiles[499] * 1000,
        p99_ms=quantiles[989] * 1000,
        p999_ms=quantiles[998] * 1000,
        max_ms=latencies[-1] * 1000,
        late_sends=late,
        timeouts=timeouts,
    )


async def _timed_get(http: aiohttp.ClientSession, path: str) -> int:
    async with http.get(path, allow_redirects=False) as response:
        await response.read()
        return response.status


def open_loop(base_url: str, token: str, paths: list[str], rate: float, seconds: float) -> OpenLoopResult:
    """A fixed offered load in a process of its own (so this one's work does not delay sends)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as arguments:
        json.dump({"base_url": base_url, "token": token, "paths": paths, "rate": rate, "seconds": seconds}, arguments)
        arguments.flush()
        output = subprocess.run(
            [sys.executable, str(HERE), "open-loop", arguments.name],
            capture_output=True, text=True, check=True, timeout=seconds + REQUEST_TIMEOUT_SECONDS + 120,
        ).stdout
    return OpenLoopResult(**json.loads(output.strip().splitlines()[-1]))


# --- the bare handler ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedAnswer:
    status: int
    content_type: str
    body: bytes


def _serve(answers_file: Path, port: int) -> None:
    from aiohttp import web

    answers: dict[str, RecordedAnswer] = pickle.loads(answers_file.read_bytes())

    async def bare(request: web.Request) -> web.Response:
        answer = answers.get(request.path_qs)
        if answer is None:
            return web.Response(status=404)
        return web.Response(body=answer.body, status=answer.status, content_type=answer.content_type)

    app = web.Application()
    app.router.add_get("/{tail:.*}", bare)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class BareServer:
    """A bare aiohttp application in its own process answering each recorded path with its bytes."""

    def __init__(self, answers: dict[str, RecordedAnswer], directory: Path, port: int) -> None:
        self.answers_file = directory / "bare-answers.pickle"
        self.answers_file.write_bytes(pickle.dumps(answers))
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> BareServer:
        self.process = subprocess.Popen([sys.executable, str(HERE), "serve", str(self.answers_file), str(self.port)])
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(self.url + "/not-recorded") as response:
                        await response.read()
                        return self
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the bare aiohttp server did not start") from None
                    await asyncio.sleep(0.05)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.terminate()
        await asyncio.to_thread(self.process.wait, 10)


# --- a bare file server: the loopback copy of a file -------------------------------------------------


def _serve_file(path: Path, port: int) -> None:
    """Any GET gets the file's bytes (or the one range asked for), written by sendfile(2) straight
    from the page cache to the socket: the least any HTTP server can do to copy a file over loopback."""
    import os
    import socketserver

    size = path.stat().st_size

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            connection = self.request
            buffered = b""
            with path.open("rb") as source:
                while True:
                    while b"\r\n\r\n" not in buffered:
                        received = connection.recv(65536)
                        if not received:
                            return
                        buffered += received
                    head, _, buffered = buffered.partition(b"\r\n\r\n")
                    start, end, status = 0, size, "200 OK"
                    extra = ""
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.decode("latin-1").partition(":")
                        if name.strip().lower() == "range":
                            first, _, last = value.strip().removeprefix("bytes=").partition("-")
                            start, end, status = int(first), (int(last) + 1 if last else size), "206 Partial Content"
                            extra = f"Content-Range: bytes {start}-{end - 1}/{size}\r\n"
                    connection.sendall(
                        f"HTTP/1.1 {status}\r\nContent-Length: {end - start}\r\n{extra}"
                        "Content-Type: application/octet-stream\r\n\r\n".encode()
                    )
                    offset = start
                    while offset < end:
                        offset += os.sendfile(connection.fileno(), source.fileno(), offset, end - offset)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("127.0.0.1", port), Handler) as server:
        server.serve_forever()


class BareFileServer:
    """``_serve_file`` in a process of its own."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> BareFileServer:
        self.process = subprocess.Popen([sys.executable, str(HERE), "serve-file", str(self.path), str(self.port)])
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(self.url + "/", headers={"Range": "bytes=0-0"}) as response:
                        await response.read()
                        return self
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the bare file server did not start") from None
                    await asyncio.sleep(0.05)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.terminate()
        await asyncio.to_thread(self.process.wait, 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("answers", type=Path)
    serve.add_argument("port", type=int)
    serve_file = commands.add_parser("serve-file")
    serve_file.add_argument("path", type=Path)
    serve_file.add_argument("port", type=int)
    loop_command = commands.add_parser("open-loop")
    loop_command.add_argument("arguments", type=Path)
    parsed = parser.parse_args()
    if parsed.command == "serve":
        _serve(parsed.answers, parsed.port)
    elif parsed.command == "serve-file":
        _serve_file(parsed.path, parsed.port)
    else:
        given = json.loads(parsed.arguments.read_text())
        result = asyncio.run(_open_loop(**given))
        print(json.dumps(asdict(result)))
        sys.stdout.flush()
        os._exit(0)
