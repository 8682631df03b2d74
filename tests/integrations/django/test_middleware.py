"""``evmiddleware_django.EventMiddleware``: sync and async without a thread hop, the user from
``request.user`` / ``auser()``, routes, exceptions, streaming, settings, and the sign-in hook."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid
from typing import Any

import pytest

import evmiddleware
from evmiddleware import runtime

from .._contract import COOKIE, request_events

pytest.importorskip("django")
from asgiref.sync import async_to_sync
from django.apps import apps
from django.core.handlers.wsgi import WSGIHandler
from django.test import AsyncClient, Client, override_settings
from werkzeug.test import Client as WerkzeugClient

from evmiddleware.wsgi import EventMiddleware as WSGIEventMiddleware
from evmiddleware_django import django_route_template
from evmiddleware_django.asgi import LifespanFlush, get_asgi_application

from ._clients import _body
from .site import SITE, stream

OURS = "evmiddleware_django.EventMiddleware"


def site(*middleware: str, **settings: Any) -> Any:
    """Settings for the test site, with ``middleware`` in front of ours."""
    return override_settings(ROOT_URLCONF=SITE, MIDDLEWARE=[*middleware, OURS], **settings)


def aget(path: str, **kwargs: Any) -> Any:
    return async_to_sync(AsyncClient(raise_request_exception=False).get)(path, **kwargs)


def sync_get(path: str, **kwargs: Any) -> Any:
    return Client(raise_request_exception=False).get(path, **kwargs)


@pytest.mark.parametrize("get", [sync_get, aget], ids=["sync", "async"])
def test_no_middleware_of_ours_is_adapted_between_sync_and_async(get, caplog, events):
    caplog.set_level(logging.DEBUG, logger="django.request")
    with site(f"{SITE}.SyncOnly", DEBUG=True):
        get("/me")
    adapted = [
        record.getMessage() for record in caplog.records if "adapted for middleware" in record.getMessage()
    ]
    assert not [message for message in adapted if OURS in message]
    if get is aget:  # the control: Django does report a sync-only middleware under ASGI
        assert [message for message in adapted if "SyncOnly" in message]
    assert [event.name for event in events] == ["profile_viewed", "http_request"]


@pytest.mark.parametrize("get", [sync_get, aget], ids=["sync", "async"])
def test_an_event_tracked_in_a_view_carries_the_route(get, events):
    with site():
        get("/me")
    tracked = next(event for event in events if event.name == "profile_viewed")
    assert dict(tracked.context) == {"method": "GET", "path": "/me", "route": "/me"}


def test_the_async_path_reads_the_user_with_auser_never_request_user(events):
    with site(f"{SITE}.UserThroughAuser"):
        response = aget("/me", headers={"x-user": "17"})
    assert response.status_code == 200
    assert [(event.name, event.user_id) for event in events] == [
        ("profile_viewed", "17"),
        ("http_request", "17"),
    ]


@pytest.mark.parametrize("get", [sync_get, aget], ids=["sync", "async"])
def test_request_user_is_read_where_there_is_no_auser(get, events):
    with site(f"{SITE}.UserOnly"):  # Django 4.2's AuthenticationMiddleware: on the async path, off the loop
        get("/me", headers={"x-user": "18"})
    assert [event.user_id for event in events] == ["18", "18"]


@pytest.mark.parametrize("get", [sync_get, aget], ids=["sync", "async"])
def test_an_anonymous_user_leaves_the_user_id_empty(get, events):
    with site(f"{SITE}.UserOnly"):
        get("/me")
    assert [event.user_id for event in events] == [None, None]


def test_track_user_false_ignores_request_user(events):
    with site(f"{SITE}.UserOnly", EVMIDDLEWARE={"TRACK_USER": False}):
        sync_get("/me", headers={"x-user": "19"})
    assert [event.user_id for event in events] == [None, None]


def test_a_user_id_resolver_setting_is_imported_and_used(events):
    with site(
        EVMIDDLEWARE={"USER_ID_RESOLVER": "tests.integrations.django.test_middleware.user_from_header"}
    ):
        sync_get("/me", headers={"x-account": "acct-1"})
        aget("/me", headers={"x-account": "acct-2"})
    assert [event.user_id for event in request_events(events)] == ["acct-1", "acct-2"]


def user_from_header(request: Any) -> str | None:
    return request.headers.get("x-account")


async def user_from_header_async(request: Any) -> str | None:
    return request.headers.get("x-account")


CALLS: list[str] = []


def consent_off_the_loop(request: Any) -> bool:
    from django.utils.asyncio import async_unsafe

    return async_unsafe(lambda: CALLS.append("consent") or True)()  # what a session read does


def user_off_the_loop(request: Any) -> str | None:
    from django.utils.asyncio import async_unsafe

    CALLS.append("user")
    return async_unsafe(lambda: request.headers.get("x-account"))()  # what request.user does


def test_plain_hooks_run_off_the_event_loop_on_the_async_path_and_the_resolver_once(events):
    # Django refuses the database on the event loop (SynchronousOnlyOperation): a consent hook or user
    # id resolver reading the session or the user must run in its sync thread, as on the sync path.
    CALLS.clear()
    hooks = {
        "CONSENT": "tests.integrations.django.test_middleware.consent_off_the_loop",
        "USER_ID_RESOLVER": "tests.integrations.django.test_middleware.user_off_the_loop",
    }
    with site(EVMIDDLEWARE=hooks):
        aget("/me", headers={"x-account": "acct-5"})
        sync_get("/me", headers={"x-account": "acct-6"})
    assert [event.user_id for event in request_events(events)] == ["acct-5", "acct-6"]
    assert CALLS == ["consent", "user", "consent", "user"]
    assert evmiddleware.capture.errors() == {}


def test_an_async_user_id_resolver_is_awaited_on_the_async_path_and_refused_on_the_sync_one(events):
    from evmiddleware_django import EventMiddleware

    resolver = "tests.integrations.django.test_middleware.user_from_header_async"
    with site(EVMIDDLEWARE={"USER_ID_RESOLVER": resolver}):
        aget("/me", headers={"x-account": "acct-3"})
        with pytest.raises(evmiddleware.ConfigurationError, match=r"USER_ID_RESOLVER: .* is async"):
            EventMiddleware(lambda request: None)  # a sync get_response: the sync path
    assert [event.user_id for event in request_events(events)] == ["acct-3"]


def visitor_get(path: str, **kwargs: Any) -> Any:
    client = Client(raise_request_exception=False)
    client.cookies[COOKIE] = "visitor-1"
    return client.get(path, **kwargs)


def visitor_aget(path: str, **kwargs: Any) -> Any:
    client = AsyncClient(raise_request_exception=False)
    client.cookies[COOKIE] = "visitor-1"
    return async_to_sync(client.get)(path, **kwargs)


LONG_ID = "u" * 256  # identify() refuses it: no event could carry it


async def _lookup(request: Any) -> str:
    return "42"


def long_id(request: Any) -> str:
    return LONG_ID


def plain_returning_a_coroutine(request: Any) -> Any:
    return _lookup(request)


async def async_long_id(request: Any) -> str:
    return LONG_ID


async def async_returning_a_coroutine(request: Any) -> Any:
    return _lookup(request)


def id_with_blanks(request: Any) -> str:
    return " u-7 "


async def async_uuid(request: Any) -> uuid.UUID:
    return uuid.UUID(int=7)


@pytest.mark.parametrize(
    ("get", "resolver", "user_id"),
    [
        (visitor_get, long_id, None),
        (visitor_aget, long_id, None),
        (visitor_get, plain_returning_a_coroutine, None),
        (visitor_aget, plain_returning_a_coroutine, None),  # only an async def is awaited
        (visitor_aget, async_long_id, None),  # awaited, then checked as any answer
        (visitor_aget, async_returning_a_coroutine, None),
        (visitor_get, id_with_blanks, "u-7"),
        (visitor_aget, id_with_blanks, "u-7"),
        (visitor_aget, async_uuid, "00000000-0000-0000-0000-000000000007"),
    ],
    ids=lambda value: getattr(value, "__name__", None) or str(value),
)
def test_a_user_id_resolver_answer_is_checked_as_the_middlewares_check_it(events, get, resolver, user_id):
    # Unchecked, an over-long id had every event of the request refused (invalid_id), and a plain
    # function returning a coroutine had the coroutine's repr sent as the user id.
    with site(EVMIDDLEWARE={"USER_ID_RESOLVER": resolver}):
        assert get("/me").status_code == 200
    assert [(event.name, event.anonymous_id, event.user_id) for event in events] == [
        ("profile_viewed", "visitor-1", user_id),
        ("http_request", "visitor-1", user_id),
    ]
    assert evmiddleware.stats()["dropped"] == {}
    assert evmiddleware.capture.errors() == ({} if user_id else {"user_id": 1})
    evmiddleware.capture.reset_errors()


@pytest.mark.parametrize(
    ("get", "auth"), [(visitor_get, "UserOnly"), (visitor_aget, "UserThroughAuser")], ids=["sync", "async"]
)
def test_a_user_primary_key_no_event_could_carry_leaves_the_request_anonymous(events, get, auth):
    with site(f"{SITE}.{auth}"):
        assert get("/me", headers={"x-user": LONG_ID}).status_code == 200
    assert [(event.anonymous_id, event.user_id) for event in events] == [("visitor-1", None)] * 2
    assert evmiddleware.stats()["dropped"] == {}
    assert evmiddleware.capture.errors() == {"user_id": 1}
    evmiddleware.capture.reset_errors()


@pytest.mark.parametrize(
    ("route", "template"),
    [
        ("items/<int:item_id>", "/items/{item_id}"),
        ("api/orders/<slug:order>/", "/api/orders/{order}/"),
        ("<uuid:pk>/edit", "/{pk}/edit"),
        ("^legacy/(?P<code>[0-9]{4})/$", "/legacy/{code}/"),
        ("^a/(?P<x>(ab|cd))/b$", "/a/{x}/b"),
        ("", "/"),
    ],
)
def test_django_routes_become_templates_with_parameter_names(route, template):
    assert django_route_template(route) == template


@pytest.mark.parametrize("get", [sync_get, aget], ids=["sync", "async"])
def test_included_and_regex_routes_are_recorded_as_templates(get, events):
    with site():
        get("/api/orders/blue-shoes/")
        get("/legacy/2019/")
    assert [event.properties["route"] for event in events] == ["/api/orders/{order}/", "/legacy/{code}/"]


@pytest.mark.parametrize("get", [sync_get, aget], ids=["sync", "async"])
def test_path_and_re_path_mixed_through_include_become_one_template(get, events):
    with site():
        assert get("/shop/acme/items/7/").status_code == 200
        assert get("/blog/news/posts/12/").status_code == 200
    # Were "/shop/{shop}/items/<int:iid>/" and "/blog/<slug:blog>/posts/{pk}/".
    assert [e.properties["route"] for e in events] == [
        "/shop/{shop}/items/{iid}/",
        "/blog/{blog}/posts/{pk}/",
    ]


CACHE_MIDDLEWARE = (
    "django.middleware.cache.UpdateCacheMiddleware",
    "django.middleware.cache.FetchFromCacheMiddleware",
)
LOCAL_CACHE = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "evm-test"}
}


@pytest.mark.parametrize("client_class", [Client, AsyncClient], ids=["sync", "async"])
def test_a_response_that_sets_the_visitors_cookie_is_never_cached_for_another_visitor(client_class, events):
    # Django's per-site cache kept the first visitor's Set-Cookie and replayed it to every visitor.
    def get(**cookies: str) -> Any:
        client = client_class()
        for name, value in cookies.items():
            client.cookies[name] = value
        return (
            async_to_sync(client.get)("/legacy/2019/")
            if client_class is AsyncClient
            else client.get("/legacy/2019/")
        )

    update, fetch = CACHE_MIDDLEWARE
    with override_settings(
        ROOT_URLCONF=SITE,
        MIDDLEWARE=[update, OURS, fetch],
        CACHES=LOCAL_CACHE,
        EVMIDDLEWARE={"TRACK_USER": False},
    ):
        from django.core.cache import cache

        cache.clear()
        first, second = get(), get(consent="yes")
        returning = get(**{COOKIE: "known-visitor"})
    ids = [response.cookies[COOKIE].value for response in (first, second)]
    assert ids[0] != ids[1] and COOKIE not in returning.cookies
    assert "private" in first["Cache-Control"] and "Cookie" in first["Vary"]
    assert [e.anonymous_id for e in events] == [*ids, "known-visitor"]


@pytest.mark.parametrize("get", [sync_get, aget], ids=["sync", "async"])
def test_a_view_exception_is_recorded_with_its_type_and_the_status_djangos_response_has(get, events):
    with site():
        assert get("/fail").status_code == 500
        assert get("/missing").status_code == 404
    fail, missing = events
    assert (fail.properties["status_code"], fail.properties["error_type"]) == (500, "ValueError")
    assert missing.properties["status_code"] == 404 and "error_type" not in missing.properties


def test_an_async_streamed_response_is_recorded_after_its_last_chunk(events):
    async def go() -> list[str]:
        response = await AsyncClient().get("/astream")
        seen = []
        async for _ in response.streaming_content:
            seen.append(",".join(event.name for event in events))
        return seen

    with site():
        seen = async_to_sync(go)()
    assert seen == ["chunk_sent", "chunk_sent,chunk_sent", "chunk_sent,chunk_sent,chunk_sent"]
    assert [event.name for event in events][-1] == "http_request"
    assert {event.anonymous_id for event in events} == {events[-1].anonymous_id}  # context in each chunk


def test_a_stream_closed_early_is_recorded_as_disconnected(events):
    response = Client().get("/stream")  # the example app's sync stream
    next(iter(response.streaming_content))
    response.close()  # what the server does when the client has gone
    [event] = request_events(events)
    assert event.properties["disconnected"] is True


#: The sync handler with a sync stream, the async handler (as under ASGI) with an async one.
STREAMS = pytest.mark.parametrize(
    ("get", "path"), [(sync_get, "/stream"), (aget, "/astream")], ids=["sync", "async"]
)


@STREAMS
def test_a_streamed_response_read_to_the_end_is_recorded_once(get, path, events):
    with site():
        response = get(path)
        assert async_to_sync(_body)(response) == "chunk\n" * 3  # then closed, as a server does
    [event] = request_events(events)
    assert event.properties["status_code"] == 200
    assert "disconnected" not in event.properties


@STREAMS
def test_a_streamed_response_closed_unread_is_recorded_once(get, path, events):
    with site():
        response = get(path)
        response.close()  # the server stopped before the first chunk
    [event] = request_events(events)
    assert event.properties["status_code"] == 200
    assert "disconnected" not in event.properties  # as the WSGI middleware: nothing was cut short


@STREAMS
def test_a_streamed_response_closed_after_a_chunk_is_recorded_once_as_disconnected(get, path, events):
    async def first_chunk(response: Any) -> None:
        if response.is_async:
            await anext(aiter(response.streaming_content))
        else:
            next(iter(response.streaming_content))

    with site():
        response = get(path)
        async_to_sync(first_chunk)(response)
        response.close()  # what the server does when the client has gone
    [event] = request_events(events)
    assert (event.properties["status_code"], event.properties["disconnected"]) == (200, True)


def test_a_streamed_response_closed_unread_without_a_handler_is_recorded(events):
    from django.test import RequestFactory

    from evmiddleware_django import EventMiddleware

    response = EventMiddleware(stream)(RequestFactory().get("/stream"))
    response.close()
    [event] = events
    assert event.properties["status_code"] == 200


def test_a_head_request_for_a_stream_is_recorded_once_not_as_a_disconnect(events):
    with site():
        response = Client().head("/stream")
        assert async_to_sync(_body)(response) == ""  # the test client drops a HEAD body, unread
    [event] = request_events(events)
    assert event.properties["status_code"] == 200
    assert "disconnected" not in event.properties


@pytest.mark.parametrize("get", [sync_get, aget], ids=["sync", "async"])
def test_a_304_sent_in_place_of_a_streamed_response_is_recorded_once(get, events):
    # ConditionalGetMiddleware, listed before ours, answers 304 and drops the stream unread and
    # unclosed. The event keeps the status our middleware saw.
    with site("django.middleware.http.ConditionalGetMiddleware"):
        response = get("/dated", headers={"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"})
    assert response.status_code == 304
    assert COOKIE in response.cookies  # ours, carried over to the response sent
    [event] = request_events(events)
    assert event.properties["status_code"] == 200
    assert "disconnected" not in event.properties


def test_a_request_cancelled_on_the_async_path_is_recorded_as_a_disconnect(events):
    from django.test import AsyncRequestFactory

    from evmiddleware_django import EventMiddleware

    async def client_gone(request: Any) -> Any:
        raise asyncio.CancelledError  # what Django's ASGI handler does when the client disconnects

    middleware = EventMiddleware(client_gone)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(middleware(AsyncRequestFactory().get("/items/1")))
    [event] = events
    assert (event.properties["status_code"], event.properties["disconnected"]) == (499, True)
    assert "error_type" not in event.properties


def test_settings_override_the_environment(monkeypatch, sink, events):
    monkeypatch.setenv("EVMIDDLEWARE_EXCLUDE_PATHS", "/me")
    evmiddleware.configure(providers=[sink])
    with site(EVMIDDLEWARE={"EXCLUDE_PATHS": ["/legacy"]}):
        sync_get("/me")
        sync_get("/legacy/2020/")
    assert [event.properties["path"] for event in request_events(events)] == ["/me"]
    with site(EVMIDDLEWARE={}):
        sync_get("/me")
    assert len(request_events(events)) == 1  # silent settings: the environment's exclusion applies


def test_pipeline_settings_in_the_setting_configure_the_process():
    with site(EVMIDDLEWARE={"FLUSH_INTERVAL": 0.7, "LOCAL_SINK": "memory"}):
        sync_get("/me")
    assert runtime.current().settings.flush_interval == 0.7


# What manage.py, a Celery worker or a script does: settings, django.setup(), no request served. The
# job's event goes where settings.EVMIDDLEWARE says (it went to the log sink: the settings were applied
# only when the first middleware was built); the middleware built afterwards does not configure again.
STARTED_WITHOUT_A_REQUEST = """
import sys, threading
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(
    ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__, SECRET_KEY="test",
    INSTALLED_APPS=["evmiddleware_django"], MIDDLEWARE=["evmiddleware_django.EventMiddleware"],
    EVMIDDLEWARE={"LOCAL_SINK": "jsonl:" + sys.argv[1], "INSTALL_SIGNAL_HANDLER": False},
)
urlpatterns = [path("", lambda request: HttpResponse("ok"))]
threads = threading.active_count()
django.setup()

import evmiddleware
from evmiddleware import runtime

configured = runtime.peek()
assert configured is not None, "django.setup() did not apply settings.EVMIDDLEWARE"
assert threading.active_count() == threads, "a thread started in ready(), before a fork"
evmiddleware.track("nightly_export", user_id="42")

from django.test import Client

assert Client().get("/").status_code == 200
assert runtime.peek() is configured, "the middleware configured the pipeline a second time"
assert evmiddleware.flush(10)
"""


def test_pipeline_settings_apply_at_django_setup_for_processes_that_serve_no_request(tmp_path):
    out = tmp_path / "events.jsonl"
    run = subprocess.run(
        [sys.executable, "-c", STARTED_WITHOUT_A_REQUEST, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(event["name"], event["user_id"]) for event in events] == [
        ("nightly_export", "42"),
        ("http_request", None),
    ]


def test_the_apps_ready_applies_the_pipeline_settings_and_the_middleware_keeps_that_pipeline(sink, events):
    with site(EVMIDDLEWARE={"FLUSH_INTERVAL": 0.7, "LOCAL_SINK": "memory"}):
        apps.get_app_config("evmiddleware_django").ready()  # as django.setup() does, these settings in place
        configured = runtime.peek()
        assert configured is not None and configured.settings.flush_interval == 0.7
        sync_get("/me")
        assert runtime.peek() is configured
        # The process's own configure() after start-up (a test's MemorySink) stays in place too.
        evmiddleware.configure(providers=[sink])
        sync_get("/me")
    assert evmiddleware.flush(2)
    assert [event.name for event in sink.events] == ["profile_viewed", "http_request"]


# A ConfigurationError at django.setup(): raised when the settings ask for a pipeline that cannot be
# (events would go elsewhere than they say, silently, in processes that run no system checks);
# otherwise left to the system checks, and raised when the middleware is created.
SET_UP_AND_CHECKED = """
import json, sys
import django
from django.conf import settings

settings.configure(INSTALLED_APPS=["evmiddleware_django"], EVMIDDLEWARE=json.loads(sys.argv[1]))
try:
    django.setup()
except Exception as exc:
    print("setup:", type(exc).__name__, exc)
else:
    from django.core import checks

    print("checks:", [message.id for message in checks.run_checks()])
"""


@pytest.mark.parametrize(
    ("setting", "outcome"),
    [
        ({"FLUSH_INTERVAL": -1}, "setup: ConfigurationError flush_interval"),
        ({"FLAMEUP_API_KEY": "fu_key", "EXCLUDE_PATHS": "/health"}, "setup: ConfigurationError flameup"),
        ({"SAMPLE_RATE": 3}, "checks: ['evmiddleware.E005']"),  # the middleware's own options only
        ({"FLOKIT_APIKEY": "x"}, "checks: ['evmiddleware.E002']"),
        # Beside a valid pipeline setting, the middleware's own options and unknown keys are still the
        # checks' to report: setup applies the pipeline keys alone (it raised for these).
        ({"LOCAL_SINK": "memory", "SAMPLE_RATE": 3}, "checks: ['evmiddleware.E005']"),
        ({"LOCAL_SINK": "memory", "EXCLUDE_PATH": "/x"}, "checks: ['evmiddleware.E002']"),
    ],
)
def test_a_bad_pipeline_setting_fails_at_django_setup_and_the_rest_is_left_to_the_checks(setting, outcome):
    run = subprocess.run(
        [sys.executable, "-c", SET_UP_AND_CHECKED, json.dumps(setting)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(outcome), run.stdout


def test_a_bad_setting_fails_when_the_middleware_is_created():
    with site(EVMIDDLEWARE={"SAMPLE_RATE": 3}), pytest.raises(evmiddleware.ConfigurationError):
        Client().get("/me")
    with (
        site(EVMIDDLEWARE={"NO_SUCH_KEY": 1}),
        pytest.raises(evmiddleware.ConfigurationError, match="NO_SUCH"),
    ):
        Client().get("/me")


@pytest.mark.parametrize("get", [sync_get, aget], ids=["sync", "async"])
def test_identify_on_login_ties_the_visitor_to_the_user_when_asked(get, events):
    with site(EVMIDDLEWARE={"IDENTIFY_ON_LOGIN": True}):
        get("/signin/31")
    assert [(event.name, event.user_id) for event in events] == [("identify", "31"), ("http_request", "31")]


def test_identify_on_login_is_off_by_default(events):
    with site():
        sync_get("/signin/32")
    assert [(event.name, event.user_id) for event in events] == [("http_request", None)]


def test_django_on_the_generic_wsgi_middleware_is_tracked_once_with_djangos_route(events):
    with site():
        app = WSGIEventMiddleware(WSGIHandler())
        response = WerkzeugClient(app).get("/api/orders/red/")
        response.close()
    assert len(response.headers.getlist("Set-Cookie")) == 1
    [event] = events
    assert event.properties["route"] == "/api/orders/{order}/"


def test_lifespan_is_spoken_for_django_and_flushes_at_shutdown(sink):
    evmiddleware.configure(providers=[sink], flush_interval=3600)
    application = get_asgi_application()
    assert isinstance(application, LifespanFlush)
    evmiddleware.track("queued", user_id="u")
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append({**message, "delivered": len(sink.events)})

    asyncio.run(application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert sent == [
        {"type": "lifespan.startup.complete", "delivered": 0},
        {"type": "lifespan.shutdown.complete", "delivered": 1},
    ]


def test_importing_the_integration_starts_nothing():
    code = (
        "import signal, evmiddleware_django, evmiddleware_django.asgi\n"
        "from evmiddleware import runtime\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL\n"
        "assert runtime.peek() is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
