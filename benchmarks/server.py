"""A local HTTP/1.1 server that counts the analytics events POSTed to it, for the benchmarks.

It runs in its own process (``python -m benchmarks.server``) so that decoding and counting never
compete with the measured process for its GIL. It listens on 127.0.0.1 on a port the system picks,
prints ``PORT <n>`` on its first line of output, and then:

- answers every ``POST`` with ``200`` and ``{}`` once it has counted it, keeping the connection alive;
- decodes ``Content-Encoding: gzip`` or ``deflate`` and chunked bodies, and counts the events in each
  JSON body: the length of its ``events`` (FloKit) or ``batch`` (PostHog, Segment) list, the length of
  a top-level list, else one. It parses with orjson (a dependency of evmiddleware on CPython), which
  takes 0.9 ms for a body of 1,000 request events where ``json.loads`` takes 2.1: with the stdlib
  this server was the slowest part of the pipeline, and evmiddleware's sender sat idle waiting for
  its answers for about a tenth of the end-to-end run;
- answers ``GET /count`` with ``{"events", "requests", "bad", "last", "paths"}``, where ``last`` is
  the ``time.monotonic()`` at which the latest event was counted (the same clock in every process on
  Linux), so a benchmark can time delivery without polling tightly.

It stops by itself when its standard input closes (the benchmark ended or died) or after
``--lifetime`` seconds, whichever comes first.

:class:`CountingServer` starts one from a benchmark; :class:`ServerCounts` reads its counters from
any process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["CountingServer", "ServerCounts", "count_events"]

_json_loads: Callable[[bytes], Any]
try:
    from orjson import loads as _json_loads
except ImportError:  # not CPython: the stdlib's parser, the same for every library measured
    _json_loads = json.loads

_MAX_BODY = 64 * 1024 * 1024
_MAX_HEADERS = 100
_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


def count_events(body: bytes, encoding: str = "") -> int:
    """Events in one request body; raises ``ValueError`` for a body that is not JSON."""
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        body = gzip.decompress(body)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    elif encoding not in ("", "identity"):
        raise ValueError(f"unsupported content-encoding {encoding!r}")
    document = _json_loads(body)
    if isinstance(document, dict):
        for key in ("events", "batch"):
            items = document.get(key)
            if isinstance(items, list):
                return len(items)
        return 1
    if isinstance(document, list):
        return len(document)
    return 1


class _Counts:
    def __init__(self) -> None:
        self.events = 0
        self.requests = 0
        self.bad = 0
        self.last = 0.0
        self.paths: Counter[str] = Counter()

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "events": self.events,
                "requests": self.requests,
                "bad": self.bad,
                "last": self.last,
                "paths": dict(self.paths),
            }
        ).encode()


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        size = 0
        while True:
            line = await reader.readline()
            length = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if length == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            size += length
            if size > _MAX_BODY:
                raise ValueError("body too large")
            chunks.append(await reader.readexactly(length))
            await reader.readline()
    length = int(headers.get("content-length", "0") or "0")
    if length > _MAX_BODY:
        raise ValueError("body too large")
    return await reader.readexactly(length) if length else b""


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: _Counts) -> None:
    try:
        while True:
            request_line = await reader.readline()
            if not request_line:
                return
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2:
                return
            method, target = parts[0].upper(), parts[1]
            headers: dict[str, str] = {}
            for _ in range(_MAX_HEADERS):
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await _read_body(reader, headers)
            path = target.split("?", 1)[0]
            if method == "GET" and path == "/count":
                payload = counts.as_json()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(payload), payload)
                )
            elif method == "POST":
                counts.requests += 1
                counts.paths[path] += 1
                try:
                    counted = count_events(body, headers.get("content-encoding", ""))
                except (ValueError, OSError, EOFError, zlib.error):
                    counts.bad += 1
                else:
                    counts.events += counted
                    counts.last = time.monotonic()
                writer.write(_OK)
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _main(lifetime: float) -> None:
    counts = _Counts()
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, counts), host="127.0.0.1", port=0, backlog=256
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.buffer.read)
    async with server:
        await asyncio.wait([asyncio.ensure_future(stdin_closed)], timeout=lifetime)
    os._exit(0)  # the executor thread may still block on stdin


class ServerCounts:
    """Reads the counters of a counting server already running on ``port``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._conn: http.client.HTTPConnection | None = None

    def counts(self) -> dict[str, Any]:
        """The server's counters (one keep-alive GET)."""
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self._conn.request("GET", "/count")
                response = self._conn.getresponse()
                return dict(json.loads(response.read()))
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def wait_for(self, events: int, timeout: float, poll: float = 0.02) -> dict[str, Any]:
        """Poll until at least ``events`` were counted or ``timeout`` passed; the last counters."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            if counts["events"] >= events or time.monotonic() >= deadline:
                return counts
            time.sleep(poll)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class CountingServer(ServerCounts):
    """A counting server in a child process, stopped on ``close`` or leaving the ``with`` block::

    with CountingServer() as server:
        evmiddleware.configure(flokit_api_key="k", flokit_url=server.url)
        ...
        server.wait_for(10_000, timeout=30)
    """

    def __init__(self, lifetime: float = 900.0) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server", "--lifetime", str(lifetime)],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = _readline_within(self._process.stdout, 20.0)
        if not line.startswith("PORT "):
            self._stop()
            raise RuntimeError(f"the counting server did not start (said {line!r})")
        super().__init__(int(line.split()[1]))

    def close(self) -> None:
        super().close()
        self._stop()

    def _stop(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            try:
                self._process.wait(5.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5.0)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> CountingServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _readline_within(stream: Any, timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].strip() if result else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lifetime", type=float, default=900.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.lifetime))


if __name__ == "__main__":
    main()
