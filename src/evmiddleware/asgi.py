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
``scope["route"]``; ``{item_id:int}`` is recorded as ``{item_id}``, and a ``Mount``'s matched prefix
is prepended), then ``route_resolver(scope)`` if configured, then the raw path.
"""

from __future__ import annotations

from collections.abc import Awaitable, MutableMapping
from typing import Any

from . import capture as _capture
from .capture import Capture, CaptureOptions, RequestState, _failed
from .context import _current
from .lifecycle import ASGIApp, Message, Receive, Send, install_signal_handler, run_lifespan

# The ContextVar's own methods: context.enter/leave would add two Python calls per use.
_enter, _leave = _current.set, _current.reset

__all__ = ["STATE_KEY", "EventMiddleware"]

#: Scope key holding the request's :class:`~evmiddleware.capture.RequestState` (or ``None`` when the
#: request is not tracked); it also tells an inner copy of the middleware that the request is taken.
STATE_KEY = "evmiddleware.state"

_BODY = ("http.response.body", "http.response.zerocopysend")
_templates: dict[str, str] = {}


class EventMiddleware:
    """Wrap an ASGI app so that each HTTP request records one event; options as
    :class:`~evmiddleware.capture.CaptureOptions`::

        app = EventMiddleware(app, user_id_resolver=lambda scope: scope.get("user_id"))
    """

    def __init__(self, app: ASGIApp, options: CaptureOptions | None = None, **overrides: Any) -> None:
        self.app = app
        self.capture = Capture(options, **overrides)
        if self.capture.options.install_signal_handler:
            install_signal_handler()

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
        trailers = False

        # A plain function that hands back the server's awaitable: a coroutine of our own (a frame to
        # build and run per message) only for the last message, which has work left after it.
        def send_tracked(message: Message) -> Awaitable[None]:
            nonlocal trailers
            kind = message["type"]
            if kind == "http.response.start":
                state.status = message.get("status")
                trailers = message.get("trailers", False)
                if cookie is not None:  # a new dict: the app may reuse its message
                    message = {**message, "headers": [*message.get("headers", ()), cookie]}
                return send(message)
            if kind in _BODY:
                if message.get("more_body", False) or trailers:
                    return send(message)
            elif kind == "http.response.trailers":
                if message.get("more_trailers", False):
                    return send(message)
            elif kind != "http.response.pathsend":
                return send(message)
            return self._send_last(send, message, state, scope, root_path)

        async def receive_tracked() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                state.disconnected = True
            return message

        token = _enter(state)
        try:
            await self.app(scope, receive_tracked, send_tracked)
        except BaseException as exc:
            if not state.done:
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
            if "route" in scope:
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
        if "route" in scope:
            _take_route(state, scope, root_path)
        self.capture.finish(state, error=error)

    async def _not_tracked(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """Other scopes untouched; lifespan with the shutdown flush; a request an outer copy took."""
        if scope["type"] == "lifespan":
            await run_lifespan(self.app, scope, receive, send, self.capture.flush_timeout)
        else:
            await self.app(scope, receive, send)


def _take_route(state: RequestState, scope: MutableMapping[str, Any], root_path: str) -> None:
    """Copy the framework's route template into ``state``, unless an integration already set one."""
    if state.route is not None:
        return
    try:
        route = scope["route"]
        path = route if isinstance(route, str) else getattr(route, "path", None)
        if not isinstance(path, str):
            return
        template = _templates.get(path)
        if template is None:
            template = _strip_converters(path)
            if len(_templates) < 4096:  # routes are finite; the bound guards against generated ones
                _templates[path] = template
        mount = scope.get("root_path", "")
        if len(mount) > len(root_path):
            template = mount[len(root_path) :] + template
        state.route = template
    except Exception as exc:
        _failed("asgi_route", exc)


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
