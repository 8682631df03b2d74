"""A request's properties are built on the dispatcher thread from what the request thread kept; they
are exactly those built on the request thread, where the event is checked when a receiver of
``event_tracked`` listens (or in strict mode, or with a full intake)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
from capture_helpers import http_scope, request_events, run_asgi
from werkzeug.test import EnvironBuilder

import evmiddleware
from evmiddleware import signals
from evmiddleware.asgi import EventMiddleware as ASGIEvents
from evmiddleware.capture import Capture
from evmiddleware.events import Event
from evmiddleware.providers.sinks import MemorySink
from evmiddleware.wsgi import EventMiddleware as WSGIEvents

UA = "Mozilla/5.0 (test)"
QUERY = "utm_source=news&utm_medium=mail&q=shoes&token=abc&utm_campaign=spring%20sale&ref=ad1"
HEADERS = [
    (b"user-agent", UA.encode()),
    (b"referer", b"https://example.org/page?session=secret#frag"),
    (b"x-plan", b"pro"),
    (b"authorization", b"Bearer never"),
    (b"cookie", b"ev_anon_id=visitor-1; other=x"),
]
OPTIONS: dict[str, Any] = {
    "capture_headers": ("X-Plan",),
    "capture_query_params": ("ref",),
    "capture_ip": True,
    "install_signal_handler": False,
}


async def ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"made"})


async def raises_after_start(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise LookupError("boom")


async def client_leaves_mid_stream(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass


async def client_leaves_before_any_response(scope, receive, send):
    while (await receive())["type"] != "http.disconnect":
        pass


async def reads_after_the_response(scope, receive, send):
    # The response is complete (the event is recorded); the disconnect seen afterwards must not
    # reach the event the dispatcher has yet to build.
    await ok(scope, receive, send)
    while (await receive())["type"] != "http.disconnect":
        pass


def asgi(app: Any, **options: Any) -> Callable[[], None]:
    def run() -> None:
        with contextlib.suppress(LookupError):
            run_asgi(
                ASGIEvents(app, **OPTIONS, **options),
                http_scope("/items/3", headers=HEADERS, query=QUERY.encode()),
            )

    return run


def wsgi(body: list[bytes] | None = None, **options: Any) -> Callable[[], None]:
    def app(environ, start_response):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        if body is not None:
            return iter(body)  # a lazy body: closed after one chunk, the client left
        return [b"missing"]

    def run() -> None:
        headers = [(name.decode(), value.decode()) for name, value in HEADERS]
        environ = EnvironBuilder(
            path="/x/1", method="DELETE", headers=headers, query_string=QUERY
        ).get_environ()
        environ["REMOTE_ADDR"] = "10.1.2.3"
        result = WSGIEvents(app, **OPTIONS, **options)(environ, lambda status, headers, exc_info=None: None)
        next(iter(result))
        result.close()  # type: ignore[attr-defined]

    return run


SCENARIOS = {
    "asgi": asgi(ok),
    "asgi route resolver": asgi(ok, route_resolver=lambda scope: "/items/{id}"),
    "asgi exception": asgi(raises_after_start),
    "asgi disconnect mid-stream": asgi(client_leaves_mid_stream),
    "asgi disconnect before any response": asgi(client_leaves_before_any_response),
    "asgi disconnect after the response": asgi(reads_after_the_response),
    "wsgi": wsgi(),
    "wsgi closed early": wsgi(body=[b"a", b"b"]),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_properties_built_on_the_dispatcher_are_those_built_on_the_request_thread(
    sink: MemorySink, clock, monkeypatch: pytest.MonkeyPatch, scenario: str
):
    built_on: list[str] = []
    properties = Capture.properties

    def recorded(self: Capture, finished: Any) -> dict[str, Any]:
        built_on.append(threading.current_thread().name)
        return properties(self, finished)

    monkeypatch.setattr(Capture, "properties", recorded)
    run = SCENARIOS[scenario]

    run()  # no receiver: built on the dispatcher thread
    assert evmiddleware.flush(5)
    [on_dispatcher] = request_events(sink.events)
    seen: list[Event] = []

    def receive(sender: object, event: Event) -> None:
        seen.append(event)

    signals.event_tracked.connect(receive)
    try:
        run()  # a receiver: built on the request thread, before the receiver sees the event
    finally:
        signals.event_tracked.disconnect(receive)
    [on_request_thread] = request_events(seen)

    assert built_on == [built_on[0], threading.current_thread().name]
    assert built_on[0] != built_on[1]
    assert on_dispatcher.properties == on_request_thread.properties
    assert (on_dispatcher.anonymous_id, on_dispatcher.user_id) == ("visitor-1", None)
    properties_seen = on_dispatcher.properties
    assert properties_seen["user_agent"] == UA
    assert properties_seen["referrer"] == "https://example.org/page"
    assert (properties_seen["utm_source"], properties_seen["utm_campaign"]) == ("news", "spring sale")
    assert (properties_seen["header_x_plan"], properties_seen["query_ref"]) == ("pro", "ad1")
    assert "utm_token" not in properties_seen and "token" not in properties_seen
    assert not any("authorization" in key or "cookie" in key for key in properties_seen)
