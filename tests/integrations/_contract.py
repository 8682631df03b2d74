"""What every example app does, proved once here and run against each framework with its test client.

A framework's test module subclasses :class:`ExampleAppContract` and provides a ``shop`` fixture: a
:class:`Shop` driving its example app in process, one cookie jar per test.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import evmiddleware
from evmiddleware import signals
from evmiddleware.events import Event
from evmiddleware.providers.sinks import MemorySink

COOKIE = "ev_anon_id"
CHUNKS = "chunk 0\nchunk 1\nchunk 2\n"


@dataclasses.dataclass
class Reply:
    status: int
    text: str
    #: The ``Set-Cookie`` values of the anonymous-id cookie in this response.
    cookies: list[str]


class Shop(Protocol):
    #: Whether the body of a streamed response is still unread when ``open`` returns.
    defers_body: bool

    def request(
        self, method: str, path: str, *, json: Any = None, form: dict[str, str] | None = None
    ) -> Reply: ...

    def open(self, path: str) -> Callable[[], str]:
        """Start a GET; the returned function reads the rest of the body and closes the response."""
        ...


def request_events(events: list[Event]) -> list[Event]:
    return [event for event in events if event.name == "http_request"]


@contextlib.contextmanager
def no_receivers() -> Iterator[None]:
    """``event_tracked`` without its receivers: request events are then built on the dispatcher
    thread (with a receiver they are built on the request thread, where the receiver sees them)."""
    saved = dict(signals.event_tracked.receivers)
    signals.event_tracked.receivers.clear()
    try:
        yield
    finally:
        signals.event_tracked.receivers.update(saved)


def cookie_id(set_cookie: str) -> str:
    name, _, value = set_cookie.split(";", 1)[0].partition("=")
    assert name.strip() == COOKIE
    return value.strip().strip('"')


class ExampleAppContract:
    """The example routes of DESIGN.md, as each framework's example app must serve them."""

    def test_first_visit_gets_the_cookie_once_and_every_event_carries_its_id(self, shop: Shop, events):
        first = shop.request("GET", "/")
        second = shop.request("GET", "/items/1")
        third = shop.request("GET", "/")
        assert len(first.cookies) == 1
        assert second.cookies == [] and third.cookies == []
        anonymous_id = cookie_id(first.cookies[0])
        assert [event.anonymous_id for event in request_events(events)] == [anonymous_id] * 3

    def test_home_records_a_page_view(self, shop: Shop, events):
        reply = shop.request("GET", "/")
        assert reply.status == 200
        [event] = events
        assert event.name == "http_request"
        assert event.user_id is None
        properties = event.properties
        assert (properties["method"], properties["route"], properties["path"]) == ("GET", "/", "/")
        assert properties["status_code"] == 200
        assert properties["duration_ms"] >= 0

    def test_item_is_recorded_with_its_route_template_not_the_raw_path(self, shop: Shop, events):
        assert shop.request("GET", "/items/42").status == 200
        [event] = events
        assert event.properties["route"] == "/items/{item_id}"
        assert event.properties["path"] == "/items/42"
        assert event.properties["status_code"] == 200

    def test_login_identifies_and_later_requests_carry_the_user_id(self, shop: Shop, events):
        anonymous_id = cookie_id(shop.request("GET", "/").cookies[0])
        assert shop.request("POST", "/login", json={"user_id": "user-7"}).status == 200
        shop.request("GET", "/items/3")
        names = [(event.name, event.user_id) for event in events]
        assert names == [
            ("http_request", None),
            ("identify", "user-7"),
            ("http_request", "user-7"),  # the login request's own event
            ("http_request", "user-7"),
        ]
        assert {event.anonymous_id for event in events} == {anonymous_id}
        assert events[1].properties == {"plan": "free"}
        assert events[2].properties["route"] == "/login"

    def test_login_accepts_a_form(self, shop: Shop, events):
        assert shop.request("POST", "/login", form={"user_id": "user-8"}).status == 200
        assert [(event.name, event.user_id) for event in events] == [
            ("identify", "user-8"),
            ("http_request", "user-8"),
        ]

    def test_login_without_a_user_id_is_a_400_and_identifies_nobody(self, shop: Shop, events):
        assert shop.request("POST", "/login", json={}).status == 400
        [event] = events
        assert (event.name, event.user_id, event.properties["status_code"]) == ("http_request", None, 400)

    def test_checkout_records_the_decorated_handler_and_the_manual_event(self, shop: Shop, events):
        reply = shop.request("POST", "/checkout", json={"total": 42.5, "items": ["sku-9"]})
        assert reply.status == 200
        by_name = {event.name: event for event in events}
        assert {"order_paid", "checkout_completed", "http_request"} <= set(by_name)
        assert by_name["order_paid"].properties == {"revenue": 42.5, "currency": "EUR", "items": ["sku-9"]}
        completed = by_name["checkout_completed"].properties
        assert completed["raised"] is False and completed["duration_ms"] >= 0
        assert by_name["http_request"].properties["route"] == "/checkout"
        anonymous_ids = {event.anonymous_id for event in events}
        assert len(anonymous_ids) == 1 and None not in anonymous_ids

    def test_checkout_body_is_optional(self, shop: Shop, events):
        assert shop.request("POST", "/checkout").status == 200
        [paid] = [event for event in events if event.name == "order_paid"]
        assert paid.properties["revenue"] == 19.9

    def test_stream_is_counted_once_after_the_last_chunk(self, shop: Shop, events):
        read = shop.open("/stream")
        if shop.defers_body:
            assert request_events(events) == [], "recorded before the body was sent"
        assert read() == CHUNKS
        [event] = request_events(events)
        assert event.properties["route"] == "/stream"
        assert event.properties["status_code"] == 200
        assert "disconnected" not in event.properties

    def test_boom_is_recorded_as_a_500_with_the_exception_type(self, shop: Shop, events):
        assert shop.request("GET", "/boom").status == 500
        [event] = request_events(events)
        assert event.properties["route"] == "/boom"
        assert event.properties["status_code"] == 500
        assert event.properties["error_type"] == "RuntimeError"

    def test_health_is_not_tracked_and_gets_no_cookie(self, shop: Shop, events):
        reply = shop.request("GET", "/health")
        assert (reply.status, reply.text, reply.cookies) == (200, "ok", [])
        assert events == []

    def test_an_unknown_path_is_recorded_with_its_raw_path(self, shop: Shop, events):
        assert shop.request("GET", "/no/such/page").status == 404
        [event] = events
        assert (event.properties["route"], event.properties["status_code"]) == ("/no/such/page", 404)

    def test_properties_built_on_the_dispatcher_are_those_built_on_the_request_thread(
        self, shop: Shop, events, sink: MemorySink
    ):
        def visit() -> None:
            shop.request("GET", "/")
            shop.request("GET", "/items/42?utm_source=news&utm_campaign=spring%20sale&token=t&q=x")
            shop.request("GET", "/boom")
            shop.request("GET", "/no/such/page")
            assert shop.open("/stream")() == CHUNKS

        visit()
        on_request_thread = [event.properties for event in request_events(events)]
        assert evmiddleware.flush(5)
        sink.clear()
        with no_receivers():
            visit()
            assert evmiddleware.flush(5)
        on_dispatcher = [event.properties for event in request_events(sink.events)]

        def timeless(properties: dict[str, Any]) -> dict[str, Any]:
            return {key: value for key, value in properties.items() if key != "duration_ms"}

        assert len(on_request_thread) == 5
        assert [timeless(p) for p in on_dispatcher] == [timeless(p) for p in on_request_thread]
        item, boom = on_dispatcher[1], on_dispatcher[2]
        assert (item["route"], item["utm_source"], item["utm_campaign"]) == (
            "/items/{item_id}",
            "news",
            "spring sale",
        )
        assert (boom["status_code"], boom["error_type"]) == (500, "RuntimeError")
