"""HTTP plumbing: routing by path prefix, body reading, control endpoints, fault delivery."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .common import Reply, Request, json_reply
from .core import PROVIDERS, Outcome, SandboxCore
from .faults import MAX_SLOW_SECONDS, Fault
from .validation import parse_json

__all__ = ["SandboxHTTPServer"]

logger = logging.getLogger("evmiddleware.sandbox")

# Far above any provider's limit (Klaviyo's 5 MB is the largest); past it the body is not read.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Extra bytes announced by a ``truncate`` fault and never sent.
_TRUNCATE_SHORTFALL = 64
# RFC 9112 chunk-size: hex digits only. int(x, 16) alone took "-1" (read to EOF, unbounded) and
# "0x10"; 16 digits hold any size, and anything past MAX_REQUEST_BYTES is answered 413.
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class SandboxHTTPServer(ThreadingHTTPServer):
    # Bursts of new connections from a client with several requests in flight: the default
    # backlog of 5 refuses some, which real APIs behind load balancers do not.
    request_queue_size = 128
    daemon_threads = True
    # Keep-alive handler threads would otherwise be joined on close, waiting on idle clients;
    # stop() shuts their sockets down instead.
    block_on_close = False

    def __init__(self, address: tuple[str, int], core: SandboxCore, stopping: threading.Event) -> None:
        self.core = core
        self.stopping = stopping
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Wake every handler blocked reading a kept-alive connection, so it ends at once."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (and faults that hang up on them) are normal here.
        if isinstance(sys.exc_info()[1], OSError):
            return
        logger.exception("sandbox: error while handling a request")


def _route(path: str) -> tuple[str | None, str]:
    for name in PROVIDERS:
        prefix = "/" + name
        if path == prefix or path.startswith(prefix + "/"):
            return name, path[len(prefix) :] or "/"
    return None, path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, the body waits for the client's
    # delayed ACK (40 ms) on every keep-alive request, which real APIs do not make clients suffer.
    disable_nagle_algorithm = True
    server_version = "evmiddleware-sandbox/1"
    sys_version = ""
    timeout = 60  # idle keep-alive connections end after this
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per request on Linux).
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is kept in the sandbox, and stderr noise would hide test output

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        core = self.server.core
        try:
            split = urlsplit(self.path)
        except ValueError:  # e.g. an unclosed IPv6 bracket in an absolute-form target
            self._send(json_reply(400, {"error": "bad_request", "message": "bad request target"}), True)
            return
        body = self._read_body()
        if body is None:
            return
        if split.path.startswith("/_"):
            self._send(self._control(split.path, split.query, body))
            return
        provider, rest = _route(split.path)
        if provider is None:
            self._send(json_reply(404, {"error": "not_found", "message": "unknown provider"}))
            return
        req = Request(
            method=self.command,
            path=rest,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            arrival=0.0,  # stamped by the core
        )
        self._deliver(core.process(provider, req, split.path))

    def _read_body(self) -> bytes | None:
        """The request body; None if the request was answered (and the connection closed)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self._send(json_reply(400, {"error": "bad_request", "message": "bad Content-Length"}), True)
            return None
        if length > MAX_REQUEST_BYTES:
            self._send(json_reply(413, {"error": "too_large", "message": "body too large"}), True)
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            digits = line.split(b";", 1)[0].strip()  # chunk extensions (after ';') carry nothing needed
            if _CHUNK_SIZE.fullmatch(digits) is None:
                self._send(json_reply(400, {"error": "bad_request", "message": "bad chunk"}), True)
                return None
            size = int(digits, 16)
            total += size
            if total > MAX_REQUEST_BYTES:
                self._send(json_reply(413, {"error": "too_large", "message": "body too large"}), True)
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers carry nothing the sandbox needs
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _control(self, path: str, query: str, body: bytes) -> Reply:
        core = self.server.core
        try:
            if path == "/_stats" and self.command == "GET":
                return json_reply(200, core.stats())
            if path == "/_faults" and self.command == "GET":
                pending = core.faults.pending()
                return json_reply(200, {p: [f.to_json() for f in fs] for p, fs in pending.items()})
            if path == "/_faults" and self.command == "POST":
                doc = parse_json(body)
                if not isinstance(doc, dict) or not isinstance(doc.get("provider"), str):
                    raise ValueError("body must be an object with a 'provider'")
                fields = {k: v for k, v in doc.items() if k != "provider"}
                core.inject(doc["provider"], Fault.from_json(fields))
                return json_reply(200, {"ok": True})
            if path == "/_faults" and self.command == "DELETE":
                provider = parse_qs(query).get("provider", [None])[0]
                core.clear_faults(provider)
                return json_reply(200, {"ok": True})
            if path == "/_reset" and self.command == "POST":
                core.reset()
                return json_reply(200, {"ok": True})
        except (ValueError, TypeError) as exc:
            return json_reply(400, {"error": "bad_request", "message": str(exc)})
        return json_reply(404, {"error": "not_found", "message": f"no control endpoint {path}"})

    def _deliver(self, outcome: Outcome) -> None:
        fault = outcome.fault
        # An Event wait, not a sleep: stop() sets it and the connection is dropped at once.
        if (
            fault is not None
            and fault.kind == "slow"
            and self.server.stopping.wait(min(fault.seconds, MAX_SLOW_SECONDS))
        ):
            self.close_connection = True
            return
        if outcome.reply is None:
            self.close_connection = True
            return
        if fault is not None and fault.kind == "truncate":
            declared = len(outcome.reply.body) + _TRUNCATE_SHORTFALL
            self._send(outcome.reply, close=True, declared_length=declared)
            return
        self._send(outcome.reply)

    def _send(self, reply: Reply, close: bool = False, declared_length: int | None = None) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        # RFC 9110: no Content-Length (and no body) on 1xx, 204 and 304 answers.
        has_body = reply.status >= 200 and reply.status not in (204, 304)
        if has_body:
            if reply.content_type and reply.body:
                self.send_header("Content-Type", reply.content_type)
            length = len(reply.body) if declared_length is None else declared_length
            self.send_header("Content-Length", str(length))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if has_body and reply.body:
            self.wfile.write(reply.body)
        self.wfile.flush()
