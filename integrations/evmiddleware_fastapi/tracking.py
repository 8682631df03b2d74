"""``EventTracking`` (the middleware, installed once per app) and the ``Tracker`` dependency.

No ``from __future__ import annotations`` here: older FastAPI (0.100, the oldest supported) resolves a
class dependency's string annotations where it cannot find them; ``Tracker(request: Request)`` must
stay resolvable.
"""

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request

import evmiddleware
from evmiddleware import context
from evmiddleware.asgi import STATE_KEY, EventMiddleware
from evmiddleware.capture import Capture, RequestState
from evmiddleware.capture_options import refuse_async
from evmiddleware.context import RequestContext
from evmiddleware.lifecycle import ASGIApp, install_signal_handler

__all__ = ["EventTracking", "Tracker", "get_tracker"]

# The hooks get a Starlette ``Request`` here, where the bare ASGI middleware hands them the scope.
#: ``consent(request)``: a false answer leaves the request untracked.
ConsentHook = Callable[[Request], bool]
#: ``user_id_resolver(request)``: any answer but ``None`` is the user id, as ``str()`` (an int, a UUID).
UserIdResolver = Callable[[Request], object]
#: ``route_resolver(request)``: runs after the app, where no route template was recorded.
RouteResolver = Callable[[Request], str | None]


class EventTracking:
    """Track every request of a FastAPI (or Starlette) app::

        app = FastAPI()
        EventTracking(app, user_id_resolver=lambda request: request.headers.get("x-user-id"))

    Options are those of :class:`~evmiddleware.capture.CaptureOptions` (provider settings come from
    the environment or :func:`evmiddleware.configure`); a bad one raises
    :class:`~evmiddleware.ConfigurationError` here, not at the first request. ``user_id_resolver``,
    ``consent`` and ``route_resolver`` get a Starlette ``Request``; the user id resolver runs as the
    request starts, so it sees headers, cookies and ``request.session`` when ``SessionMiddleware`` is
    added after this (outside it). A user known only inside an endpoint is set with
    ``tracker.user_id = ...`` or ``evmiddleware.identify()``.

    The middleware sits inside Starlette's error middleware: an unhandled exception is recorded as a
    500 with its type, then reaches Starlette's error handling and the server unchanged. Queued
    events are flushed when the app's lifespan shuts down. Installing twice on one app installs once.
    """

    def __init__(
        self,
        app: Starlette,
        *,
        consent: ConsentHook | None = None,
        user_id_resolver: UserIdResolver | None = None,
        route_resolver: RouteResolver | None = None,
        **options: Any,
    ) -> None:
        installed: EventTracking | None = getattr(app.state, "evmiddleware", None)
        if installed is not None:
            self.capture: Capture = installed.capture
            return
        hooks = {"consent": consent, "user_id_resolver": user_id_resolver, "route_resolver": route_resolver}
        for hook, value in hooks.items():
            if value is None:
                continue
            refuse_async(hook, value)  # here: wrapped below, it would look sync
            # Not callable: left as it is, for CaptureOptions to refuse with its own message.
            options[hook] = _with_request(value) if callable(value) else value
        self.capture = Capture(**options)
        if self.capture.options.install_signal_handler:
            install_signal_handler()
        app.add_middleware(_Middleware, capture=self.capture)
        app.state.evmiddleware = self


class _Middleware(EventMiddleware):
    """The ASGI middleware with the ``Capture`` built once, by ``EventTracking(app)``: Starlette builds
    its middleware stack only at the first request or lifespan, too late to refuse bad options."""

    def __init__(self, app: ASGIApp, *, capture: Capture) -> None:  # app=...: Starlette < 0.35 passes it so
        self.app = app
        self.capture = capture


def _with_request(hook: Callable[[Request], Any]) -> Callable[[MutableMapping[str, Any]], Any]:
    def call(scope: MutableMapping[str, Any]) -> Any:
        return hook(Request(scope))

    return call


class Tracker:
    """The request's tracking, as a FastAPI dependency::

        @app.post("/checkout")
        async def checkout(order: Order, tracker: Tracker = Depends()):
            tracker.track("checkout_completed", {"total": order.total})

    It holds the request's ids, so it keeps working where the request context does not reach: a
    thread of your own, a task queued for later. When the request is not tracked (an excluded path,
    no consent) its calls behave as :func:`evmiddleware.track` outside a request. FastAPI builds a
    class dependency in its thread pool; in async endpoints ``Depends(get_tracker)`` avoids that hop.
    """

    __slots__ = ("_ctx",)

    def __init__(self, request: Request) -> None:
        state: RequestState | None = request.scope.get(STATE_KEY)
        self._ctx: RequestContext | None = None if state is None else state.ctx

    @property
    def anonymous_id(self) -> str | None:
        """The visitor's anonymous id (the cookie's), or ``None`` when the request is not tracked."""
        return None if self._ctx is None else self._ctx.anonymous_id

    @property
    def user_id(self) -> str | None:
        """The signed-in user's id, when known; setting it tags the rest of the request (its own event
        included) without recording an ``identify`` event."""
        return None if self._ctx is None else self._ctx.user_id

    @user_id.setter
    def user_id(self, value: str | None) -> None:
        if self._ctx is not None:
            self._ctx.user_id = None if value is None else str(value)

    def track(
        self, name: str, properties: Mapping[str, Any] | None = None, *, timestamp: Any = None
    ) -> str | None:
        """:func:`evmiddleware.track` for this request's visitor; returns the event id or ``None``."""
        if self._ctx is None:
            return evmiddleware.track(name, properties, timestamp=timestamp)
        token = context.enter(self._ctx)
        try:
            return evmiddleware.track(name, properties, timestamp=timestamp)
        finally:
            context.leave(token)

    def identify(self, user_id: str, **traits: Any) -> str | None:
        """:func:`evmiddleware.identify` for this request's visitor."""
        if self._ctx is None:
            return evmiddleware.identify(user_id, **traits)
        token = context.enter(self._ctx)
        try:
            return evmiddleware.identify(user_id, **traits)
        finally:
            context.leave(token)


async def get_tracker(request: Request) -> Tracker:
    """The :class:`Tracker` dependency without FastAPI's thread-pool call for classes::

    async def endpoint(tracker: Tracker = Depends(get_tracker)): ...
    """
    return Tracker(request)
