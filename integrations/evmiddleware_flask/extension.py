"""``EventTracking``: the WSGI middleware around ``app.wsgi_app`` plus three Flask signals."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from flask import Flask, Request, Response, current_app, has_request_context, request
from flask.signals import got_request_exception, request_finished, request_started

import evmiddleware
from evmiddleware.capture import CaptureOptions, RequestState, _failed, resolve_user_id
from evmiddleware.capture_options import refuse_async
from evmiddleware.context import RequestContext, add_lookup
from evmiddleware.wsgi import STATE_KEY, Environ, EventMiddleware

__all__ = ["EventTracking", "flask_route_template"]

#: ``app.config`` keys with this prefix configure the extension, as the same names do in the environment.
CONFIG_PREFIX = "EVMIDDLEWARE_"
EXTENSION_KEY = "evmiddleware"

#: ``user_id_resolver(request)``: runs inside Flask's request context and gets its ``Request``; any
#: answer but ``None`` is the user id, as ``str()`` (an int, a UUID).
UserIdResolver = Callable[[Request], object]
#: ``consent(environ)``: runs before Flask, on the WSGI environ; a false answer leaves the request untracked.
ConsentHook = Callable[[Environ], bool]
#: ``route_resolver(environ)``: runs after the app, on the WSGI environ, where Flask matched no rule.
RouteResolver = Callable[[Environ], str | None]

_CAPTURE_FIELDS = frozenset(field.name for field in dataclasses.fields(CaptureOptions))
# ``<int:item_id>``, ``<item_id>``, ``<any(a, b):kind>``: the converter (and its arguments) goes.
_VARIABLE = re.compile(r"<(?:[^<>:]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


@functools.lru_cache(maxsize=4096)
def flask_route_template(rule: str) -> str:
    """A Flask rule as a route template: parameter names in braces, converters dropped::

    flask_route_template("/items/<int:item_id>")  # "/items/{item_id}"
    """
    return _VARIABLE.sub(r"{\1}", rule)


class EventTracking:
    """Track every request of a Flask app; ``track()`` and ``identify()`` work inside it::

        app = Flask(__name__)
        app.config["EVMIDDLEWARE_EXCLUDE_PATHS"] = "/health,/static"
        EventTracking(app, user_id_resolver=lambda request: session.get("user_id"))

    Keyword options are those of :class:`~evmiddleware.capture.CaptureOptions`, plus any setting of
    :func:`evmiddleware.configure`. ``app.config`` keys ``EVMIDDLEWARE_<NAME>`` override them per app;
    the environment supplies the rest. Pipeline settings found there (``EVMIDDLEWARE_FLOKIT_API_KEY``,
    …) are applied with ``evmiddleware.configure()``, which is process-wide.

    ``user_id_resolver(request)`` runs inside Flask's request context when the request starts (and
    again at its end while no user is known, for a sign-in during the request); without one, the user
    id comes from ``flask_login.current_user`` when Flask-Login is installed and the app has a login
    manager. ``consent`` and ``route_resolver`` run outside Flask and get the WSGI environ (a
    ``dict``), not Flask's ``Request``::

        def consent(environ: dict[str, Any]) -> bool:
            return "consent=yes" in environ.get("HTTP_COOKIE", "")

    Installing twice on one app does nothing the second time; the installed middleware is
    ``app.extensions["evmiddleware"]``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        consent: ConsentHook | None = None,
        user_id_resolver: UserIdResolver | None = None,
        route_resolver: RouteResolver | None = None,
        **options: Any,
    ) -> None:
        hooks = {"consent": consent, "user_id_resolver": user_id_resolver, "route_resolver": route_resolver}
        self._options: dict[str, Any] = {
            **options,
            **{name: hook for name, hook in hooks.items() if hook is not None},
        }
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install on ``app`` (the application-factory pattern)::

        tracking = EventTracking()
        def create_app():
            app = Flask(__name__)
            tracking.init_app(app)
            return app
        """
        if EXTENSION_KEY in app.extensions:
            return
        settings = {**self._options, **_from_config(app.config)}
        user_id = settings.pop("user_id_resolver", None)
        capture_options = {name: settings.pop(name) for name in list(settings) if name in _CAPTURE_FIELDS}
        if settings:
            evmiddleware.configure(**settings)
        if user_id is None and importlib.util.find_spec("flask_login") is not None:
            user_id = _flask_login_resolver()
        if user_id is not None and not callable(user_id):
            raise evmiddleware.ConfigurationError(f"user_id_resolver: {user_id!r} is not callable")
        refuse_async("user_id_resolver", user_id, "Flask calls it as the request starts")
        middleware = EventMiddleware(app.wsgi_app, CaptureOptions(**capture_options))
        app.wsgi_app = middleware  # type: ignore[method-assign]  # Flask's documented way to wrap it
        app.extensions[EXTENSION_KEY] = middleware
        _connect(app, user_id)
        add_lookup(_copied_request_context)


def _from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    size = len(CONFIG_PREFIX)
    return {key[size:].lower(): value for key, value in config.items() if key.startswith(CONFIG_PREFIX)}


def _state() -> RequestState | None:
    state: RequestState | None = request.environ.get(STATE_KEY)
    return state


def _connect(app: Flask, user_id: UserIdResolver | None) -> None:
    """Flask's signals, for this app only; the request's state travels in its WSGI environ. Each
    handler reads Flask's request proxy once: every use of it is a context lookup."""

    def resolve(state: RequestState, current: Request) -> None:
        # The user's hook, run and checked as the middlewares do: a failure costs the request its user
        # id (counted), nothing more.
        if user_id is not None:  # connected only with a resolver
            value = resolve_user_id(user_id, current)
            if value is not None:
                state.user_id = value

    def started(sender: Flask, **extra: Any) -> None:
        # After routing and before any before_request hook: what track() in the request sees.
        try:
            current = cast(Request, request._get_current_object())  # type: ignore[attr-defined]
            state: RequestState | None = current.environ.get(STATE_KEY)
            if state is None:
                return
            rule = current.url_rule
            if rule is not None and state.route is None:
                state.route = flask_route_template(rule.rule)
            if user_id is not None and state.user_id is None:
                resolve(state, current)
        except Exception as exc:
            _failed("flask", exc)

    def finished(sender: Flask, response: Response, **extra: Any) -> None:
        current = cast(Request, request._get_current_object())  # type: ignore[attr-defined]
        state: RequestState | None = current.environ.get(STATE_KEY)
        if state is not None and state.user_id is None:
            resolve(state, current)  # signed in during this request

    def failed(sender: Flask, exception: BaseException, **extra: Any) -> None:
        # Flask turns the exception into its 500 page before the middleware sees the response.
        state = _state()
        if state is not None:
            state.error_type = type(exception).__name__

    request_started.connect(started, app, weak=False)
    if user_id is not None:  # without a resolver there is nothing to do at the end of a request
        request_finished.connect(finished, app, weak=False)
    got_request_exception.connect(failed, app, weak=False)


def _copied_request_context() -> RequestContext | None:
    """The request's context where Flask's request context was moved (``copy_current_request_context``)."""
    if not has_request_context():
        return None
    state = _state()
    return None if state is None else state.ctx


def _flask_login_resolver() -> UserIdResolver:
    flask_login = importlib.import_module("flask_login")

    def flask_login_user(request: Request) -> str | None:
        if getattr(current_app, "login_manager", None) is None:
            return None
        user = flask_login.current_user
        if user is None or not user.is_authenticated:
            return None
        return str(user.get_id())

    return flask_login_user
