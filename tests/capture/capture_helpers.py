"""Helpers shared by the capture tests: driving ASGI apps by hand, reading responses and events."""

from __future__ import annotations

import asyncio
from typing import Any

from evmiddleware.events import Event


def request_events(events: list[Event], name: str = "http_request") -> list[Event]:
    return [event for event in events if event.name == name]


class Clock:
    """Replaces the capture layer's perf_counter, so durations are exact and no test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- driving an ASGI app by hand ---------------------------------------------------------------
def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
    scheme: str = "http",
    client: tuple[str, int] | None = ("10.0.0.7", 50123),
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": query,
        "headers": list(headers or []),
        "client": client,
        "server": ("127.0.0.1", 8000),
    }


class ASGIResult:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        self.status = start["status"] if start else None
        self.headers: list[tuple[bytes, bytes]] = list(start.get("headers", [])) if start else []
        self.body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")

    def header_values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]

    @property
    def set_cookies(self) -> list[str]:
        return [value.decode("latin-1") for value in self.header_values(b"set-cookie")]


def run_asgi(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]] | None = None) -> ASGIResult:
    """Call ``app`` once; ``receive`` yields ``incoming`` then a disconnect (as servers do when done)."""
    queue = list(incoming or [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return ASGIResult(sent)


def cookie_of(set_cookie: str, name: str = "ev_anon_id") -> str:
    pair = set_cookie.split(";", 1)[0]
    key, _, value = pair.partition("=")
    assert key == name
    return value
