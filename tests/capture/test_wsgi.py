"""The WSGI middleware on a raw WSGI app and a werkzeug app."""

from __future__ import annotations

import contextvars
import io
import threading
import wsgiref.handlers
import wsgiref.util

import pytest
from capture_helpers import cookie_of, request_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.routing import Map, Rule
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request, Response

import evmiddleware
from evmiddleware import capture as capture_module
from evmiddleware.identity import is_valid_id
from evmiddleware.wsgi import STATE_KEY, EventMiddleware


def raw_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-A", "1")])
    return [b"hello"]


def call(app, path="/", *, headers=None, environ_overrides=None, method="GET", query_string=None):
    """Run one request the way a server does: call, iterate, close. Returns (status, headers, body)."""
    environ = EnvironBuilder(
        path=path, method=method, headers=headers, query_string=query_string
    ).get_environ()
    environ.update(environ_overrides or {})
    captured = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"], captured["headers"] = status, response_headers
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return captured["status"], captured["headers"], body


def set_cookies(headers):
    return [value for key, value in headers if key.lower() == "set-cookie"]


def test_raw_app_records_status_path_and_duration(tracked, clock):
    def app(environ, start_response):
        clock.advance(0.003)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"missing"]

    status, headers, body = call(EventMiddleware(app), "/x/1", method="DELETE")
    assert (status, body) == ("404 Not Found", b"missing")
    (event,) = request_events(tracked)
    props = event.properties
    assert (props["method"], props["path"], props["route"], props["status_code"]) == (
        "DELETE",
        "/x/1",
        "/x/1",
        404,
    )
    assert props["duration_ms"] == 3.0
    assert event.anonymous_id == cookie_of(set_cookies(headers)[0])


def test_the_event_waits_for_close_not_for_the_call(tracked, clock):
    app = EventMiddleware(raw_app)
    environ = EnvironBuilder(path="/").get_environ()
    result = app(environ, lambda status, headers, exc_info=None: None)
    assert request_events(tracked) == []
    assert list(result) == [b"hello"]
    clock.advance(0.5)  # the server is still writing
    assert request_events(tracked) == []
    result.close()
    (event,) = request_events(tracked)
    assert event.properties["duration_ms"] == 500.0


def test_a_list_body_keeps_its_length_and_the_response_its_bytes():
    """wsgiref sets Content-Length from len() of a one-item body: the wrapped app's output must match."""

    def serve(app, cookie):
        environ = EnvironBuilder(path="/", headers={"Cookie": cookie}).get_environ()
        out = io.BytesIO()
        handler = wsgiref.handlers.SimpleHandler(io.BytesIO(), out, io.StringIO(), environ)
        handler.origin_server = False
        handler.run(app)
        return out.getvalue()

    plain = serve(raw_app, "ev_anon_id=known")
    assert b"Content-Length: 5" in plain
    assert serve(EventMiddleware(raw_app), "ev_anon_id=known") == plain
    new_visitor = serve(EventMiddleware(raw_app), "")
    lines = [line for line in new_visitor.split(b"\r\n") if not line.startswith(b"Set-Cookie: ev_anon_id=")]
    assert b"\r\n".join(lines) == plain


def test_a_streamed_body_is_counted_once_at_close_with_the_context_inside(tracked, clock):
    def app(environ, start_response):
        start_response("200 OK", [])
        for part in (b"a", b"b"):
            clock.advance(0.010)
            evmiddleware.track("chunk")
            yield part

    _, _, body = call(EventMiddleware(app), headers={"Cookie": "ev_anon_id=anon-s"})
    assert body == b"ab"
    assert [(e.name, e.anonymous_id) for e in tracked] == [
        ("chunk", "anon-s"),
        ("chunk", "anon-s"),
        ("http_request", "anon-s"),
    ]
    assert tracked[-1].properties["duration_ms"] == 20.0
    assert evmiddleware.current_request() is None


def test_close_of_the_apps_iterable_is_called():
    closed = []

    class Body:
        def __iter__(self):
            return iter([b"x"])

        def close(self):
            closed.append(evmiddleware.current_request().anonymous_id)

    call(EventMiddleware(lambda e, s: (s("200 OK", []), Body())[1]), headers={"Cookie": "ev_anon_id=c1"})
    assert closed == ["c1"]  # and inside the request context: a generator's finally runs there


def test_an_exception_in_the_app_records_500_and_propagates(tracked):
    error = RuntimeError("boom")

    def app(environ, start_response):
        raise error

    with pytest.raises(RuntimeError) as raised:
        call(EventMiddleware(app))
    assert raised.value is error
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties["error_type"]) == (500, "RuntimeError")


def test_an_exception_while_iterating_is_recorded_and_propagates(tracked):
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"first"
        raise OSError("disk")

    with pytest.raises(OSError, match="disk"):
        call(EventMiddleware(app))
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties["error_type"]) == (500, "OSError")


def test_an_exception_from_the_bodys_own_iter_is_recorded_as_the_error(tracked):
    class Body:
        def __iter__(self):
            raise OSError("no body")

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    with pytest.raises(OSError, match="no body"):
        call(EventMiddleware(app))
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties["error_type"]) == (500, "OSError")
    assert "disconnected" not in event.properties


def test_closed_before_the_end_is_a_disconnect(tracked):
    def app(environ, start_response):
        start_response("200 OK", [])
        yield from (b"1", b"2", b"3")

    result = EventMiddleware(app)(EnvironBuilder().get_environ(), lambda *a: None)
    next(iter(result))
    result.close()  # what a server does when the client is gone
    (event,) = request_events(tracked)
    assert event.properties["disconnected"] is True


def test_wsgi_file_wrapper_is_returned_as_itself_and_closed(tracked, tmp_path):
    path = tmp_path / "file.txt"
    path.write_bytes(b"file body")
    handle = path.open("rb")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](handle)

    environ = EnvironBuilder().get_environ()
    environ["wsgi.file_wrapper"] = wsgiref.util.FileWrapper
    result = EventMiddleware(app)(environ, lambda *a: None)
    assert type(result) is wsgiref.util.FileWrapper  # the server can still use sendfile
    assert b"".join(result) == b"file body"
    assert request_events(tracked) == []
    result.close()
    assert handle.closed
    assert len(request_events(tracked)) == 1


def test_start_response_with_exc_info_is_passed_through(tracked):
    calls = []

    def app(environ, start_response):
        start_response("200 OK", [("A", "1")])
        try:
            raise ValueError("late")
        except ValueError as exc:
            start_response("500 Internal Server Error", [("B", "2")], (ValueError, exc, exc.__traceback__))
        return [b"error page"]

    def start_response(status, headers, exc_info=None):
        calls.append((status, [h[0] for h in headers], exc_info is not None))

    result = EventMiddleware(app)(EnvironBuilder().get_environ(), start_response)
    list(result)
    result.close()
    assert calls == [
        ("200 OK", ["A", "Set-Cookie"], False),
        ("500 Internal Server Error", ["B", "Set-Cookie"], True),
    ]
    [event] = request_events(tracked)
    assert (event.properties["status_code"], event.properties["error_type"]) == (500, "ValueError")


# -- a werkzeug app -----------------------------------------------------------------------------
url_map = Map([Rule("/items/<int:item_id>", endpoint="item"), Rule("/login", endpoint="login")])


@Request.application
def werkzeug_app(request):
    adapter = url_map.bind_to_environ(request.environ)
    endpoint, args = adapter.match()
    request.environ["example.route"] = "/items/{item_id}" if endpoint == "item" else "/login"
    if endpoint == "login":
        evmiddleware.identify(request.args["user"])
        return Response("welcome")
    return Response(f"item {args['item_id']}")


def test_werkzeug_app_with_a_route_resolver_and_identify(tracked):
    app = EventMiddleware(werkzeug_app, route_resolver=lambda environ: environ.get("example.route"))
    client = Client(app)
    first = client.get("/items/3", buffered=True)  # buffered: the client closes the body, as servers do
    assert first.text == "item 3"
    anon = cookie_of(first.headers["Set-Cookie"])
    second = client.get("/login?user=u-7", buffered=True)
    assert "Set-Cookie" not in second.headers  # the cookie is set on the first response only
    client.get("/items/4", buffered=True)
    events = [(e.name, e.anonymous_id, e.user_id, e.properties.get("route")) for e in tracked]
    assert events == [
        ("http_request", anon, None, "/items/{item_id}"),
        ("identify", anon, "u-7", None),
        ("http_request", anon, "u-7", "/login"),
        ("http_request", anon, None, "/items/{item_id}"),  # the user id belongs to its own request
    ]


@pytest.mark.parametrize(
    ("environ", "secure"),
    [
        ({"wsgi.url_scheme": "https"}, True),
        ({"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "198.51.100.9"}, False),
        ({"HTTP_X_FORWARDED_PROTO": "https", "REMOTE_ADDR": "127.0.0.1"}, True),
    ],
)
def test_secure_cookie_only_behind_a_trusted_proxy(environ, secure):
    app = EventMiddleware(raw_app, trusted_proxies=("127.0.0.1",))
    _, headers, _ = call(app, environ_overrides=environ)
    assert set_cookies(headers)[0].endswith("; Secure") is secure


def test_invalid_cookie_replaced_and_sdk_cookie_adopted(tracked):
    _, headers, _ = call(EventMiddleware(raw_app), headers={"Cookie": "ev_anon_id=bad value!"})
    assert cookie_of(set_cookies(headers)[0]) != "bad value!"
    _, headers, _ = call(EventMiddleware(raw_app), headers={"Cookie": "ajs_anonymous_id=%22seg-1%22"})
    assert cookie_of(set_cookies(headers)[0]) == "seg-1"
    assert request_events(tracked)[1].anonymous_id == "seg-1"


def test_doubly_wrapped_tracks_once_and_marks_the_environ(tracked):
    seen = []

    def app(environ, start_response):
        seen.append(environ[STATE_KEY])
        return raw_app(environ, start_response)

    _, headers, _ = call(EventMiddleware(EventMiddleware(app)))
    assert len(set_cookies(headers)) == 1
    assert len(request_events(tracked)) == 1
    assert seen[0] is not None and seen[0].done  # the outer middleware's state, finished


def test_privacy_signal_and_excluded_paths_are_untouched(tracked):
    plain = call(raw_app, headers={"Sec-GPC": "1"})
    assert call(EventMiddleware(raw_app), headers={"Sec-GPC": "1"}) == plain
    assert call(EventMiddleware(raw_app, exclude_paths="/static"), "/static/a.css") == call(
        raw_app, "/static/a.css"
    )
    assert tracked == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cookie=st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300),
    path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=200),
    query=st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200),
)
def test_arbitrary_requests_never_break_a_response(cookie, path, query):
    overrides = {"HTTP_COOKIE": cookie, "PATH_INFO": "/" + path, "QUERY_STRING": query}
    plain = call(raw_app, environ_overrides=overrides)
    status, headers, body = call(
        EventMiddleware(raw_app, install_signal_handler=False), environ_overrides=overrides
    )
    assert (status, body) == (plain[0], plain[2])
    assert [h for h in headers if h[0] != "Set-Cookie"] == plain[1]
    for value in set_cookies(headers):
        assert is_valid_id(cookie_of(value))
    assert capture_module.errors() == {}


def test_between_chunks_the_server_sees_no_request_context(tracked):
    seen = []

    def app(environ, start_response):
        start_response("200 OK", [])
        for part in (b"a", b"b"):
            seen.append(evmiddleware.current_request() is not None)
            yield part

    result = EventMiddleware(app)(EnvironBuilder().get_environ(), lambda *a: None)
    for _chunk in result:
        seen.append(evmiddleware.current_request() is not None)
    result.close()
    assert seen == [True, False, True, False]
    assert request_events(tracked)[0].properties.get("disconnected") is None


def test_a_body_iterated_and_closed_on_another_thread_still_runs_inside_the_request(tracked):
    """Some servers hand the response to another thread: the body's code still sees the request, the
    event is recorded on close, and neither thread's own context is left holding the request."""
    seen = []

    def app(environ, start_response):
        start_response("200 OK", [])
        try:
            yield b"a"
            seen.append(evmiddleware.current_request().anonymous_id)
        finally:
            evmiddleware.track("stream_closed")  # runs in close(), from the generator's finally

    result = EventMiddleware(app)(EnvironBuilder().get_environ(), lambda *a: None)
    assert evmiddleware.current_request() is None

    def serve():
        seen.append(b"".join(result))
        seen.append(evmiddleware.current_request())
        result.close()

    worker = threading.Thread(target=serve)
    worker.start()
    worker.join(5)
    anonymous_id = seen[0]
    assert seen == [anonymous_id, b"a", None]
    assert evmiddleware.current_request() is None
    (event,) = request_events(tracked)
    (closed,) = [e for e in tracked if e.name == "stream_closed"]
    assert event.anonymous_id == closed.anonymous_id == anonymous_id


def test_context_variables_the_app_sets_stay_inside_the_request(tracked):
    leaked: contextvars.ContextVar[str] = contextvars.ContextVar("leaked", default="server")

    def app(environ, start_response):
        leaked.set("app")
        start_response("200 OK", [])
        return [b"ok"]

    call(EventMiddleware(app))
    assert leaked.get() == "server"


def test_a_list_body_is_timed_until_close(tracked, clock):
    result = EventMiddleware(raw_app)(EnvironBuilder().get_environ(), lambda *a: None)
    assert list(result) == [b"hello"] and len(result) == 1
    clock.advance(0.005)
    assert request_events(tracked) == []
    result.close()
    assert request_events(tracked)[0].properties["duration_ms"] == 5.0


def test_a_raw_utf8_query_string_is_read_as_utf8(tracked):
    # PEP 3333: the raw bytes of "café" arrive as the latin-1 text "cafÃ©".
    raw = "utm_source=café".encode().decode("latin-1")
    call(EventMiddleware(raw_app), environ_overrides={"QUERY_STRING": raw})
    assert request_events(tracked)[0].properties["utm_source"] == "café"


async def _async_user_of(environ):
    return "u1"


def test_an_async_user_id_resolver_is_refused_when_the_middleware_is_built():
    with pytest.raises(evmiddleware.ConfigurationError, match=r"user_id_resolver: .* is async"):
        EventMiddleware(raw_app, user_id_resolver=_async_user_of)


def test_an_app_that_sets_the_visitors_cookie_itself_keeps_its_value():
    # An app restoring a known id (at sign-in) was overridden: the middleware's header came last.
    def app_with(cookie):
        def app(environ, start_response):
            start_response("200 OK", [("Set-Cookie", cookie)])
            return [b"ok"]

        return app

    _, headers, _ = call(EventMiddleware(app_with("ev_anon_id=known-visitor; Path=/")))
    assert set_cookies(headers) == ["ev_anon_id=known-visitor; Path=/"]
    _, headers, _ = call(EventMiddleware(app_with("theme=dark")))
    assert [value.split("=")[0] for value in set_cookies(headers)] == ["theme", "ev_anon_id"]


def test_the_app_may_be_given_by_keyword_too():
    assert EventMiddleware(app=raw_app, install_signal_handler=False).app is raw_app
    with pytest.raises(TypeError, match="app it wraps"):
        EventMiddleware(install_signal_handler=False)
