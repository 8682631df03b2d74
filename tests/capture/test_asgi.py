"""The ASGI middleware on a raw ASGI app and on Starlette/FastAPI apps."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from capture_helpers import cookie_of, http_scope, request_events, run_asgi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evmiddleware
from evmiddleware import capture as capture_module
from evmiddleware import lifecycle
from evmiddleware.asgi import STATE_KEY, EventMiddleware
from evmiddleware.identity import is_valid_id

starlette = pytest.importorskip("starlette")
from asgiref.sync import sync_to_async  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.routing import Mount, Route, WebSocketRoute  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402


def _router_sets_route() -> bool:
    """Whether Starlette's router records ``scope["route"]`` (1.7 on); before, only the endpoint."""
    scope = http_scope("/r")
    run_asgi(Starlette(routes=[Route("/r", lambda request: PlainTextResponse(""))]), scope)
    return "route" in scope


ROUTER_SETS_ROUTE = _router_sets_route()


def make_raw_app(status: int = 200, body: bytes = b"hello", headers=None):
    async def app(scope, receive, send):
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": status, "headers": list(headers or [])})
        await send({"type": "http.response.body", "body": body})

    return app


# -- a raw ASGI app ------------------------------------------------------------------------------
def test_raw_app_records_status_raw_path_and_duration(tracked, clock):
    async def app(scope, receive, send):
        clock.advance(0.020)
        await send(
            {"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"made"})

    result = run_asgi(EventMiddleware(app), http_scope("/things/9", method="POST"))
    assert (result.status, result.body) == (201, b"made")
    (event,) = request_events(tracked)
    assert event.properties["route"] == "/things/9"  # a raw app has no route template: the raw path
    assert event.properties["status_code"] == 201
    assert event.properties["method"] == "POST"
    assert event.properties["duration_ms"] == 20.0
    assert event.anonymous_id == cookie_of(result.set_cookies[0])


def test_event_name_is_configurable(tracked):
    run_asgi(EventMiddleware(make_raw_app(), event_name="page_hit"), http_scope())
    assert [e.name for e in tracked] == ["page_hit"]


def test_route_resolver_is_used_when_the_framework_has_no_route(tracked):
    app = EventMiddleware(make_raw_app(), route_resolver=lambda scope: "/things/{id}")
    run_asgi(app, http_scope("/things/9"))
    assert request_events(tracked)[0].properties["route"] == "/things/{id}"


def test_streaming_is_counted_once_after_the_last_chunk(tracked, clock):
    seen_during_stream = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"a", b"b", b"c"):
            clock.advance(0.010)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            seen_during_stream.append(len(request_events(tracked)))
        clock.advance(0.010)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        seen_during_stream.append(len(request_events(tracked)))

    result = run_asgi(EventMiddleware(app), http_scope("/stream"))
    assert result.body == b"abc"
    assert seen_during_stream == [0, 0, 0, 1]
    (event,) = request_events(tracked)
    assert event.properties["duration_ms"] == 40.0  # the whole response, not the time to the first byte


def test_a_client_disconnect_mid_stream_is_recorded(tracked):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        # the client is gone: the app stops without a final chunk

    run_asgi(EventMiddleware(app), http_scope())
    (event,) = request_events(tracked)
    assert event.properties["disconnected"] is True
    assert event.properties["status_code"] == 200


def test_a_disconnect_before_any_response_is_499(tracked):
    async def app(scope, receive, send):
        while (await receive())["type"] != "http.disconnect":
            pass

    run_asgi(EventMiddleware(app), http_scope())
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties["disconnected"]) == (499, True)


@pytest.mark.parametrize("after_start", [False, True])
def test_an_exception_records_500_and_propagates_unchanged(tracked, after_start):
    error = LookupError("boom")

    async def app(scope, receive, send):
        if after_start:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise error

    with pytest.raises(LookupError) as raised:
        run_asgi(EventMiddleware(app), http_scope())
    assert raised.value is error
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties["error_type"]) == (500, "LookupError")


def test_response_is_byte_for_byte_the_apps_except_set_cookie():
    headers = [(b"content-type", b"text/plain"), (b"x-a", b"1"), (b"x-a", b"2"), (b"set-cookie", b"app=1")]
    plain = run_asgi(make_raw_app(headers=headers), http_scope())
    wrapped = run_asgi(EventMiddleware(make_raw_app(headers=headers)), http_scope())
    assert wrapped.headers[:-1] == plain.headers == headers
    assert wrapped.headers[-1][0] == b"set-cookie" and wrapped.headers[-1][1].startswith(b"ev_anon_id=")
    assert wrapped.messages[1:] == plain.messages[1:]
    kept = run_asgi(
        EventMiddleware(make_raw_app(headers=headers)),
        http_scope(headers=[(b"cookie", b"ev_anon_id=known-visitor")]),
    )
    assert kept.messages == plain.messages


def test_the_apps_messages_are_not_mutated():
    start = {"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]}

    async def app(scope, receive, send):
        await send(start)
        await send({"type": "http.response.body", "body": b""})

    run_asgi(EventMiddleware(app), http_scope())
    assert start == {"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]}


def test_a_failure_inside_tracking_leaves_the_response_alone(monkeypatch):
    def broken(*args):
        raise RuntimeError("bug in tracking")

    monkeypatch.setattr(capture_module, "record_request_event", broken)
    plain = run_asgi(make_raw_app(), http_scope(headers=[(b"cookie", b"ev_anon_id=v")]))
    wrapped = run_asgi(EventMiddleware(make_raw_app()), http_scope(headers=[(b"cookie", b"ev_anon_id=v")]))
    assert wrapped.messages == plain.messages
    assert capture_module.errors() == {"finish": 1}
    capture_module.reset_errors()


# -- scopes other than http ---------------------------------------------------------------------
def test_websocket_and_other_scopes_pass_through_untouched(tracked):
    calls = []

    async def app(scope, receive, send):
        calls.append((scope, receive, send))

    async def receive():
        return {}

    async def send(message):
        pass

    middleware = EventMiddleware(app)
    for kind in ("websocket", "custom"):
        scope = {"type": kind, "path": "/ws", "headers": []}
        asyncio.run(middleware(scope, receive, send))
        assert calls[-1] == (scope, receive, send)
        assert STATE_KEY not in scope
    assert tracked == []


def test_websocket_through_starlette_is_untouched(tracked):
    async def echo(websocket):
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    app = EventMiddleware(Starlette(routes=[WebSocketRoute("/ws", echo)]))
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("ping")
        assert ws.receive_text() == "ping"
    assert request_events(tracked) == []


class LifespanDriver:
    """Plays the server's side of lifespan; records what the app answered and what was delivered then."""

    def __init__(self, sink):
        self.sink = sink
        self.incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        self.sent = []
        self.delivered_at_shutdown = None

    async def receive(self):
        return self.incoming.pop(0)

    async def send(self, message):
        if message["type"] == "lifespan.shutdown.complete":
            self.delivered_at_shutdown = [e.name for e in self.sink.events]
        self.sent.append(message["type"])


def test_lifespan_shutdown_flushes_before_the_app_completes(sink):
    evmiddleware.configure(providers=[sink], flush_interval=3600)  # only a flush can deliver now
    driver = LifespanDriver(sink)

    async def app(scope, receive, send):
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        evmiddleware.track("shutting_down", anonymous_id="ops")
        await send({"type": "lifespan.shutdown.complete"})

    asyncio.run(EventMiddleware(app)({"type": "lifespan"}, driver.receive, driver.send))
    assert driver.sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert driver.delivered_at_shutdown == ["shutting_down"]


@pytest.mark.parametrize("behaviour", ["raises", "returns"])
def test_lifespan_is_spoken_for_apps_that_do_not(sink, behaviour):
    evmiddleware.configure(providers=[sink], flush_interval=3600)
    evmiddleware.track("queued", anonymous_id="v")
    driver = LifespanDriver(sink)

    async def app(scope, receive, send):  # like Django's ASGI handler, or a bare app
        if behaviour == "raises":
            raise ValueError("only http")

    asyncio.run(EventMiddleware(app)({"type": "lifespan"}, driver.receive, driver.send))
    assert driver.sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert driver.delivered_at_shutdown == ["queued"]


def test_starlette_lifespan_passes_through(sink):
    events = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield
        events.append("shutdown")

    app = EventMiddleware(
        Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))], lifespan=lifespan)
    )
    with TestClient(app) as client:
        assert client.get("/").text == "ok"
    assert events == ["startup", "shutdown"]
    assert [e.name for e in sink.events] == ["http_request"]  # delivered by the shutdown flush


@pytest.mark.parametrize("app_lifespan", ["speaks it", "raises", "returns"])
def test_a_doubly_wrapped_app_flushes_once_at_shutdown(sink, monkeypatch, app_lifespan):
    # Each copy ran the lifespan with its own flush: a stop waited up to one flush_timeout per copy.
    flushes = []

    async def flush(timeout):
        flushes.append(timeout)

    monkeypatch.setattr(lifecycle, "flush_off_loop", flush)
    driver = LifespanDriver(sink)

    async def app(scope, receive, send):
        if app_lifespan == "raises":  # like Django's ASGI handler
            raise ValueError("only http")
        if app_lifespan == "speaks it":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})

    inner = EventMiddleware(app, flush_timeout=1.0, install_signal_handler=False)
    outer = EventMiddleware(inner, flush_timeout=2.0, install_signal_handler=False)
    asyncio.run(outer({"type": "lifespan"}, driver.receive, driver.send))
    assert driver.sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert flushes == [2.0]  # the outermost copy's, once


# -- Starlette and FastAPI ----------------------------------------------------------------------
def item(request):
    return JSONResponse({"item": request.path_params["item_id"]})


def starlette_app(**options):
    inner = Starlette(
        routes=[Route("/users/{user_id}", lambda r: PlainTextResponse(r.path_params["user_id"]))]
    )
    return EventMiddleware(
        Starlette(routes=[Route("/items/{item_id:int}", item), Mount("/api", app=inner)]), **options
    )


def test_starlette_route_template_is_recorded(tracked):
    with TestClient(starlette_app()) as client:
        assert client.get("/items/42").json() == {"item": 42}
        assert client.get("/api/users/7").text == "7"
        assert client.get("/nowhere").status_code == 404
    routes = [(e.properties["path"], e.properties["route"], e.properties["status_code"]) for e in tracked]
    assert routes == [
        ("/items/42", "/items/{item_id}", 200),
        ("/api/users/7", "/api/users/{user_id}", 200),
        ("/nowhere", "/nowhere", 404),  # no route matched: the raw path
    ]


def test_fastapi_route_template_is_recorded(tracked):
    fastapi = pytest.importorskip("fastapi")
    api = fastapi.FastAPI()

    @api.get("/orders/{order_id}")
    def order(order_id: int):
        return {"order": order_id}

    with TestClient(EventMiddleware(api)) as client:
        assert client.get("/orders/5").json() == {"order": 5}
    assert request_events(tracked)[0].properties["route"] == "/orders/{order_id}"


def test_starlette_exception_records_500_and_reaches_the_server(tracked):
    def boom(request):
        raise ZeroDivisionError

    app = EventMiddleware(Starlette(routes=[Route("/boom", boom)]))
    with TestClient(app, raise_server_exceptions=True) as client, pytest.raises(ZeroDivisionError):
        client.get("/boom")
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties["error_type"]) == (500, "ZeroDivisionError")


def test_a_5xx_response_waits_for_the_exception_but_keeps_its_duration(tracked, clock):
    async def app(scope, receive, send):  # what Starlette's ServerErrorMiddleware does
        await send({"type": "http.response.start", "status": 500, "headers": []})
        clock.advance(0.005)
        await send({"type": "http.response.body", "body": b"Internal Server Error"})
        clock.advance(1.0)
        raise KeyError("late")

    with pytest.raises(KeyError):
        run_asgi(EventMiddleware(app), http_scope())
    (event,) = request_events(tracked)
    assert event.properties["error_type"] == "KeyError"
    assert event.properties["duration_ms"] == 5.0


def test_a_5xx_response_without_exception_is_recorded_when_the_app_returns(tracked):
    run_asgi(EventMiddleware(make_raw_app(status=503)), http_scope())
    (event,) = request_events(tracked)
    assert event.properties["status_code"] == 503 and "error_type" not in event.properties


def test_starlette_streaming_response_counted_once(tracked):
    async def chunks():
        for part in ("a", "b", "c"):
            yield part

    app = EventMiddleware(Starlette(routes=[Route("/stream", lambda r: StreamingResponse(chunks()))]))
    with TestClient(app) as client:
        assert client.get("/stream").text == "abc"
    assert len(request_events(tracked)) == 1


# -- the request context -------------------------------------------------------------------------
def test_context_in_a_sync_handler_run_in_starlettes_thread_pool(tracked):
    threads = []

    def handler(request):  # Starlette runs sync endpoints with run_in_threadpool
        threads.append(threading.current_thread())
        evmiddleware.track("viewed")
        evmiddleware.identify("user-1")
        evmiddleware.track("after_login")
        return PlainTextResponse("ok")

    app = EventMiddleware(Starlette(routes=[Route("/", handler)]))
    with TestClient(app, cookies={"ev_anon_id": "anon-1"}) as client:
        client.get("/")
    assert threads[0] is not threading.main_thread()
    ids = [(e.name, e.anonymous_id, e.user_id) for e in tracked]
    assert ids == [
        ("viewed", "anon-1", None),
        ("identify", "anon-1", "user-1"),
        ("after_login", "anon-1", "user-1"),
        ("http_request", "anon-1", "user-1"),  # identify() inside the thread reached the middleware
    ]
    assert tracked[0].context == {"method": "GET", "path": "/", "route": "/"}  # routed before the handler


def test_context_in_asgiref_sync_to_async_and_in_spawned_tasks(tracked):
    def sync_work():
        evmiddleware.track("in_thread")

    async def task_work():
        evmiddleware.track("in_task")

    async def app(scope, receive, send):
        await sync_to_async(sync_work, thread_sensitive=False)()
        await asyncio.create_task(task_work())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    run_asgi(EventMiddleware(app), http_scope(headers=[(b"cookie", b"ev_anon_id=anon-2")]))
    assert [(e.name, e.anonymous_id) for e in tracked] == [
        ("in_thread", "anon-2"),
        ("in_task", "anon-2"),
        ("http_request", "anon-2"),
    ]


def test_context_never_leaks_into_the_next_request(tracked):
    seen = []

    async def app(scope, receive, send):
        seen.append(evmiddleware.current_request())
        await make_raw_app()(scope, receive, send)

    middleware = EventMiddleware(app)

    async def two_requests():
        for cookie in (b"ev_anon_id=first", b"ev_anon_id=second"):
            await middleware(http_scope(headers=[(b"cookie", cookie)]), _receive, _drop)
            assert evmiddleware.current_request() is None

    asyncio.run(two_requests())
    assert [ctx.anonymous_id for ctx in seen] == ["first", "second"]


async def _receive():
    return {"type": "http.request", "body": b""}


async def _drop(message):
    pass


def test_skip_request_from_the_handler(tracked):
    async def app(scope, receive, send):
        evmiddleware.skip_request()
        await make_raw_app()(scope, receive, send)

    result = run_asgi(EventMiddleware(app), http_scope())
    assert result.status == 200 and request_events(tracked) == []


def test_doubly_wrapped_app_tracks_once(tracked):
    result = run_asgi(EventMiddleware(EventMiddleware(make_raw_app())), http_scope())
    assert len(result.set_cookies) == 1
    assert len(request_events(tracked)) == 1


def test_user_id_resolver_gets_the_scope(tracked):
    app = EventMiddleware(make_raw_app(), user_id_resolver=lambda scope: scope.get("user"))
    scope = http_scope()
    scope["user"] = "u-9"
    run_asgi(app, scope)
    assert request_events(tracked)[0].user_id == "u-9"


# -- the anonymous-id cookie -------------------------------------------------------------------
def test_new_visitor_gets_a_cookie_once_and_keeps_it(tracked):
    app = EventMiddleware(make_raw_app())
    first = run_asgi(app, http_scope())
    (set_cookie,) = first.set_cookies
    assert set_cookie.endswith("; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly")
    anon = cookie_of(set_cookie)
    second = run_asgi(app, http_scope(headers=[(b"cookie", f"theme=dark; ev_anon_id={anon}".encode())]))
    assert second.set_cookies == []
    assert [e.anonymous_id for e in request_events(tracked)] == [anon, anon]


@pytest.mark.parametrize("bad", ["<script>", "a" * 129, "has%20space", "semi\\colon"])
def test_an_invalid_cookie_is_replaced_never_echoed(tracked, bad):
    result = run_asgi(
        EventMiddleware(make_raw_app()), http_scope(headers=[(b"cookie", f"ev_anon_id={bad}".encode())])
    )
    (set_cookie,) = result.set_cookies
    new = cookie_of(set_cookie)
    assert new != bad and bad not in set_cookie
    assert request_events(tracked)[0].anonymous_id == new


def test_a_browser_sdk_id_is_adopted_and_kept(tracked):
    result = run_asgi(
        EventMiddleware(make_raw_app()), http_scope(headers=[(b"cookie", b"uf-anonymousId=uf-abc")])
    )
    assert cookie_of(result.set_cookies[0]) == "uf-abc"
    assert request_events(tracked)[0].anonymous_id == "uf-abc"


def test_adoption_can_be_turned_off(tracked):
    app = EventMiddleware(make_raw_app(), adopt_cookies=())
    result = run_asgi(app, http_scope(headers=[(b"cookie", b"uf-anonymousId=uf-abc")]))
    assert cookie_of(result.set_cookies[0]) != "uf-abc"


def test_cookie_name_max_age_and_domain_are_configurable():
    app = EventMiddleware(make_raw_app(), cookie_name="vid", cookie_max_age=60, cookie_domain="example.com")
    (set_cookie,) = run_asgi(app, http_scope()).set_cookies
    assert (
        set_cookie.startswith("vid=")
        and "; Max-Age=60;" in set_cookie
        and set_cookie.endswith("; Domain=example.com")
    )


@pytest.mark.parametrize(
    ("scheme", "client", "forwarded", "secure"),
    [
        ("https", ("203.0.113.5", 1), None, True),
        ("http", ("203.0.113.5", 1), b"https", False),  # anyone can send the header
        ("http", ("10.0.0.1", 1), b"https", True),  # from the trusted proxy
        ("http", ("10.0.0.1", 1), b"http", False),
        ("http", ("10.0.0.1", 1), b"https, http", False),  # our proxy says http (the last value)
        ("http", None, b"https", False),
    ],
)
def test_secure_only_over_https_or_behind_a_trusted_proxy(scheme, client, forwarded, secure):
    app = EventMiddleware(make_raw_app(), trusted_proxies=("10.0.0.0/24",))
    headers = [(b"x-forwarded-proto", forwarded)] if forwarded else []
    (set_cookie,) = run_asgi(app, http_scope(scheme=scheme, client=client, headers=headers)).set_cookies
    assert set_cookie.endswith("; Secure") is secure


def test_global_privacy_control_means_no_event_and_no_cookie(tracked):
    plain = run_asgi(make_raw_app(), http_scope())
    result = run_asgi(EventMiddleware(make_raw_app()), http_scope(headers=[(b"sec-gpc", b"1")]))
    assert result.messages == plain.messages
    assert tracked == []


def test_excluded_path_gets_nothing(tracked):
    result = run_asgi(EventMiddleware(make_raw_app(), exclude_paths=("/health",)), http_scope("/health"))
    assert result.set_cookies == [] and tracked == []


# -- whatever the client sends ------------------------------------------------------------------
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cookie=header_text,
    path=st.text(max_size=200).map(lambda p: "/" + p),
    query=st.binary(max_size=200),
    user_agent=header_text,
)
def test_arbitrary_requests_never_break_a_response(cookie, path, query, user_agent):
    headers = [(b"cookie", cookie.encode("latin-1")), (b"user-agent", user_agent.encode("latin-1"))]
    scope = http_scope(path, query=query, headers=headers)
    plain = run_asgi(make_raw_app(), dict(scope))
    wrapped = run_asgi(EventMiddleware(make_raw_app(), install_signal_handler=False), dict(scope))
    assert wrapped.body == plain.body and wrapped.status == plain.status
    for set_cookie in wrapped.set_cookies:  # a new uuid or an adopted id, always a valid one
        assert is_valid_id(cookie_of(set_cookie))
    assert capture_module.errors() == {}


# -- less common response shapes ----------------------------------------------------------------
def test_trailers_and_pathsend_end_the_response_where_asgi_says(tracked):
    seen = []

    async def with_trailers(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"x"})
        seen.append(len(request_events(tracked)))  # the body is done, the trailers are not
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
        seen.append(len(request_events(tracked)))

    async def with_pathsend(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/dev/null"})
        seen.append(len(request_events(tracked)))

    run_asgi(EventMiddleware(with_trailers), http_scope())
    run_asgi(EventMiddleware(with_pathsend), http_scope())
    assert seen == [0, 1, 2]


def test_cookies_split_over_several_header_fields_are_read(tracked):
    headers = [(b"cookie", b"a=1"), (b"cookie", b"ev_anon_id=split-visitor")]
    result = run_asgi(EventMiddleware(make_raw_app()), http_scope(headers=headers))
    assert result.set_cookies == []
    assert request_events(tracked)[0].anonymous_id == "split-visitor"


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/items/{item_id:int}", "/items/{item_id}"),
        ("/a/{x:path}/b/{y}", "/a/{x}/b/{y}"),
        ("/plain", "/plain"),
        ("/time:now/{x}", "/time:now/{x}"),
    ],
)
def test_route_converters_are_dropped_from_templates(path, template):
    from evmiddleware.asgi import _strip_converters

    assert _strip_converters(path) == template


def test_klaviyo_exchange_id_travels_as_an_alias_on_every_request(tracked):
    import base64
    import json

    kla = base64.b64encode(json.dumps({"$exchange_id": "kx.Abc"}).encode()).decode()
    app = EventMiddleware(make_raw_app())
    cookie = f"ev_anon_id=known; __kla_id={kla}".encode()
    run_asgi(app, http_scope(headers=[(b"cookie", cookie)]))
    (event,) = request_events(tracked)
    assert event.anonymous_id == "known"  # ours is kept; Klaviyo's id joins as an alias
    assert event.aliases == {"klaviyo_exchange_id": "kx.Abc"}


# -- Mounts ---------------------------------------------------------------------------------------
class PassThrough:
    """A plain ASGI middleware around a mounted app: the app's router is out of sight."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


def test_a_route_below_mounts_is_recorded_with_the_mounts_own_templates(tracked, tmp_path):
    from starlette.staticfiles import StaticFiles

    (tmp_path / "a.txt").write_text("a")
    ok = lambda request: PlainTextResponse("ok")  # noqa: E731
    app = EventMiddleware(
        Starlette(
            routes=[
                Mount("/static", StaticFiles(directory=tmp_path)),  # no router inside
                Mount("/users/{uid}", routes=[Route("/items/{iid:int}", ok)]),
                Mount("/sub", Starlette(routes=[Route("/x", ok)])),
                Mount("/v1", routes=[Mount("/org/{org}", routes=[Route("/x", ok)])]),
                Mount("/wrapped", PassThrough(Starlette(routes=[Route("/y/{n}", ok)]))),
            ]
        )
    )
    with TestClient(app) as client:
        for path in ("/static/a.txt", "/users/42/items/7", "/users/43/items/8", "/sub/x", "/sub/nothing"):
            client.get(path)
        client.get("/v1/org/acme/x")
        client.get("/wrapped/y/5")
    routes = [(e.properties["path"], e.properties["route"]) for e in request_events(tracked)]
    assert routes == [
        ("/static/a.txt", "/static"),  # was "/static/static"
        ("/users/42/items/7", "/users/{uid}/items/{iid}"),  # was "/users/42/items/{iid}"
        ("/users/43/items/8", "/users/{uid}/items/{iid}"),
        ("/sub/x", "/sub/x"),
        ("/sub/nothing", "/sub"),  # a 404 inside the mounted app: was "/sub/sub"
        ("/v1/org/acme/x", "/v1/org/{org}/x"),
        # Starlette < 1.7 names no route, only its endpoint: behind a wrapped app it is out of sight.
        ("/wrapped/y/5", "/wrapped/y/{n}" if ROUTER_SETS_ROUTE else "/wrapped/y/5"),
    ]


def test_a_middleware_inside_a_mount_records_templates_from_where_it_sits(tracked):
    def ok(request):
        evmiddleware.track("by_hand")
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/plain", ok), Mount("/users/{uid}", routes=[Route("/items", ok)])])
    outer = Starlette(routes=[Mount("/api/{version}", EventMiddleware(inner))])
    with TestClient(outer) as client:
        client.get("/api/v2/plain")
        client.get("/api/v2/users/42/items")
    routes = [e.properties["route"] for e in request_events(tracked)]
    assert routes == ["/plain", "/users/{uid}/items"]
    # Events tracked by hand carry the same templates (they counted the Mounts from the app's root).
    by_hand = [e.context.get("route") for e in tracked if e.name == "by_hand"]
    assert by_hand == routes


# -- the server's send raising: ASGI spec 2.4 ----------------------------------------------------
def run_asgi_24(app, fail_at: int, path: str = "/"):
    """Call ``app`` on a spec-2.4 server whose ``send`` raises OSError from message ``fail_at`` on (the
    client is gone); returns the messages sent and what propagated."""
    sent = []

    async def receive():
        await asyncio.sleep(5)
        return {"type": "http.disconnect"}

    async def send(message):
        if len(sent) >= fail_at:
            raise OSError("client gone")
        sent.append(message)

    scope = http_scope(path)
    scope["asgi"] = {"version": "3.0", "spec_version": "2.4"}
    try:
        asyncio.run(app(scope, receive, send))
    except Exception as exc:
        return sent, exc
    return sent, None


def test_a_send_failing_under_starlettes_streaming_response_is_a_disconnect(tracked):
    from starlette.requests import ClientDisconnect

    async def chunks():
        for _ in range(5):
            yield b"x" * 10

    app = EventMiddleware(Starlette(routes=[Route("/s", lambda request: StreamingResponse(chunks()))]))
    _, raised = run_asgi_24(app, fail_at=2, path="/s")
    # Propagates unchanged: Starlette < 0.28 streams in a task group and raises its group.
    assert isinstance(raised, ClientDisconnect) or [type(e) for e in raised.exceptions] == [OSError]
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties.get("disconnected")) == (200, True)
    assert "error_type" not in event.properties  # was 500, "ClientDisconnect"


@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_a_send_raising_oserror_is_a_disconnect_whichever_message(tracked, fail_at):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})  # the last: sent by the middleware

    _, raised = run_asgi_24(EventMiddleware(app), fail_at=fail_at)
    assert type(raised) is OSError
    (event,) = request_events(tracked)
    # The status the app started its response with, delivered or not.
    assert (event.properties["status_code"], event.properties.get("disconnected")) == (200, True)
    assert "error_type" not in event.properties


@pytest.mark.parametrize("status", [200, 503])
def test_a_streamed_response_sent_whole_is_not_a_disconnect_whatever_its_status(tracked, status):
    # Starlette's StreamingResponse reads the http.disconnect that follows a complete response; after a
    # 5xx the middleware was still waiting for the app's exception and took it for the client leaving.
    async def report(request):  # async: a sync endpoint's thread hop hid the race
        return StreamingResponse(iter([b"partial,", b"error"]), status_code=status)

    with TestClient(EventMiddleware(Starlette(routes=[Route("/report", report)]))) as client:
        for _ in range(5):  # a race: the first request of a client rarely loses it
            assert client.get("/report").content == b"partial,error"
    events = request_events(tracked)
    assert [e.properties["status_code"] for e in events] == [status] * 5
    assert [e.properties.get("disconnected") for e in events] == [None] * 5


@pytest.mark.parametrize("status", [200, 503])
@pytest.mark.parametrize("yields_after_the_last_send", ["an outer middleware", "the server"])
def test_a_response_delivered_whole_is_not_a_disconnect_when_its_last_send_yields(
    tracked, status, yields_after_the_last_send
):
    # Like uvicorn, the server answers receive() with http.disconnect once the response is complete.
    # Anything that awaits after the last message was handed on (an outer middleware's send logging
    # asynchronously, a server's send) let Starlette's listener read it before the middleware's send
    # returned, and the response was recorded as disconnected (the listener then cancels that send).
    sent = []

    async def report(request):
        return StreamingResponse(iter([b"partial,", b"done"]), status_code=status)

    inner = EventMiddleware(Starlette(routes=[Route("/report", report)]))

    async def serve():
        complete = asyncio.Event()

        async def receive():
            await complete.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete.set()
                if yields_after_the_last_send == "the server":
                    await asyncio.sleep(0)

        async def logging_send(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await asyncio.sleep(0)  # an async log sink

        outer_send = logging_send if yields_after_the_last_send == "an outer middleware" else send
        await inner(http_scope("/report"), receive, outer_send)

    asyncio.run(serve())
    assert b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body") == b"partial,done"
    (event,) = request_events(tracked)
    assert event.properties["status_code"] == status
    assert "disconnected" not in event.properties
    assert "error_type" not in event.properties


class _SendObject:
    """An outer middleware's ``send`` that is an object, not a function."""

    def __init__(self, send):
        self.send = send

    async def __call__(self, message):
        await self.send(message)


@pytest.mark.parametrize("wrapping", ["plain function", "callable object"])
@pytest.mark.parametrize("fail_at", [0, 2])
def test_a_send_failing_below_an_outer_middlewares_send_is_a_disconnect(tracked, wrapping, fail_at):
    # The OSError's traceback holds neither the frame of a plain function that handed the server's
    # awaitable on (it had returned) nor a function's __code__ for an object's __call__.
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    inner = EventMiddleware(app)

    async def outer(scope, receive, send):
        if wrapping == "plain function":
            await inner(scope, receive, lambda message: send(message))
        else:
            await inner(scope, receive, _SendObject(send))

    _, raised = run_asgi_24(outer, fail_at=fail_at)
    assert type(raised) is OSError
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties.get("disconnected")) == (200, True)
    assert "error_type" not in event.properties


def test_a_client_gone_while_starlette_reads_the_body_is_499_not_an_error(tracked):
    from starlette.requests import ClientDisconnect

    async def upload(request):
        await request.body()
        return PlainTextResponse("never")

    app = EventMiddleware(Starlette(routes=[Route("/up", upload, methods=["POST"])]))
    scope = http_scope("/up", method="POST")
    with pytest.raises(ClientDisconnect):
        run_asgi(app, scope, incoming=[{"type": "http.request", "body": b"part", "more_body": True}])
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties["disconnected"]) == (499, True)
    assert "error_type" not in event.properties  # was 500, "ClientDisconnect"


def test_an_oserror_of_the_apps_own_is_still_an_error(tracked):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        open("/nonexistent/evmiddleware-test")  # noqa: SIM115  # the app's own OSError, not the server's

    _, raised = run_asgi_24(EventMiddleware(app), fail_at=10)
    assert isinstance(raised, FileNotFoundError)
    (event,) = request_events(tracked)
    assert (event.properties["status_code"], event.properties["error_type"]) == (500, "FileNotFoundError")
    assert "disconnected" not in event.properties


# -- odd headers and query strings ----------------------------------------------------------------
@pytest.mark.parametrize(("lines", "secure"), [((b"https", b"http"), False), ((b"http", b"https"), True)])
def test_repeated_forwarded_proto_lines_are_joined_and_the_last_is_trusted(lines, secure):
    # The client sent the first line; the trusted proxy appended the last, as a WSGI server joins them.
    app = EventMiddleware(make_raw_app(), trusted_proxies=("10.0.0.1",))
    headers = [(b"x-forwarded-proto", line) for line in lines]
    (set_cookie,) = run_asgi(app, http_scope(client=("10.0.0.1", 1), headers=headers)).set_cookies
    assert set_cookie.endswith("; Secure") is secure


def test_a_raw_utf8_query_string_is_read_as_utf8(tracked):
    run_asgi(EventMiddleware(make_raw_app()), http_scope(query="utm_source=café&utm_medium=e".encode()))
    (event,) = request_events(tracked)
    assert (event.properties["utm_source"], event.properties["utm_medium"]) == ("café", "e")


# -- async hooks ----------------------------------------------------------------------------------
async def async_user_of(scope):
    return "u1"


@pytest.mark.parametrize("hook", ["user_id_resolver", "consent", "route_resolver"])
def test_an_async_hook_is_refused_when_the_middleware_is_built(hook):
    with pytest.raises(evmiddleware.ConfigurationError, match=f"{hook}: .* is async"):
        EventMiddleware(make_raw_app(), **{hook: async_user_of})


def test_an_event_tracked_below_a_mount_gets_the_route_found_last_not_the_mount_s(tracked):
    # The outer router records the Mount first; a middleware of the mounted app tracks before the inner
    # router records the endpoint's route. Each event gets the route known when it was tracked.
    from starlette.middleware import Middleware

    class Audit:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                evmiddleware.track("audit")
            await self.app(scope, receive, send)

    async def item(request):
        evmiddleware.track("item_viewed")
        return PlainTextResponse("ok")

    sub = Starlette(routes=[Route("/items/{iid}", item)], middleware=[Middleware(Audit)])
    app = EventMiddleware(Starlette(routes=[Mount("/v1", app=sub)]))
    with TestClient(app) as client:
        assert client.get("/v1/items/7").status_code == 200
    routes = {event.name: event.context.get("route") for event in tracked if event.name != "http_request"}
    assert routes == {"audit": "/v1", "item_viewed": "/v1/items/{iid}"}
    assert request_events(tracked)[0].properties["route"] == "/v1/items/{iid}"


def test_an_app_that_sets_the_visitors_cookie_itself_keeps_its_value():
    # An app restoring a known id (at sign-in) was overridden: the middleware's header came last.
    own = (b"set-cookie", b"ev_anon_id=known-visitor; Path=/")
    result = run_asgi(EventMiddleware(make_raw_app(headers=[own])), http_scope("/"))
    assert result.set_cookies == ["ev_anon_id=known-visitor; Path=/"]
    other = (b"set-cookie", b"theme=dark")
    result = run_asgi(EventMiddleware(make_raw_app(headers=[other])), http_scope("/"))
    assert [value.split("=")[0] for value in result.set_cookies] == ["theme", "ev_anon_id"]


def test_an_apps_str_header_values_are_served_with_the_visitors_cookie(tracked):
    # Outside the ASGI spec (bytes), but h11-based uvicorn serves them: the cookie check raised
    # TypeError inside send, and every new visitor got a 500.
    headers = [(b"content-type", b"text/plain"), (b"set-cookie", "session=abc; Path=/")]
    plain = run_asgi(make_raw_app(headers=headers), http_scope())
    wrapped = run_asgi(EventMiddleware(make_raw_app(headers=headers)), http_scope())
    assert wrapped.headers[:-1] == plain.headers == headers
    assert wrapped.headers[-1][0] == b"set-cookie" and wrapped.headers[-1][1].startswith(b"ev_anon_id=")
    assert wrapped.messages[1:] == plain.messages[1:]
    # The visitor's cookie set by the app as str still wins, as it does as bytes.
    own = [("set-cookie", "ev_anon_id=known-visitor; Path=/")]
    assert run_asgi(EventMiddleware(make_raw_app(headers=own)), http_scope()).headers == own
    assert len(request_events(tracked)) == 2


@pytest.mark.parametrize(
    "headers",
    [[(b"content-type", b"text/plain"), (b"x-a",)], [(b"x-a", b"1", b"2")], [42], 42],
    ids=["short pair", "long pair", "not a pair", "not iterable"],
)
def test_headers_the_cookie_check_cannot_read_reach_the_server_as_the_app_sent_them(tracked, headers):
    # A failure inside tracking is counted and the response is the app's: what the server makes of
    # such headers is its own business, as without the middleware.
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    def served(app):  # not run_asgi: its result reads the headers
        sent = []

        async def send(message):
            sent.append(message)

        asyncio.run(app(http_scope(), _receive, send))
        return sent

    assert served(EventMiddleware(app)) == served(app)
    assert capture_module.errors() == {"asgi_cookie": 1}
    capture_module.reset_errors()
    assert [e.properties["status_code"] for e in request_events(tracked)] == [200]


def test_response_headers_given_as_an_iterator_all_reach_the_server():
    # ASGI allows any iterable: the Set-Cookie check read a generator to its end, and the copy that
    # went to the server held only the cookie.
    async def app(scope, receive, send):
        headers = iter([(b"content-type", b"text/plain"), (b"x-app", b"1")])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    result = run_asgi(EventMiddleware(app), http_scope("/"))
    assert [name for name, _ in result.headers] == [b"content-type", b"x-app", b"set-cookie"]


def test_one_endpoint_at_two_levels_gets_the_template_of_the_route_that_served_it(tracked):
    # Starlette < 1.7 names only the endpoint: the top-level route that shares it was taken for the
    # mounted one (/blog/{slug}). On later versions the router names the route itself.
    async def page(request):
        return PlainTextResponse(repr(request.path_params))

    app = EventMiddleware(
        Starlette(routes=[Route("/{slug}", page), Mount("/blog", routes=[Route("/{post_id}", page)])])
    )
    for path in ("/about", "/blog/hello"):
        run_asgi(app, http_scope(path))
    assert [e.properties["route"] for e in request_events(tracked)] == ["/{slug}", "/blog/{post_id}"]


def test_apps_built_again_with_the_same_endpoint_get_their_own_templates(tracked):
    # The lookup cache was keyed on id(router): a new app's router at a dead one's address got its routes.
    async def item(request):
        return PlainTextResponse("ok")

    for prefix in ("products", "carts", "orders") * 20:
        app = EventMiddleware(Starlette(routes=[Route(f"/{prefix}/{{item_id}}", item)]))
        run_asgi(app, http_scope(f"/{prefix}/7"))
        assert request_events(tracked)[-1].properties["route"] == f"/{prefix}/{{item_id}}"


async def _answer(scope, receive, send):
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_the_app_may_be_given_by_keyword_as_old_starlette_builds_middleware():
    # Starlette before 0.35 (FastAPI's oldest supported) calls cls(app=app, **options): the signature's
    # positional-only app (for type checkers) must not refuse it.
    wrapped = EventMiddleware(app=_answer, install_signal_handler=False)
    assert wrapped.app is _answer
    assert EventMiddleware(_answer, install_signal_handler=False).app is _answer
    with pytest.raises(TypeError, match="app it wraps"):
        EventMiddleware(install_signal_handler=False)
