"""Pure ASGI middleware: one event per HTTP request, the request context around the app.

    from evmiddleware.asgi import EventMiddleware
    app = EventMiddleware(app, exclude_paths=("/health",))

It wraps ``send`` (to read the status and add the one ``Set-Cookie`` header) and ``receive`` (to see
a client disconnect), never the body. The event is recorded once, after the last body chunk has been
sent, or when the app returns without finishing the response (client gone). After a 5xx response
it waits for the app to return, because frameworks send their error page before re-raising and the
event should name the exception; the duration still ends with the last byte. ``websocket`` and
other scopes pass through untouched; ``lifespan`` flushes on shutdown (see :mod:`.lifecycle`).

The route is, in order: the template the framework recorded after routing (Starlette and FastAPI set
``scope["route"]``; ``{item_id:int}`` is recorded as ``{item_id}``, and below a ``Mount`` the mounts'
own templates are prepended: ``/users/{uid}/items/{iid}``), then ``route_resolver(scope)`` if
configured, then the raw path.

A client gone while the response is sent is recorded as a disconnect, not a 500, also when the server
says so by raising ``OSError`` from ``send`` (ASGI spec 2.4; Starlette then raises ``ClientDisconnect``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Mapping, MutableMapping
from typing import Any

from . import capture as _capture
from .capture import Capture, CaptureOptions, RequestState, _failed, add_route_reader, sets_cookie
from .capture_options import refuse_async
from .context import _current
from .lifecycle import ASGIApp, Message, Receive, Send, install_signal_handler, run_lifespan, wrapped_app

# The ContextVar's own methods: context.enter/leave would add two Python calls per use.
_enter, _leave = _current.set, _current.reset

__all__ = ["STATE_KEY", "EventMiddleware"]

#: Scope key holding the request's :class:`~evmiddleware.capture.RequestState` (or ``None`` when the
#: request is not tracked); it also tells an inner copy of the middleware that the request is taken.
STATE_KEY = "evmiddleware.state"
#: The scope's ``root_path`` where the middleware took the request (absent when empty).
_ROOT_PATH_KEY = "evmiddleware.root_path"
#: Set in a ``lifespan`` scope by the outermost copy of the middleware, which flushes at shutdown: an
#: inner copy hands lifespan straight to its app, so a stop waits for one flush, not one per copy.
_LIFESPAN_KEY = "evmiddleware.lifespan"

_BODY = ("http.response.body", "http.response.zerocopysend")
_templates: dict[str, str] = {}


class EventMiddleware:
    """Wrap an ASGI app so that each HTTP request records one event; options as
    :class:`~evmiddleware.capture.CaptureOptions`::

        app = EventMiddleware(app, user_id_resolver=lambda scope: scope.get("user_id"))
    """

    # ``app`` is positional-only, as Starlette's ``add_middleware`` and ``Middleware`` declare it.
    def __init__(
        self, app: ASGIApp | None = None, /, options: CaptureOptions | None = None, **overrides: Any
    ) -> None:
        self.app = wrapped_app(app, overrides)  # app=...: old Starlette's add_middleware passes it so
        self.capture = Capture(options, **overrides)
        refuse_async("user_id_resolver", self.capture.options.user_id_resolver)
        if self.capture.options.install_signal_handler:
            install_signal_handler()

    @property
    def routes(self) -> list[Any]:
        """The wrapped app's routes, as Starlette's ``Mount`` looks for them: the router mounted under
        this middleware stays visible (``url_for``, and the route templates of requests below it)."""
        routes: list[Any] = getattr(self.app, "routes", None) or []
        return routes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or STATE_KEY in scope:
            await self._not_tracked(scope, receive, send)
            return
        state = scope[STATE_KEY] = self.capture.start_scope(scope)
        if state is None:
            await self.app(scope, receive, send)
            return
        cookie = None if state.set_cookie is None else (b"set-cookie", state.set_cookie.encode("latin-1"))
        root_path = scope.get("root_path", "")
        if root_path:  # for the route reader: the routers below grow the scope's own root_path
            scope[_ROOT_PATH_KEY] = root_path
        trailers = False
        started_in: object = None  # the code of the coroutine the server's send returned for the start
        # Set when the app hands over the response's last message, before the server's send is
        # awaited: whatever awaits after that message is delivered (an outer middleware's send that
        # logs after passing it on, a server's send that yields after completing it) lets the app's
        # disconnect listener read the http.disconnect that only says the response is complete.
        last_sent = False

        # A plain function that hands back the server's awaitable: a coroutine of our own (a frame to
        # build and run per message) only for the last message, which has work left after it.
        def send_tracked(message: Message) -> Awaitable[None]:
            nonlocal trailers, started_in, last_sent
            kind = message["type"]
            if kind == "http.response.start":
                state.status = message.get("status")
                trailers = message.get("trailers", False)
                if cookie is not None:  # never raises: a failure leaves the app's message as it is
                    message = _with_cookie(message, cookie, self.capture.cookie_prefix_bytes)
                sending = send(message)
                started_in = getattr(sending, "cr_code", None)  # see _client_left
                return sending
            if kind in _BODY:
                if message.get("more_body", False) or trailers:
                    return send(message)
            elif kind == "http.response.trailers":
                if message.get("more_trailers", False):
                    return send(message)
            elif kind != "http.response.pathsend":
                return send(message)
            last_sent = True
            return self._send_last(send, message, state, scope, root_path)

        async def receive_tracked() -> Message:
            message = await receive()
            # Once the last message is on its way (a 5xx then waits for the app's exception) the
            # disconnect is the server's note that the response is complete, which Starlette's
            # streaming and Django's handler listen for. A client that leaves during that send makes
            # the server's send raise OSError (ASGI spec 2.4): the exception path records it. A server
            # on an older spec (uvicorn says 2.3) returns quietly instead, and a client that resets
            # while a large last chunk drains is then recorded as served: from here that cannot be
            # told from a healthy client (uvicorn answers "complete" while the same drain waits), and
            # calling every such response a disconnect was the worse error.
            if message["type"] == "http.disconnect" and not last_sent:
                state.disconnected = True
            return message

        token = _enter(state)
        try:
            await self.app(scope, receive_tracked, send_tracked)
        except BaseException as exc:
            if not state.done:
                if _client_left(exc, (_code_of(send), started_in)):  # the client left: no app error
                    state.disconnected = True
                    if state.ended is not None:  # the 5xx page the framework sent for this very
                        state.status = None  # exception (see _send_last) reached no one: 499
                    self._finish(state, scope, root_path, None)
                else:
                    self._finish(state, scope, root_path, exc)
            raise
        finally:
            _leave(token)
        if not state.done:  # returned with the response unfinished: the client left (or no response)
            self._finish(state, scope, root_path, None)

    async def _send_last(
        self,
        send: Send,
        message: Message,
        state: RequestState,
        scope: MutableMapping[str, Any],
        root_path: str,
    ) -> None:
        """Send the response's last message, then record the event (its duration ends here)."""
        await send(message)
        if (state.status or 0) < 500:  # self._finish, inlined: this runs for every request
            if "route" in scope or "endpoint" in scope:
                _take_route(state, scope, root_path)
            self.capture.finish(state)
        else:  # frameworks send their error page, then re-raise: wait for the exception's type
            state.ended = _capture._perf()

    def _finish(
        self,
        state: RequestState,
        scope: MutableMapping[str, Any],
        root_path: str,
        error: BaseException | None,
    ) -> None:
        if "route" in scope or "endpoint" in scope:
            _take_route(state, scope, root_path)
        self.capture.finish(state, error=error)

    async def _not_tracked(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """Other scopes untouched; lifespan with the shutdown flush (once, by the outermost copy: see
        ``_LIFESPAN_KEY``); a request an outer copy took."""
        if scope["type"] == "lifespan" and _LIFESPAN_KEY not in scope:
            scope[_LIFESPAN_KEY] = True
            await run_lifespan(self.app, scope, receive, send, self.capture.flush_timeout)
        else:
            # An app below an outer copy that does not speak lifespan raises or returns here, and the
            # outer copy's run_lifespan speaks it instead.
            await self.app(scope, receive, send)


def _with_cookie(message: Message, cookie: tuple[bytes, bytes], prefix: bytes) -> Message:
    """The response start with the visitor's cookie added, unless the app set that cookie itself. A new
    dict (the app may reuse its message) and the headers read once (ASGI allows any iterable).

    Never raises: this runs inside the app's ``send``, and a failure here would turn the response into
    a 500. A header the check cannot read is counted as a capture failure and the app's headers go
    to the server as they are, without our cookie."""
    headers: list[Any] | None = None
    try:
        headers = list(message.get("headers", ()))
        if not sets_cookie(_as_bytes(headers), b"set-cookie", prefix):
            headers.append(cookie)
    except Exception as exc:
        _failed("asgi_cookie", exc)
        if headers is None:  # the app's own message: the server reports what is wrong with it
            return message
    return {**message, "headers": headers}


def _as_bytes(headers: list[Any]) -> Iterator[tuple[bytes, bytes]]:
    """The headers the cookie check can compare, as bytes. ASGI says bytes, but h11-based servers
    (uvicorn's default) also serve str names and values: those are compared as the latin-1 they are
    sent as, so an app's own str ``Set-Cookie`` of the visitor's cookie still wins over ours. Values of
    any other type cannot be that cookie and are skipped."""
    for name, value in headers:
        if type(name) is bytes and type(value) is bytes:  # the common case: no calls
            yield name, value
            continue
        raw_name, raw_value = _bytes_of(name), _bytes_of(value)
        if raw_name is not None and raw_value is not None:
            yield raw_name, raw_value


def _bytes_of(text: object) -> bytes | None:
    if isinstance(text, bytes):
        return text
    if isinstance(text, str):
        return text.encode("latin-1", "replace")
    return bytes(text) if isinstance(text, bytearray) else None


def _take_route(state: RequestState, scope: MutableMapping[str, Any], root_path: str) -> None:
    """Copy the framework's route template into ``state``, unless an integration already set one."""
    if state.route is not None:
        return
    try:
        state.route = _route_template(scope, root_path)
    except Exception as exc:
        _failed("asgi_route", exc)


def _route_template(scope: Mapping[str, Any], root_path: str) -> str | None:
    """The template of ``scope["route"]`` (and the Mounts above it, below ``root_path``), or ``None``."""
    route = scope.get("route")
    if route is None and (route := _route_of_endpoint(scope)) is None:
        return None
    path = route if isinstance(route, str) else getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    template = _templates.get(path)
    if template is None:
        template = _strip_converters(path)
        if len(_templates) < 4096:  # routes are finite; the bound guards against generated ones
            _templates[path] = template
    if len(scope.get("root_path", "")) > len(root_path):  # below a Mount: rare, so the work is here
        return _mounted(scope, route, template, root_path)
    return template


def _route_while_running(request: Any) -> str | None:
    """The route reader for events tracked inside an ASGI app: Starlette's router has put
    ``scope["route"]`` into the very scope the middleware holds before the endpoint runs. Mounts are
    counted from where the middleware sits, as for the request's own event."""
    if type(request) is not dict or ("route" not in request and "endpoint" not in request):
        return None
    return _route_template(request, request.get(_ROOT_PATH_KEY, ""))


add_route_reader(_route_while_running)


# (id(router), id(endpoint)) -> (router, endpoint, each route that has the endpoint with the Mounts
# above it): one walk per endpoint. The router and endpoint are kept to tell a reused id.
_Candidates = tuple[tuple[tuple[Any, ...], Any], ...]
_routes_of_endpoints: dict[tuple[int, int], tuple[object, object, _Candidates]] = {}


def _route_of_endpoint(scope: Mapping[str, Any]) -> object:
    """The route ``scope["route"]`` would hold, where the router sets only ``scope["endpoint"]``
    (Starlette before 1.7; FastAPI sets the route itself): the route or Mount whose endpoint it is,
    among the outermost router's routes and the Mounts below it, and whose Mounts and path match the
    request's path. ``None`` when none does (the right one may be out of sight, below a Mount of a
    wrapped app): the raw path then, rather than another route's template."""
    endpoint, router = scope.get("endpoint"), scope.get("router")
    if endpoint is None or router is None:
        return None
    key = (id(router), id(endpoint))
    cached = _routes_of_endpoints.get(key)
    if cached is not None and cached[0] is router and cached[1] is endpoint:
        candidates = cached[2]
    else:
        candidates = tuple(_with_endpoint(getattr(router, "routes", None) or (), endpoint, ()))
        if len(_routes_of_endpoints) >= 4096:
            _routes_of_endpoints.clear()
        _routes_of_endpoints[key] = (router, endpoint, candidates)
    if not candidates:
        return None
    # The path below the outermost router. Starlette < 0.33 leaves the innermost Mount's rest in
    # scope["path"] and the text the Mounts matched in root_path; later ones keep the whole path.
    path, root = scope.get("path", ""), scope.get("root_path", "")
    base = scope.get("app_root_path", root)
    below = path[len(base) :] if path.startswith(root) else root[len(base) :] + path
    for mounts, node in candidates:
        if _reaches(mounts, node, below):
            return node
    return None


def _with_endpoint(
    routes: Any, endpoint: object, mounts: tuple[Any, ...]
) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if len(mounts) > 16:  # Mounts can nest (or loop) without end
        return
    for node in routes:
        # A route's endpoint, or a Mount's app (the endpoint a Mount that routes nothing leaves).
        if getattr(node, "endpoint", None) is endpoint or getattr(node, "app", None) is endpoint:
            yield mounts, node
        inner = getattr(node, "routes", None)
        if inner:
            yield from _with_endpoint(inner, endpoint, (*mounts, node))


def _reaches(mounts: tuple[Any, ...], node: Any, path: str) -> bool:
    """Whether ``path`` goes through ``mounts`` to ``node``, as Starlette's routers match it."""
    for mount in (*mounts, node):
        regex = getattr(mount, "path_regex", None)
        match = regex.match(path) if regex is not None else None
        if match is None:
            return False
        path = "/" + str(match.groupdict().get("path", ""))  # a Mount's rest
    return True


# (root_path, root_path at the middleware, id(router), id(route)) -> (route, template): one walk per
# mount text and route. A Mount with a parameter makes one key per value, hence the bound.
_mounted_cache: dict[tuple[str, str, int, int], tuple[object, str | None]] = {}


def _mounted(scope: Mapping[str, Any], route: object, tail: str, root_path: str) -> str | None:
    """The template of a route reached through Mounts, or ``None`` (the raw path) when the mounts
    cannot be seen.

    ``scope["root_path"]`` grew by the text each Mount matched (``/users/42``: values, not names), and
    ``scope["route"]`` is the innermost route a router recorded: the inner route when the mounted app
    routes (its router overwrote it), the ``Mount`` itself when it does not (``StaticFiles``, or a
    mounted app that matched nothing), and only an inner route on Starlette < 1 (only FastAPI's routes
    set it there). So the mounts are found again from the outermost router (``scope["router"]``) by
    matching the grown text against the Mounts only, and their own paths make the template.
    """
    full = scope.get("root_path", "")
    router = scope.get("router")
    key = (full, root_path, id(router), id(route))
    cached = _mounted_cache.get(key)
    if cached is not None and cached[0] is route:
        return cached[1]
    # Mounts match from the top-level root_path on (app_root_path); those matched before this
    # middleware (it may sit inside a Mount) are not part of its templates.
    base = scope.get("app_root_path", root_path)
    template = None
    if full.startswith(base) and len(root_path) >= len(base):
        routes = getattr(router, "routes", None)
        if routes:
            skip = len(root_path) - len(base)
            template = _through_mounts(routes, full[len(base) :], 0, skip, route, tail, 0)
    if len(_mounted_cache) >= 4096:
        _mounted_cache.clear()
    _mounted_cache[key] = (route, template)
    return template


def _through_mounts(
    routes: Any, rest: str, at: int, skip: int, route: object, tail: str, depth: int
) -> str | None:
    """The template for ``rest`` (what is left of the grown root_path, from offset ``at``) matched by
    Mounts among ``routes`` and below; ``None`` when no chain of Mounts matches it all. Mounts that
    start before offset ``skip`` were matched outside this middleware and add nothing."""
    if depth > 16:  # Mounts of an empty path can nest (or loop) without consuming any text
        return None
    for node in routes:
        path, regex = getattr(node, "path", None), getattr(node, "path_regex", None)
        if not isinstance(path, str) or regex is None or not hasattr(node, "routes"):
            continue  # not a Mount (routes and Hosts never grow root_path)
        match = regex.match(rest + "/")  # a Mount's regex is its path + "/{path:path}"
        remaining = match.groupdict().get("path") if match is not None else None
        if not isinstance(remaining, str):
            continue
        used = len(rest) - len(remaining)
        own = _strip_converters(path) if at >= skip else ""
        if used == len(rest):
            return own if node is route else own + tail
        inner = _through_mounts(node.routes, rest[used:], at + used, skip, route, tail, depth + 1)
        if inner is not None:
            return own + inner
    return None


def _client_left(exc: BaseException, senders: tuple[object, object]) -> bool:
    """True when ``exc`` says the client went away: Starlette's ``ClientDisconnect`` (by name: the core
    imports no framework), or an ``OSError`` raised by the server's ``send`` (ASGI spec 2.4), which
    Starlette's streaming response turns into ``ClientDisconnect``. An ``OSError`` of the app's own
    (a file, a database) is an error: only one raised below a frame of ``senders`` counts: the code of
    the ``send`` the middleware was given, and of the coroutine it returned for the response's start
    (the server's own, when an outer middleware's ``send`` is a plain function handing it on)."""
    group = getattr(exc, "exceptions", None)  # an exception group (Starlette < 0.28 streams in a task group)
    if isinstance(group, tuple) and group:
        return all(_client_left(inner, senders) for inner in group)
    if type(exc).__name__ == "ClientDisconnect":
        if not isinstance(exc.__context__, OSError):  # request.body() after http.disconnect
            return True
        exc = exc.__context__
    if not isinstance(exc, OSError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in senders:
            return True
        tb = tb.tb_next
    return False


def _code_of(send: Send) -> object:
    """The code a call of ``send`` runs: a function's or a bound method's, or an object's ``__call__``."""
    code = getattr(send, "__code__", None)
    if code is None and callable(send):
        code = getattr(type(send).__call__, "__code__", None)
    return code


def _strip_converters(path: str) -> str:
    """``/items/{item_id:int}`` → ``/items/{item_id}``: parameter names only, as in every adapter."""
    if ":" not in path:
        return path
    parts = path.split("{")
    out = [parts[0]]
    for part in parts[1:]:
        inner, brace, rest = part.partition("}")
        out.append("{" + inner.partition(":")[0] + "}" + rest if brace else "{" + part)
    return "".join(out)
