"""``evmiddleware_fastapi``: the one-line install, route templates, user ids, the ``Tracker``
dependency, sync endpoints, background tasks, and the flush at shutdown."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import pytest

import evmiddleware
from evmiddleware.providers.sinks import MemorySink

from .._contract import request_events
from ._client import client_for

fastapi = pytest.importorskip("fastapi")
evmiddleware_fastapi = pytest.importorskip("evmiddleware_fastapi")
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Request  # noqa: E402
from starlette.middleware.base import BaseHTTPMiddleware  # noqa: E402

from evmiddleware_fastapi import EventTracking, Tracker, get_tracker  # noqa: E402


def new_app(**kwargs: Any) -> FastAPI:
    app = FastAPI(**kwargs)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    return app


def test_one_line_adds_a_pure_asgi_middleware_once():
    app = new_app()
    first = EventTracking(app)
    second = EventTracking(app)
    assert len(app.user_middleware) == 1
    assert not issubclass(app.user_middleware[0].cls, BaseHTTPMiddleware)
    assert second.capture is first.capture


@pytest.mark.parametrize("sync", [False, True], ids=["async endpoint", "sync endpoint"])
def test_an_event_tracked_in_an_endpoint_carries_the_route(events, sync):
    app = FastAPI()
    if sync:

        @app.get("/orders/{order_id}")
        def order_sync(order_id: int) -> dict[str, int]:
            evmiddleware.track("order_viewed")
            return {"order_id": order_id}

    else:

        @app.get("/orders/{order_id}")
        async def order(order_id: int) -> dict[str, int]:
            evmiddleware.track("order_viewed")
            return {"order_id": order_id}

    EventTracking(app)
    client_for(app).get("/orders/7")
    tracked = next(event for event in events if event.name == "order_viewed")
    assert dict(tracked.context) == {"method": "GET", "path": "/orders/7", "route": "/orders/{order_id}"}


def test_bad_options_fail_at_install_time_not_at_the_first_request():
    with pytest.raises(evmiddleware.ConfigurationError, match="sample_rate"):
        EventTracking(new_app(), sample_rate=3)
    with pytest.raises(evmiddleware.ConfigurationError, match="no_such_option"):
        EventTracking(new_app(), no_such_option=True)


def test_route_template_comes_from_the_matched_route_with_its_router_prefix(events):
    app = new_app()
    router = APIRouter(prefix="/api")

    @router.get("/orders/{order_id}")
    def order(order_id: int) -> dict[str, int]:
        return {"order_id": order_id}

    app.include_router(router)
    EventTracking(app)
    client = client_for(app)
    client.get("/api/orders/7")
    client.get("/items/8")
    assert [event.properties["route"] for event in events] == ["/api/orders/{order_id}", "/items/{item_id}"]


def test_user_id_resolver_gets_a_starlette_request(events):
    app = new_app()
    seen: list[Any] = []

    def user_of(request: Request) -> str | None:
        seen.append(request)
        return request.headers.get("x-user")

    EventTracking(app, user_id_resolver=user_of)
    client_for(app).get("/items/1", headers={"x-user": "u-9"})
    assert isinstance(seen[0], Request)
    assert [event.user_id for event in events] == ["u-9"]


def make_tracker_app() -> FastAPI:
    app = new_app()

    @app.get("/async")
    async def in_async(tracker: Tracker = Depends()) -> dict[str, Any]:
        tracker.track("async_endpoint", {"n": 1})
        return {"anonymous_id": tracker.anonymous_id}

    @app.get("/sync")
    def in_sync(tracker: Tracker = Depends()) -> dict[str, Any]:
        tracker.track("sync_endpoint")
        return {"anonymous_id": tracker.anonymous_id, "thread": threading.current_thread().name}

    @app.get("/no-hop")
    async def no_hop(tracker: Tracker = Depends(get_tracker)) -> dict[str, Any]:
        tracker.track("no_hop")
        return {"anonymous_id": tracker.anonymous_id}

    @app.post("/token")
    async def token(tracker: Tracker = Depends()) -> None:
        tracker.user_id = "u-token"  # known only inside the endpoint, no identify event

    @app.post("/sync-login")
    def sync_login() -> None:
        evmiddleware.identify("u-sync")  # in Starlette's thread pool: the request's context object

    @app.get("/executor")
    async def executor(tracker: Tracker = Depends(get_tracker)) -> None:
        with ThreadPoolExecutor(1) as pool:  # a bare executor does not copy the context
            pool.submit(tracker.track, "from_executor").result()

    EventTracking(app, exclude_paths=["/excluded"])

    @app.get("/excluded")
    async def excluded(tracker: Tracker = Depends(get_tracker)) -> dict[str, Any]:
        return {"event_id": tracker.track("untracked_request"), "anonymous_id": tracker.anonymous_id}

    return app


@pytest.mark.parametrize(
    ("path", "name"), [("/async", "async_endpoint"), ("/sync", "sync_endpoint"), ("/no-hop", "no_hop")]
)
def test_tracker_dependency_tracks_for_the_requests_visitor(path, name, events):
    client = client_for(make_tracker_app())
    body = client.get(path).json()
    anonymous_id = client.cookies["ev_anon_id"]
    assert body["anonymous_id"] == anonymous_id
    assert [(event.name, event.anonymous_id) for event in events] == [
        (name, anonymous_id),
        ("http_request", anonymous_id),
    ]
    assert events[0].context["method"] == "GET"


def test_setting_the_trackers_user_id_tags_the_request_without_an_identify_event(events):
    client_for(make_tracker_app()).post("/token")
    assert [(event.name, event.user_id) for event in events] == [("http_request", "u-token")]


def test_identify_in_a_sync_endpoint_reaches_the_requests_own_event(events):
    client_for(make_tracker_app()).post("/sync-login")
    assert [(event.name, event.user_id) for event in events] == [
        ("identify", "u-sync"),
        ("http_request", "u-sync"),
    ]


def test_the_tracker_works_where_the_request_context_does_not_reach(events):
    client = client_for(make_tracker_app())
    client.get("/executor")
    assert [event.name for event in events] == ["from_executor", "http_request"]
    assert events[0].anonymous_id == events[1].anonymous_id is not None


def test_the_tracker_of_an_untracked_request_has_no_visitor(events):
    body = client_for(make_tracker_app()).get("/excluded").json()
    assert body == {"event_id": None, "anonymous_id": None}
    assert events == []


def test_background_tasks_run_with_the_requests_ids(events):
    app = new_app()

    async def notify_async() -> None:
        evmiddleware.track("async_task")

    def notify_sync() -> None:
        evmiddleware.track("sync_task")

    @app.post("/order")
    async def order(background: BackgroundTasks) -> None:
        background.add_task(notify_async)
        background.add_task(notify_sync)

    EventTracking(app, user_id_resolver=lambda request: "u-bg")
    client_for(app).post("/order")
    assert [event.name for event in events] == ["http_request", "async_task", "sync_task"]
    assert len({(event.anonymous_id, event.user_id) for event in events}) == 1
    assert events[0].user_id == "u-bg"


def slow_pipeline(sink: MemorySink) -> None:
    """Nothing leaves before the stop: what the sink holds after it was flushed by the shutdown."""
    evmiddleware.configure(providers=[sink], flush_interval=3600)


def test_lifespan_shutdown_flushes_with_a_lifespan_context(sink):
    slow_pipeline(sink)
    stopped = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        evmiddleware.track("app_stopping", user_id="ops")  # the app's own shutdown code runs first
        stopped.append(True)

    app = new_app(lifespan=lifespan)
    EventTracking(app)
    with client_for(app) as client:
        for i in range(5):
            client.get(f"/items/{i}")
        assert sink.events == []
    assert stopped == [True]
    # Every event reached the sink before the server stopped; the order across events is not part of
    # the contract (requests' events are built on the dispatcher thread, after the app's own track()).
    assert sorted(event.name for event in sink.events) == ["app_stopping"] + ["http_request"] * 5


def test_lifespan_shutdown_flushes_with_startup_and_shutdown_events(sink):
    slow_pipeline(sink)
    app = new_app()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # on_event is deprecated, still supported

        @app.on_event("shutdown")
        async def shutdown() -> None:
            evmiddleware.track("app_stopping", user_id="ops")

    EventTracking(app)
    with client_for(app) as client:
        for i in range(5):
            client.get(f"/items/{i}")
        assert sink.events == []
    # Every event reached the sink before the server stopped; the order across events is not part of
    # the contract (requests' events are built on the dispatcher thread, after the app's own track()).
    assert sorted(event.name for event in sink.events) == ["app_stopping"] + ["http_request"] * 5


@pytest.mark.parametrize(
    ("handled_class", "status", "error_type"),
    [(Exception, 500, "ValueError"), (ValueError, 422, None)],
    ids=["unhandled: the Exception handler", "a class handler: the app's own answer"],
)
def test_an_exception_reaches_the_apps_handler_and_the_event_says_whose_answer_it_was(
    events, handled_class, status, error_type
):
    # README: a handler for Exception runs for unhandled exceptions (error_type kept); a handler for
    # the exception's class is the app's own answer, without error_type.
    app = new_app()
    handled: list[BaseException] = []

    async def on_error(request: Request, exc: Exception) -> Any:
        from fastapi.responses import PlainTextResponse

        handled.append(exc)
        return PlainTextResponse("sorry", status_code=status)

    app.add_exception_handler(handled_class, on_error)

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("bad")

    EventTracking(app)
    response = client_for(app, raise_server_exceptions=False).get("/boom")
    assert (response.status_code, response.text) == (status, "sorry")
    assert [type(exc) for exc in handled] == [ValueError]
    [event] = request_events(events)
    assert (event.properties["status_code"], event.properties.get("error_type")) == (status, error_type)


def test_importing_the_integration_starts_nothing():
    code = (
        "import signal, evmiddleware_fastapi\n"
        "from evmiddleware import runtime\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL\n"
        "assert runtime.peek() is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.parametrize("hook", ["user_id_resolver", "consent", "route_resolver"])
def test_an_async_hook_fails_when_tracking_is_installed(hook):
    # EventTracking wraps the hooks to hand them a Request: it checks them before, or they would look
    # sync and a coroutine would stand for the answer on every request.
    async def answer(request: Request) -> str | None:
        return None

    with pytest.raises(evmiddleware.ConfigurationError, match=f"{hook}: .* is async"):
        EventTracking(new_app(), **{hook: answer})


def test_routes_below_mounts_are_recorded_with_the_mounts_templates(events, tmp_path):
    from starlette.staticfiles import StaticFiles

    (tmp_path / "a.txt").write_text("a")
    users = FastAPI()

    @users.get("/items/{iid}")
    async def user_item(iid: int) -> dict[str, int]:
        return {"iid": iid}

    app = new_app()
    app.mount("/static", StaticFiles(directory=tmp_path))
    app.mount("/users/{uid}", users)
    EventTracking(app)
    client = client_for(app)
    for path in ("/static/a.txt", "/users/42/items/7", "/users/43/items/8", "/users/42/nothing"):
        client.get(path)
    routes = [event.properties["route"] for event in events]
    # Starlette >= 1 records the Mount itself as the route when nothing inside it routes; older
    # Starlette records nothing there (the raw path). Never the mount text twice, never raw ids.
    assert routes[0] in ("/static", "/static/a.txt")
    assert routes[1:3] == ["/users/{uid}/items/{iid}"] * 2
    assert routes[3] in ("/users/{uid}", "/users/42/nothing")


def test_a_send_raising_oserror_mid_stream_is_a_disconnect(events):
    # A spec-2.4 server (uvicorn >= 0.30) raises OSError from send when the client is gone; Starlette
    # turns it into ClientDisconnect (>= 0.28) or an exception group (older): either way no 500.
    import asyncio

    from starlette.responses import StreamingResponse

    app = new_app()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 10
            await asyncio.sleep(0)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(chunks())

    EventTracking(app)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(5)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if len(sent) >= 2:
            raise OSError("client gone")
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": "/stream", "raw_path": b"/stream", "root_path": "",
        "query_string": b"", "headers": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    with pytest.raises(Exception):  # what Starlette makes of it, unchanged
        asyncio.run(app(scope, receive, send))
    (event,) = [e for e in events if e.properties.get("path") == "/stream"]
    assert (event.properties["status_code"], event.properties.get("disconnected")) == (200, True)
    assert "error_type" not in event.properties
