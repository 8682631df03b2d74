"""Framework-neutral request capture: what every adapter (ASGI, WSGI, Flask, FastAPI, Django) shares.

An adapter builds one :class:`Capture` at start-up and makes three calls per request::

    state = capture.start(method, scheme, path, query_string, headers, client, request)
    if state is None:            # not tracked at all: excluded, no consent, tracking disabled
        return app(...)
    ...add state.set_cookie to the response's headers when it is not None, set state.status...
    token = context.enter(state.ctx)          # track()/identify() inside the app see the request
    try: run the app
    finally: context.leave(token)
    capture.finish(state, error=exc_or_None)  # once, when the last byte has left

``start`` and ``finish`` never raise: a failure inside tracking is logged (rate-limited), counted in
:func:`errors`, and the request goes on untracked. Hooks (consent, user id, route) get ``request``,
whatever the adapter passes: the ASGI scope, the WSGI environ, or the framework's request object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, AnyStr
from urllib.parse import unquote_plus

from . import runtime as _rt
from ._fork import new_lock_in_child
from ._log import limited
from .api import record_request_event
from .capture_options import SECRET_WORDS, CaptureOptions, _checked, _is_async, looks_secret
from .context import RequestContext
from .errors import ConfigurationError
from .events import clean_id
from .identity import (
    _ID_BYTES,
    MAX_ID_LENGTH,
    CookieWriter,
    adopt_browser_id,
    cookie_value,
    klaviyo_exchange_id,
    new_anonymous_id,
)

__all__ = [
    "Capture",
    "CaptureOptions",
    "RequestState",
    "SECRET_WORDS",
    "checked_user_id",
    "errors",
    "looks_secret",
    "resolve_user_id",
]

# Bounds on what one request can put into its event (the event's own size limit is a backstop).
_MAX_PATH, _MAX_UA, _MAX_REFERRER, _MAX_PARAM, _MAX_QUERY_PARTS = 2048, 512, 1024, 256, 64
_perf = time.perf_counter
_random = random.random

#: What the request thread saw: method, path (bounded), query string, ``User-Agent``, ``Referer``,
#: then, only with ``capture_headers`` or ``capture_ip``, the headers ``start`` read (lower-case names)
#: and the client address (else ``None``, ``None``). Only what the event may need: everything handed
#: to the dispatcher thread is touched, and freed, by another core.
Seen = tuple[str, str, str, "str | None", "str | None", "Mapping[str, str] | None", "str | None"]
#: What the dispatcher thread builds a request's properties from (``Capture.properties``): ``Seen``'s
#: seven fields, then route template, status, duration in seconds, error type, disconnected.
Finished = tuple[
    str, str, str, "str | None", "str | None", "Mapping[str, str] | None", "str | None",
    "str | None", int, float, "str | None", bool,
]  # fmt: skip


class RequestState(RequestContext):
    """One request being captured; also the request's context (what ``track()`` inside it sees), so a
    request costs one object. Adapters and integrations may set, after the app ran:

    ``status`` (int), ``route`` (a template such as ``/items/{item_id}``), ``user_id``,
    ``error_type`` (the name of an exception the framework turned into its error page),
    ``disconnected`` (the client went away before the response was complete), ``ended``
    (``time.perf_counter()`` when the last byte left, to record the event later with the right duration).

    The request thread keeps the raw facts in ``seen``; the event's properties are built from them on
    the dispatcher thread (see :meth:`Capture.properties`).
    """

    __slots__ = (
        "_facts",
        "_route",
        "disconnected",
        "done",
        "ended",
        "error_type",
        "request",
        "seen",
        "set_cookie",
        "started",
        "status",
    )

    def __init__(
        self,
        anonymous_id: str | None,
        user_id: str | None,
        seen: Seen,
        request: Any,
        set_cookie: str | None,
        started: float,
    ) -> None:
        # RequestContext's fields set here rather than through super().__init__: one Python call less
        # per request, on the path every request takes.
        self.anonymous_id = anonymous_id
        self.user_id = user_id
        self._facts: dict[str, Any] | None = None  # see ``facts``
        self.tracked = True
        self.identified = False
        self.aliases = {}
        self.seen = seen
        #: What the hooks get; dropped by ``finish`` (the scope or environ holds this state under
        #: STATE_KEY: without that, the pair would wait for the garbage collector).
        self.request = request
        #: The ``Set-Cookie`` header value for this response, or ``None`` (the visitor has the cookie).
        self.set_cookie = set_cookie
        self.started = started
        self.status: int | None = None
        self.error_type: str | None = None
        self.disconnected = False
        self.done = False
        #: When the last byte left, if the event is recorded later (see the ASGI middleware's 5xx case).
        self.ended: float | None = None
        self._route: str | None = None

    @property
    def ctx(self) -> RequestState:
        """The request's context: the state itself (kept for adapters written against the old split)."""
        return self

    @property  # RequestContext has a plain attribute; here it is computed
    def facts(self) -> dict[str, Any]:
        """``method``, ``path`` and, once known, ``route``: built when ``track()`` first asks for them
        (most requests never do), and again when the route changed. Inside a handler the adapters have
        not recorded the route yet (they do after the app ran): the route readers find it in the
        request, where the framework's routing left it, and may find a closer one later in the same
        request (a Mount first, then the route inside it)."""
        facts = self._facts
        route = self._route
        if not route and _route_readers:
            route = _read_route(self.request)
        if facts is None or facts.get("route") != route:
            # A new dict, never a mutation: events already queued share the old one with the dispatcher.
            facts = {"method": self.seen[0], "path": self.seen[1]}
            if route:
                facts["route"] = route
            self._facts = facts
        return facts

    @facts.setter
    def facts(self, facts: dict[str, Any]) -> None:
        self._facts = facts

    @property
    def route(self) -> str | None:
        return self._route

    @route.setter
    def route(self, template: str | None) -> None:
        self._route = template
        if template:
            # A new dict at the next ``facts``, never a mutation: events already queued share the old
            # one with the dispatcher.
            self._facts = None


class Capture:
    """The per-app capture engine: options resolved and everything derivable from them cached.

    Holds no per-request state, so one instance serves every thread and task::

        capture = Capture(exclude_paths=("/health",))
        state = capture.start("GET", "https", "/", "", {"cookie": "ev_anon_id=abc"})
    """

    def __init__(self, options: CaptureOptions | None = None, **overrides: Any) -> None:
        options = options or CaptureOptions()
        if overrides:
            known = {field.name for field in dataclasses.fields(CaptureOptions)}
            if unknown := sorted(set(overrides) - known):
                raise ConfigurationError(
                    f"unknown capture option(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}"
                )
            options = dataclasses.replace(options, **overrides)
        settings = _rt.current().settings
        if options.exclude_paths is None:
            options = dataclasses.replace(options, exclude_paths=settings.exclude_paths)
        if options.flush_timeout is None:
            options = dataclasses.replace(options, flush_timeout=settings.shutdown_timeout)
        self.options = options
        #: Bound on the flush at lifespan shutdown (0: no wait, not the default).
        self.flush_timeout: float = (
            settings.shutdown_timeout if options.flush_timeout is None else options.flush_timeout
        )
        self._event_name = options.event_name.strip()
        self._cookie_name = options.cookie_name
        self.cookie_prefix = options.cookie_name + "="  # of a Set-Cookie value: see sets_cookie
        self.cookie_prefix_bytes = self.cookie_prefix.encode("latin-1")
        self._cookies = _checked(
            "cookie", CookieWriter, options.cookie_name, options.cookie_max_age, options.cookie_domain
        )
        self._adopt = options.adopt_cookies
        self._kx = "__kla_id" in options.adopt_cookies
        self._prefixes = tuple(options.exclude_paths or ())
        regexes = options.exclude_regexes
        self._regex = (
            _checked("exclude_regexes", re.compile, "|".join(f"(?:{r})" for r in regexes))
            if regexes
            else None
        )
        self._methods = frozenset(method.upper() for method in options.exclude_methods)
        self._filters = bool(self._methods or self._prefixes) or self._regex is not None
        self._statuses = frozenset(options.exclude_status_codes)
        self._sample = options.sample_rate
        self._dnt = options.respect_dnt
        self._consent = options.consent
        # An async user id resolver is never called here: an integration that awaits it calls it (Django,
        # on its async path); the ASGI and WSGI middlewares refuse one (``_sync_user_id_only``).
        self._user_id = None if _is_async(options.user_id_resolver) else options.user_id_resolver
        self._route = options.route_resolver
        self._ip = options.capture_ip
        self._trust_all = "*" in options.trusted_proxies
        self._proxies = tuple(
            _checked("trusted_proxies", ipaddress.ip_network, proxy, False)
            for proxy in options.trusted_proxies
            if proxy != "*"
        )
        self._trusted_cache: dict[str, bool] = {}
        self._query_keys = {key: "query_" + key for key in options.capture_query_params}
        self._extra_headers = tuple(
            (name.lower(), "header_" + name.lower().replace("-", "_")) for name in options.capture_headers
        )
        self._rare = bool(self._extra_headers or self._ip)
        #: Bound once: a bound method made per request would be one more object for the dispatcher.
        self._properties = self.properties
        # The one header scan looks for these names only.
        wanted = ["cookie", "user-agent", "referer", "sec-gpc", *(name for name, _ in self._extra_headers)]
        if self._dnt:
            wanted.append("dnt")
        if self._proxies or self._trust_all:
            wanted.append("x-forwarded-proto")
        self._asgi_wanted = {name.encode("latin-1"): name for name in wanted}
        # CGI names: Content-Type and Content-Length are the two without the HTTP_ prefix.
        self._environ_keys = tuple(
            (
                ("" if name in ("content-type", "content-length") else "HTTP_")
                + name.upper().replace("-", "_"),
                name,
            )
            for name in wanted
        )

    # -- headers, as each kind of server gives them -------------------------------------------
    def environ_headers(self, environ: Mapping[str, Any]) -> dict[str, str]:
        """The headers ``start`` reads, from a WSGI environ (or Django's ``request.META``)."""
        headers: dict[str, str] = {}
        for env_key, key in self._environ_keys:  # a loop, not a comprehension: one call less (< 3.12)
            value = environ.get(env_key)
            if value is not None:
                headers[key] = value
        return headers

    def start_scope(self, scope: Mapping[str, Any], request: Any = None) -> RequestState | None:
        """:meth:`start` for an ASGI HTTP scope; hooks get ``request`` or the scope.

        Of the scope's headers (lower-case names) ``start`` gets the ones it reads: the first of a
        repeated name, every ``Cookie`` field (HTTP/2 may split cookies over several) and every
        ``X-Forwarded-Proto`` line joined with ", " (each proxy may add its own line; the last is trusted).
        """
        try:
            # One Python loop with one dict lookup per header, here rather than in a helper of its own:
            # this runs on every request, where each Python call costs as much as a few headers.
            wanted = self._asgi_wanted
            headers: dict[str, str] = {}
            for name, value in scope.get("headers", ()):
                key = wanted.get(name)
                if key is not None:
                    if key not in headers:
                        headers[key] = value.decode("latin-1")
                    elif key == "cookie":
                        headers[key] += "; " + value.decode("latin-1")
                    elif key == "x-forwarded-proto":  # joined as WSGI servers do: the last one is ours
                        headers[key] += ", " + value.decode("latin-1")
            client = scope.get("client")
            query_string = scope.get("query_string")
            return self.start(
                scope["method"],
                scope.get("scheme", "http"),
                scope["path"],
                query_string.decode("latin-1") if query_string else "",
                headers,
                client[0] if client else None,
                scope if request is None else request,
            )
        except Exception as exc:
            _failed("start", exc)
            return None

    def start_environ(self, environ: Mapping[str, Any], request: Any = None) -> RequestState | None:
        """:meth:`start` for a WSGI environ (or Django's ``request.META``); hooks get ``request`` or
        the environ."""
        try:
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            if not path.isascii():
                # PEP 3333 hands over the raw bytes as latin-1; servers that already decoded keep theirs.
                with contextlib.suppress(UnicodeEncodeError):
                    path = path.encode("latin-1").decode("utf-8", "replace")
            return self.start(
                environ.get("REQUEST_METHOD", "GET"),
                environ.get("wsgi.url_scheme", "http"),
                path or "/",
                environ.get("QUERY_STRING", ""),
                self.environ_headers(environ),
                environ.get("REMOTE_ADDR"),
                environ if request is None else request,
            )
        except Exception as exc:
            _failed("start", exc)
            return None

    # -- the two calls per request --------------------------------------------------------------
    def start(
        self,
        method: str,
        scheme: str,
        path: str,
        query_string: str,
        headers: Mapping[str, str],
        client: str | None = None,
        request: Any = None,
    ) -> RequestState | None:
        """Begin capturing a request; ``None`` when it is not tracked at all (no context, no cookie).

        ``headers`` maps lower-case names to values (see :meth:`environ_headers`); ``client`` is the peer
        address, used for trusted proxies and ``capture_ip`` only.
        """
        started = _perf()
        try:
            runtime = _rt._runtime or _rt.current()  # the module global first: no call per request
            if runtime.disabled or (self._filters and self._excluded(method, path)):
                return None
            if self._consent is not None:
                if not _hook("consent", self._consent, request, False):
                    return None
            elif headers.get("sec-gpc") == "1" or (self._dnt and headers.get("dnt") == "1"):
                return None

            cookies = headers.get("cookie")
            anonymous_id = cookie_value(cookies, self._cookie_name) if cookies else None
            set_cookie = None
            # is_valid_id(anonymous_id), inlined: one Python call less on every returning visitor.
            if anonymous_id is None or not (
                0 < len(anonymous_id) <= MAX_ID_LENGTH
                and anonymous_id.isascii()
                and not anonymous_id.encode().translate(None, _ID_BYTES)
            ):
                adopted = adopt_browser_id(cookies, self._adopt) if cookies and self._adopt else None
                anonymous_id = adopted[0] if adopted is not None else new_anonymous_id()
                secure = scheme == "https" or self._forwarded_https(headers, client)
                set_cookie = self._cookies.header(anonymous_id, secure=secure)

            path = path[:_MAX_PATH]
            user_id: str | None = None
            if self._user_id is not None:
                user_id = resolve_user_id(self._user_id, request)
            # Only what the hooks and track() need now; the properties are built on the dispatcher
            # thread from ``seen`` (see ``properties``).
            state = RequestState(
                anonymous_id,
                user_id,
                (
                    method,
                    path,
                    query_string,
                    headers.get("user-agent"),
                    headers.get("referer"),
                    headers if self._rare else None,
                    client if self._rare else None,
                ),
                request,
                set_cookie,
                started,
            )
            if self._kx and cookies and "__kla_id=" in cookies:
                exchange_id = klaviyo_exchange_id(cookies)
                if exchange_id is not None:  # Klaviyo joins the browser's profile through it (_kx)
                    state.aliases["klaviyo_exchange_id"] = exchange_id
            if self._sample < 1.0 and _random() >= self._sample:
                state.tracked = False
            return state
        except Exception as exc:
            _failed("start", exc)
            return None

    def finish(
        self,
        state: RequestState,
        status: int | None = None,
        error: BaseException | None = None,
        disconnected: bool = False,
    ) -> None:
        """Record the request's event, once (later calls do nothing).

        ``status`` defaults to ``state.status``. With ``error`` the event records status 500 and
        ``error_type``; a client gone before the response started is recorded as 499, and any early
        disconnect as ``disconnected: true``.
        """
        if state.done:
            return
        state.done = True
        request, state.request = state.request, None
        try:
            if not state.tracked:
                return
            disconnected = disconnected or state.disconnected
            error_type = state.error_type
            if error is not None:
                status = 500
                error_type = type(error).__name__
            elif status is None:
                status = state.status
                if status is None:  # no response at all: the server answers 500 unless the client left
                    status = 499 if disconnected else 500
            if status in self._statuses:
                return
            route = state._route
            if not route and self._route is not None:
                route = _hook("route", self._route, request, None, _route_of)
            ended = _perf() if state.ended is None else state.ended
            # A snapshot, not the state: the app may still change the state (a disconnect seen after
            # the response, a background task) while the dispatcher reads it.
            finished = (*state.seen, route, status, ended - state.started, error_type, disconnected)
            record_request_event(state, self._event_name, self._properties, finished)
        except Exception as exc:
            _failed("finish", exc)

    def properties(self, finished: Finished) -> dict[str, Any]:
        """The event's properties of a finished request (see ``Finished``); runs on the dispatcher
        thread, or on the request thread when the event is checked there (``record_request_event``)."""
        (method, path, query_string, user_agent, referrer, headers, client) = finished[:7]
        route, status, duration, error_type, disconnected = finished[7:]
        props: dict[str, Any] = {"method": method, "path": path}
        if user_agent is not None:
            props["user_agent"] = user_agent[:_MAX_UA]
        if referrer:
            # Only scheme, host and path: a referrer's query string may carry another site's secrets.
            if "?" in referrer or "#" in referrer:
                referrer = referrer.partition("?")[0].partition("#")[0]
            # Nor its user:password@. Rare: most referrers pay for this one scan only.
            if "@" in referrer:
                referrer = _without_userinfo(referrer)
            props["referrer"] = referrer[:_MAX_REFERRER]
        if query_string and ("utm_" in query_string or self._query_keys):
            self._query_props(query_string, props)
        if headers is not None:
            self._rare_props(headers, client, props)
        props["route"] = route or path
        props["status_code"] = status
        # Whole microseconds, in milliseconds: round() without digits stays clear of float-to-text.
        props["duration_ms"] = round(duration * 1_000_000.0) / 1000.0
        if error_type is not None:
            props["error_type"] = error_type
        if disconnected:
            props["disconnected"] = True
        return props

    # -- helpers ------------------------------------------------------------------------------
    def _excluded(self, method: str, path: str) -> bool:
        """Excluded by method, path prefix or path pattern (only called when one is configured)."""
        return (
            method in self._methods
            or path.startswith(self._prefixes)
            or (self._regex is not None and self._regex.search(path) is not None)
        )

    def _forwarded_https(self, headers: Mapping[str, str], client: str | None) -> bool:
        """``X-Forwarded-Proto: https`` counts only from a trusted proxy (anyone can send the header)."""
        proto = headers.get("x-forwarded-proto")
        if proto is None or not (self._trust_all or self._is_trusted(client)):
            return False
        # Each proxy appends; the last value is the one our (trusted) neighbour set.
        return proto.rpartition(",")[2].strip().lower() == "https"

    def _is_trusted(self, client: str | None) -> bool:
        if not client or not self._proxies:
            return False
        trusted = self._trusted_cache.get(client)
        if trusted is None:
            try:
                address = ipaddress.ip_address(client)
            except ValueError:
                trusted = False
            else:
                # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d: match it as IPv4 too.
                mapped = getattr(address, "ipv4_mapped", None)
                trusted = any(
                    address in network or (mapped is not None and mapped in network)
                    for network in self._proxies
                )
            if len(self._trusted_cache) > 1024:  # peers are few (proxies); bound it anyway
                self._trusted_cache.clear()
            self._trusted_cache[client] = trusted
        return trusted

    def _rare_props(self, headers: Mapping[str, str], client: str | None, props: dict[str, Any]) -> None:
        """Configured headers and the client address: off by default, so out of the common path."""
        for name, key in self._extra_headers:
            if (value := headers.get(name)) is not None:
                props[key] = value[:_MAX_PARAM]
        if self._ip and client:
            props["ip"] = client

    def _query_props(self, query_string: str, props: dict[str, Any]) -> None:
        """``utm_*`` and configured parameters, first occurrence wins; secret-looking keys never."""
        if not query_string.isascii():
            # Raw bytes arrive as latin-1 text (ASGI's bytes decoded so, PEP 3333): read them as the UTF-8
            # browsers send. Strict, keeping the text when that fails: a server (Django under ASGI)
            # may have decoded it already, and "café" must not become "caf\ufffd".
            with contextlib.suppress(UnicodeError):
                query_string = query_string.encode("latin-1").decode("utf-8")
        for part in query_string.split("&", _MAX_QUERY_PARTS)[:_MAX_QUERY_PARTS]:
            key, _, value = part.partition("=")
            if "%" in key or "+" in key:
                key = unquote_plus(key)
            if key.startswith("utm_") and len(key) <= 64:
                prop = key
            elif (configured := self._query_keys.get(key)) is not None:
                prop = configured
            else:
                continue
            if prop not in props and not looks_secret(key):
                props[prop] = unquote_plus(value)[:_MAX_PARAM]


def sets_cookie(headers: Iterable[tuple[AnyStr, AnyStr]], header: AnyStr, prefix: AnyStr) -> bool:
    """Whether the app's own response headers set the visitor's cookie (``header`` is ``set-cookie``
    and ``prefix`` ``name=``, as bytes under ASGI, str under WSGI): then the app's value wins, as it
    would without the middleware (an app restoring a known id at sign-in). Asked of new visitors only."""
    return any(name.lower() == header and value.lstrip().startswith(prefix) for name, value in headers)


_route_readers: list[Callable[[Any], str | None]] = []


def add_route_reader(reader: Callable[[Any], str | None]) -> None:
    """How an adapter finds the route template in its ``request`` (the scope, the framework's request)
    while the app runs, for events tracked by hand; the adapter records it itself after the app ran.
    A reader returns ``None`` for a request it does not know; one that raises counts as ``None``."""
    if reader not in _route_readers:
        _route_readers.append(reader)


def _read_route(request: Any) -> str | None:
    if request is None:
        return None
    for reader in _route_readers:
        try:
            route = reader(request)
        except Exception as exc:
            _failed("route_reader", exc)
            continue
        if route:
            return route
    return None


def _hook(
    where: str,
    hook: Callable[[Any], Any],
    request: Any,
    default: Any,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """Run a user hook; its failure costs the request nothing but its answer (``default``). ``check``
    turns an answer other than ``None`` into the value used, raising for one that cannot be used: that
    counts as the hook's failure, as a hook raising does."""
    try:
        answer = hook(request)
        if hasattr(answer, "__await__"):  # async hooks are refused at start-up; one wrapped slipped by
            close = getattr(answer, "close", None)
            if close is not None:  # no "coroutine was never awaited" warning
                close()
            raise TypeError(f"the {where} hook returned an awaitable; hooks here must be plain functions")
        if check is not None and answer is not None:
            answer = check(answer)
        return answer
    except Exception as exc:
        _failed(where, exc)
        return default


def resolve_user_id(resolver: Callable[[Any], object], request: Any) -> str | None:
    """The request's user id from a ``user_id_resolver``, for every adapter and integration alike
    (:meth:`Capture.start`; Flask and Django call it themselves, inside their request handling).

    ``str()`` of the answer (an int, a UUID), cleaned as ``identify()`` cleans an id (a blank one is
    no user). A resolver that raises or returns an awaitable (closed unawaited), and an answer no event
    could carry (over 255 characters), count as a failed hook (``errors()["user_id"]``): ``None``, the
    request keeps its anonymous id and its events."""
    user_id: str | None = _hook("user_id", resolver, request, None, _user_id_of)
    return user_id


def checked_user_id(answer: object) -> str | None:
    """:func:`resolve_user_id` for an answer the integration already has: the same checks, a failure
    counted the same way (Django's async path awaits an async ``user_id_resolver`` itself)."""
    return resolve_user_id(_given, answer)


def _given(answer: object) -> object:
    return answer


def _user_id_of(answer: object) -> str | None:
    """A ``user_id_resolver`` answer as the request's user id: ``str()`` of it (an int, a UUID), then
    checked as ``identify()`` checks an id. An id no event can carry (over 255 characters) would have
    every event of the request refused; refused here instead, the request keeps its anonymous id."""
    return clean_id(str(answer), "user_id")


def _route_of(answer: object) -> str:
    """A ``route_resolver`` answer as the event's ``route``: a str, bounded as the path is. Anything
    else (werkzeug's ``Rule``, say) is refused here: as a property no provider could encode it, and the
    whole event would be lost. Slicing also makes a str subclass (a str enum) a plain str: its value."""
    if not isinstance(answer, str):
        raise TypeError(f"the route hook returned {type(answer).__name__}, not a str")
    return answer[:_MAX_PATH]


def _without_userinfo(referrer: str) -> str:
    """``referrer`` without the ``user:password@`` of its authority: the event keeps scheme, host and
    path only. An ``@`` further on (``https://example.org/@someone``) is the path's and stays."""
    head, slashes, rest = referrer.partition("//")
    # Only "scheme://host" or "//host" starts an authority, not a "//" inside a relative path.
    if not slashes or "/" in head or (head and not head.endswith(":")):
        return referrer
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return referrer
    return head + slashes + authority.rpartition("@")[2] + slash + path


_errors: Counter[str] = Counter()
_errors_lock = threading.Lock()


new_lock_in_child(sys.modules[__name__], "_errors_lock")


def errors() -> dict[str, int]:
    """Failures inside request capture since the process started, by where they happened
    (``start``, ``finish``, ``consent``, ``user_id``, ``route``, adapter names)::

        assert evmiddleware.capture.errors() == {}
    """
    with _errors_lock:
        return dict(_errors)


def _failed(where: str, exc: BaseException) -> None:
    with _errors_lock:
        _errors[where] += 1
    limited.log(
        logging.ERROR,
        f"capture:{where}",
        "evmiddleware: request capture failed in %s (%s); the response is unaffected",
        where,
        type(exc).__name__,
        exc_info=True,
    )


def reset_errors() -> None:
    """Forget the counted failures (tests)."""
    with _errors_lock:
        _errors.clear()
