"""A tiny shop served as raw WSGI and raw ASGI, with the example apps' routes, for ``evmiddleware demo``.

No framework: the demo must run on a plain install. The example apps in ``example_apps/`` show the
same routes with Flask, FastAPI and Django.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from .api import identify, track, tracked

_ITEM = re.compile(r"^/items/(\d+)$")


def route_of(request: Any) -> str | None:
    """The route template, for the middleware's ``route_resolver`` (raw apps have no router)."""
    path = request.get("PATH_INFO") or request.get("path") or ""
    return "/items/{item_id}" if _ITEM.match(path) else path


def _login(body: bytes, content_type: str) -> str | None:
    if content_type.startswith("application/json"):
        user_id = json.loads(body or b"{}").get("user_id")
    else:
        user_id = parse_qs(body.decode()).get("user_id", [None])[0]
    if not user_id:
        return None
    identify(str(user_id), plan="free")
    return str(user_id)


@tracked("checkout_completed", source="demo")
def _checkout(body: bytes) -> dict[str, Any]:
    order = json.loads(body or b"{}")
    total = float(order.get("total", 19.9))
    track("order_paid", {"revenue": total, "currency": "EUR", "items": order.get("items", ["sku-1"])})
    return {"ok": True, "total": total}


def _handle(method: str, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    if path == "/" and method == "GET":
        return 200, b"welcome"
    if (match := _ITEM.match(path)) and method == "GET":
        return 200, json.dumps({"item_id": int(match.group(1))}).encode()
    if path == "/login" and method == "POST":
        return (200, b"signed in") if _login(body, content_type) else (400, b"user_id missing")
    if path == "/checkout" and method == "POST":
        return 200, json.dumps(_checkout(body)).encode()
    if path == "/health":
        return 200, b"ok"
    if path == "/boom":
        raise RuntimeError("boom")
    return 404, b"not found"


def wsgi_app(environ: MutableMapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _chunks()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    status, payload = _handle(environ["REQUEST_METHOD"], path, body, environ.get("CONTENT_TYPE", ""))
    start_response(f"{status} X", [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))])
    return [payload]


def _chunks() -> Iterator[bytes]:
    for i in range(3):
        yield f"chunk {i}\n".encode()


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def asgi_app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope.get("headers", []))
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in _chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    content_type = headers.get(b"content-type", b"").decode()
    status, payload = _handle(scope["method"], scope["path"], body, content_type)
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
    )
    await send({"type": "http.response.body", "body": payload})
