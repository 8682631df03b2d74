"""The apps and middlewares that ``benchmarks.middleware`` measures, built inside its child processes.

Four bare apps answer ``GET /items/42`` with a five-byte text body: a raw ASGI callable, a Starlette
app (route ``/items/{item_id:int}``), a Flask app (``/items/<int:item_id>``) and a Django app
(``items/<int:item_id>``, ``settings.configure`` with no middleware, no apps, no database). Each
middleware wraps the app from the outside, as one line in an application would:

- ``floor``: the least a request-event middleware can do (one cookie found by ``str.find``, a uuid4
  and a ``Set-Cookie`` for a new visitor, the status read from the response, the call timed, one dict
  appended to a bounded deque);
- ``evmiddleware``: :class:`evmiddleware.asgi.EventMiddleware` / :class:`evmiddleware.wsgi.EventMiddleware`
  with default options, its pipeline configured with one in-memory sink (the shipped ``MemorySink``,
  counting instead of keeping) and its dispatcher thread delivering to it;
- ``opentelemetry``: ``OpenTelemetryMiddleware`` (asgi or wsgi) with an SDK ``TracerProvider`` and a
  ``BatchSpanProcessor`` whose exporter counts spans;
- ``sentry``: ``SentryAsgiMiddleware`` / ``SentryWsgiMiddleware`` after ``sentry_sdk.init`` with
  ``traces_sample_rate=1.0`` and a transport that counts envelopes (default integrations on; the
  auto-enabling framework integrations off, so the middleware is Sentry's only instrumentation);
- ``asgi-correlation-id``: ``CorrelationIdMiddleware`` with its defaults (ASGI only).

Nothing here is imported by the parent process; each child imports only what its configuration needs.
"""

from __future__ import annotations

import io
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

__all__ = [
    "ASGI_APPS",
    "ASGI_CONFIGS",
    "COOKIE_NAME",
    "RETURNING_ID",
    "WSGI_APPS",
    "WSGI_CONFIGS",
    "Built",
    "asgi_scope",
    "build",
    "wsgi_environ",
]

ASGI_APPS = ("raw-asgi", "starlette")
WSGI_APPS = ("flask", "django")
COMMON_CONFIGS = ("bare", "floor", "evmiddleware", "opentelemetry", "sentry")
ASGI_CONFIGS = (*COMMON_CONFIGS, "asgi-correlation-id")
WSGI_CONFIGS = COMMON_CONFIGS

COOKIE_NAME = "ev_anon_id"
RETURNING_ID = "6f1c2a7e-8a5b-4c1e-9d2f-0123456789ab"
PATH = "/items/42"
BODY = b"hello"
_SET_COOKIE_SUFFIX = "; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly"

# What a browser sends on a same-site navigation, less the cookie (added for a returning visitor).
_BROWSER_HEADERS = (
    ("host", "shop.example"),
    (
        "user-agent",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Safari/605.1.15",
    ),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("accept-language", "en-GB,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br"),
    ("referer", "https://shop.example/"),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-site", "same-origin"),
    ("connection", "keep-alive"),
)
_RETURNING_COOKIE = f"_ga=GA1.1.1234567890.1700000000; theme=dark; {COOKIE_NAME}={RETURNING_ID}"


def _headers(returning: bool) -> list[tuple[str, str]]:
    return [*_BROWSER_HEADERS, *([("cookie", _RETURNING_COOKIE)] if returning else [])]


def asgi_scope(returning: bool) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    """An HTTP scope as uvicorn builds it, and its header list (copied per request: apps may mutate)."""
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in _headers(returning)]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 51234),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }
    return scope, headers


def wsgi_environ(returning: bool) -> dict[str, Any]:
    """A WSGI environ as gunicorn builds it (copied per request: apps and middlewares write into it)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": PATH,
        "QUERY_STRING": "",
        "RAW_URI": PATH,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "51234",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in _headers(returning):
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


# -- the bare apps ----------------------------------------------------------------------------
async def raw_asgi_app(
    scope: MutableMapping[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    # Messages built per call, as a real app does (a middleware may change their headers in place).
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Any) -> Any:
        return PlainTextResponse(BODY)

    return Starlette(routes=[Route("/items/{item_id:int}", item)])


def flask_app() -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return BODY, 200, {"Content-Type": "text/plain; charset=utf-8"}

    return app


def django_app() -> Any:
    """A new ``WSGIHandler``; Django itself is configured once per process, on the first call."""
    import django
    from django.conf import settings

    if not settings.configured:
        from django.http import HttpResponse
        from django.urls import path

        def item(request: Any, item_id: int) -> Any:
            return HttpResponse(BODY, content_type="text/plain; charset=utf-8")

        urls = type(sys)("bench_urls")
        urls.urlpatterns = [path("items/<int:item_id>", item)]  # type: ignore[attr-defined]
        sys.modules["bench_urls"] = urls
        settings.configure(
            DEBUG=False,
            SECRET_KEY="benchmark-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF="bench_urls",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            DATABASES={},
            USE_I18N=False,
            LOGGING_CONFIG=None,
        )
        django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


# -- the floor --------------------------------------------------------------------------------
class FloorASGI:
    """The least a request-event middleware does: find one cookie, mint one when absent, read the
    status, time the call, append one dict."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.events: deque[dict[str, Any]] = deque(maxlen=10_000)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        anonymous_id = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                anonymous_id = _cookie(value.decode("latin-1"))
                break
        cookie = None
        if anonymous_id is None:
            anonymous_id = str(uuid.uuid4())
            cookie = (b"set-cookie", f"{COOKIE_NAME}={anonymous_id}{_SET_COOKIE_SUFFIX}".encode("latin-1"))
        status = 0

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if cookie is not None:
                    message = {**message, "headers": [*message.get("headers", ()), cookie]}
            await send(message)

        await self.app(scope, receive, send_status)
        self.events.append(
            {
                "anonymous_id": anonymous_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": (time.perf_counter() - started) * 1000.0,
            }
        )


class FloorWSGI:
    """:class:`FloorASGI` for WSGI; the event is appended when the server closes the response."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.events: deque[dict[str, Any]] = deque(maxlen=10_000)

    def __call__(self, environ: MutableMapping[str, Any], start_response: Any) -> Iterable[bytes]:
        started = time.perf_counter()
        header = environ.get("HTTP_COOKIE")
        anonymous_id = _cookie(header) if header else None
        cookie = None
        if anonymous_id is None:
            anonymous_id = str(uuid.uuid4())
            cookie = ("Set-Cookie", f"{COOKIE_NAME}={anonymous_id}{_SET_COOKIE_SUFFIX}")
        status = [0]

        def start_status(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = int(code[:3])
            if cookie is not None:
                headers = [*headers, cookie]
            return start_response(code, headers, exc_info)

        body = self.app(environ, start_status)
        event = {
            "anonymous_id": anonymous_id,
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
        }
        return _FloorBody(body, self.events, event, status, started)


class _FloorBody:
    __slots__ = ("_body", "_event", "_events", "_started", "_status")

    def __init__(
        self,
        body: Iterable[bytes],
        events: deque[dict[str, Any]],
        event: dict[str, Any],
        status: list[int],
        started: float,
    ) -> None:
        self._body = body
        self._events = events
        self._event = event
        self._status = status
        self._started = started

    def __iter__(self) -> Any:
        return iter(self._body)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        event = self._event
        event["status"] = self._status[0]
        event["duration_ms"] = (time.perf_counter() - self._started) * 1000.0
        self._events.append(event)


def _cookie(header: str) -> str | None:
    at = header.find(COOKIE_NAME + "=")
    if at < 0:
        return None
    end = header.find(";", at)
    return header[at + len(COOKIE_NAME) + 1 : end if end >= 0 else len(header)]


# -- the libraries ------------------------------------------------------------------------------
class Built:
    """One configured app: ``app`` to call, ``recorded()`` counts what its middleware recorded so far
    (events, spans, envelopes; ``None`` for none), ``settle()`` waits until queued records were handed
    over (after the last request, untimed)."""

    def __init__(
        self,
        app: Any,
        recorded: Callable[[], int | None],
        settle: Callable[[], None],
        dropped: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.app = app
        self.recorded = recorded
        self.settle = settle
        #: Records the middleware counted as dropped, by reason (what explains records/req below 1).
        self.dropped = dropped or dict


def _nothing() -> None:
    return None


def _bare_app(kind: str) -> Any:
    if kind == "raw-asgi":
        return raw_asgi_app
    if kind == "starlette":
        return starlette_app()
    if kind == "flask":
        return flask_app()
    if kind == "django":
        return django_app()
    raise ValueError(f"unknown app {kind!r}")


def build(kind: str, config: str) -> Built:
    """A new ``kind`` app wrapped in the ``config`` middleware (``bare``: not wrapped)."""
    asgi = kind in ASGI_APPS
    base = _bare_app(kind)
    inner = base.wsgi_app if kind == "flask" else base

    def wrapped(middleware: Any) -> Any:
        if kind == "flask":
            base.wsgi_app = middleware
            return base
        return middleware

    if config == "bare":
        return Built(base, _nothing, _nothing)
    if config == "floor":
        floor = FloorASGI(inner) if asgi else FloorWSGI(inner)
        return Built(wrapped(floor), lambda: None, _nothing)
    if config == "evmiddleware":
        # A queue that never fills: the in-process loops make requests faster than any server could,
        # and events dropped as queue_full would skip the delivery work charged to each request.
        return _evmiddleware(inner, asgi, wrapped, max_queue=1_000_000)
    if config == "opentelemetry":
        return _opentelemetry(inner, asgi, wrapped)
    if config == "sentry":
        return _sentry(inner, asgi, wrapped)
    if config == "asgi-correlation-id" and asgi:
        from asgi_correlation_id import CorrelationIdMiddleware

        return Built(CorrelationIdMiddleware(inner), _nothing, _nothing)
    raise ValueError(f"unknown configuration {config!r} for {kind}")


def _evmiddleware(inner: Any, asgi: bool, wrapped: Callable[[Any], Any], **settings: Any) -> Built:
    import evmiddleware
    from evmiddleware.providers.base import OK
    from evmiddleware.providers.sinks import MemorySink

    class CountingSink(MemorySink):
        """The shipped in-memory sink (same encode, limits, batching), counting instead of keeping."""

        count = 0

        async def send(self, batch: Any, client: Any) -> Any:
            self.count += len(batch.items)
            return OK

    sink = CountingSink()
    evmiddleware.configure(providers=[sink], **settings)
    if asgi:
        from evmiddleware.asgi import EventMiddleware as AsgiEvents

        middleware: Any = AsgiEvents(inner)
    else:
        from evmiddleware.wsgi import EventMiddleware as WsgiEvents

        middleware = WsgiEvents(inner)

    def settle() -> None:
        if not evmiddleware.flush(30.0):
            raise RuntimeError(f"evmiddleware did not deliver everything: {evmiddleware.stats()}")

    def dropped() -> dict[str, int]:
        stats = evmiddleware.stats()
        counts: dict[str, int] = dict(stats["dropped"])
        for provider in stats["providers"].values():
            for reason, count in provider["dropped"].items():
                counts[reason] = counts.get(reason, 0) + count
        return counts

    return Built(wrapped(middleware), lambda: sink.count, settle, dropped)


def _opentelemetry(inner: Any, asgi: bool, wrapped: Callable[[Any], Any]) -> Built:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        count = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.count += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if asgi:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as AsgiOtel

        middleware: Any = AsgiOtel(inner, tracer_provider=provider)
    else:
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as WsgiOtel

        middleware = WsgiOtel(inner, tracer_provider=provider)

    def settle() -> None:
        provider.force_flush(30_000)

    return Built(wrapped(middleware), lambda: exporter.count, settle)


def _sentry(inner: Any, asgi: bool, wrapped: Callable[[Any], Any]) -> Built:
    import sentry_sdk
    from sentry_sdk.transport import Transport

    class CountingTransport(Transport):
        count = 0

        def capture_envelope(self, envelope: Any) -> None:
            self.count += 1

    transport = CountingTransport()
    sentry_sdk.init(
        dsn="http://public@127.0.0.1:1/1",
        traces_sample_rate=1.0,
        transport=transport,
        auto_enabling_integrations=False,
    )
    if asgi:
        from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

        middleware: Any = SentryAsgiMiddleware(inner)
    else:
        from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

        middleware = SentryWsgiMiddleware(inner)

    def settle() -> None:
        sentry_sdk.flush(30.0)

    return Built(wrapped(middleware), lambda: transport.count, settle)
