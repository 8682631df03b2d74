"""A small recording HTTP server on 127.0.0.1 for delivery tests: real sockets, scripted answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"status":"ok","errors":[]}'
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # wait for the test to release the answer


Script = Callable[["RecordingServer", Received], Answer]


class RecordingServer:
    """Records every request; answers with ``script`` (default: 200 with an empty FloKit answer)."""

    def __init__(self, script: Script | None = None, port: int = 0) -> None:
        self.script = script or (lambda server, received: Answer())
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def start(self) -> RecordingServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per keep-alive answer

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received = Received(
                    self.path, dict(self.headers.items()), self.rfile.read(length), time.monotonic()
                )
                with server.lock:
                    server.received.append(received)
                answer = server.script(server, received)
                if answer.hold is not None:
                    answer.hold.wait(30)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:  # the client gave up (timeouts, shutdown tests)
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def events(self) -> list[dict[str, Any]]:
        """Every event of every batch body received (FloKit-shaped ``{"events": [...]}``)."""
        with self.lock:
            return [event for r in self.received for event in r.json()["events"]]

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
