"""How requests become events: the capture options, validated once when a middleware is built."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

from ._parse import csv_tuple, optional_seconds, parse_bool, positive_int, whole_number
from .errors import ConfigurationError
from .identity import BROWSER_ID_COOKIES, CookieWriter, check_cookie_name

__all__ = ["CaptureOptions", "SECRET_WORDS", "looks_secret"]

#: A query parameter or header whose name contains one of these is never captured.
SECRET_WORDS = (
    "token", "password", "passwd", "pwd", "secret", "key", "auth", "session", "code", "signature",
    "credential", "jwt", "nonce", "csrf", "ssn", "cookie",
)  # fmt: skip


def looks_secret(name: str) -> bool:
    """True when ``name`` (a query key or header name) may hold a credential: never captured."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


_NAME_LISTS = (
    "adopt_cookies",
    "trusted_proxies",
    "exclude_regexes",
    "exclude_methods",
    "capture_headers",
    "capture_query_params",
)


_SWITCHES = ("respect_dnt", "capture_ip", "install_signal_handler")


def _names(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if not isinstance(value, Iterable):
        raise TypeError(f"{value!r} is neither a list nor a comma-separated string")
    return csv_tuple(value)


def _status_codes(value: Any) -> tuple[int, ...]:
    # One code alone is taken, as one path or method is: 404 as "404" is.
    return tuple(whole_number(code) for code in _names((value,) if isinstance(value, int) else value))


@dataclasses.dataclass(frozen=True)
class CaptureOptions:
    """How requests become events; built once, when the middleware is created.

    Every field has a safe default; pass the ones to change to the middleware::

        app = EventMiddleware(app, exclude_paths=("/health", "/static"), user_id_resolver=user_of)

    ``exclude_paths`` (literal prefixes) defaults to ``EVMIDDLEWARE_EXCLUDE_PATHS`` and
    ``flush_timeout`` to ``shutdown_timeout``, both read when the middleware is created.
    ``consent``, when given, alone decides whether a request is tracked (it sees ``Sec-GPC``/``DNT`` in
    the request); without it, ``Sec-GPC: 1`` (and ``DNT: 1`` with ``respect_dnt``) opts out. A request
    that is not tracked gets no cookie, no event and no request context (``track()`` there needs ids).
    With ``__kla_id`` in ``adopt_cookies`` (the default), Klaviyo's exchange id is also recorded on every
    request that carries it, as the ``klaviyo_exchange_id`` alias. ``route_resolver`` runs after the
    app, only when the framework exposed no route template; the raw path is the last resort.
    ``trusted_proxies`` are addresses or networks (or ``"*"``) whose
    ``X-Forwarded-Proto`` decides whether the cookie gets ``Secure``.

    The three hooks are typed ``Callable[[Any], ...]`` because what they get depends on the adapter:
    the ASGI scope (:mod:`evmiddleware.asgi`), the WSGI environ, a ``dict`` (:mod:`evmiddleware.wsgi`,
    and ``consent``/``route_resolver`` under Flask), Flask's or Starlette's ``Request`` (Flask's
    ``user_id_resolver``, every hook of FastAPI's ``EventTracking``), Django's ``HttpRequest``. The
    Flask and FastAPI ``EventTracking`` declare the precise types. ``user_id_resolver`` may answer any
    object: ``str()`` of it is the user id (``None``: no user).
    """

    event_name: str = "http_request"
    cookie_name: str = "ev_anon_id"
    cookie_max_age: int = 365 * 24 * 3600
    cookie_domain: str | None = None
    adopt_cookies: tuple[str, ...] = BROWSER_ID_COOKIES
    trusted_proxies: tuple[str, ...] = ()
    respect_dnt: bool = False
    consent: Callable[[Any], bool] | None = None
    user_id_resolver: Callable[[Any], object] | None = None
    route_resolver: Callable[[Any], str | None] | None = None
    exclude_paths: tuple[str, ...] | None = None
    exclude_regexes: tuple[str, ...] = ()
    exclude_methods: tuple[str, ...] = ()
    exclude_status_codes: tuple[int, ...] = ()
    sample_rate: float = 1.0
    capture_headers: tuple[str, ...] = ()
    capture_query_params: tuple[str, ...] = ()
    capture_ip: bool = False
    flush_timeout: float | None = None
    install_signal_handler: bool = True

    def __post_init__(self) -> None:
        # Accept lists and comma-separated strings (as from the environment); store tuples.
        for name in _NAME_LISTS:
            object.__setattr__(self, name, _checked(name, _names, getattr(self, name)))
        if self.exclude_paths is not None:
            object.__setattr__(self, "exclude_paths", _checked("exclude_paths", _names, self.exclude_paths))
        codes = _checked("exclude_status_codes", _status_codes, self.exclude_status_codes)
        object.__setattr__(self, "exclude_status_codes", codes)
        # Flask's app.config and Django's settings may hold these as strings ("false" is true as is).
        object.__setattr__(self, "sample_rate", _checked("sample_rate", float, self.sample_rate))
        object.__setattr__(
            self, "cookie_max_age", _checked("cookie_max_age", positive_int, self.cookie_max_age)
        )
        for name in _SWITCHES:
            object.__setattr__(self, name, _checked(name, parse_bool, getattr(self, name)))
        object.__setattr__(
            self, "flush_timeout", _checked("flush_timeout", optional_seconds, self.flush_timeout)
        )
        if not isinstance(self.event_name, str) or not 0 < len(self.event_name.strip()) <= 255:
            raise ConfigurationError(f"event_name: {self.event_name!r} is not a usable event name")
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ConfigurationError(f"sample_rate: {self.sample_rate} is not between 0 and 1")
        for name in self.adopt_cookies:
            _checked("adopt_cookies", check_cookie_name, name)
        # Checked here, not only where Capture builds them: Django's system checks build the options.
        _checked("cookie", CookieWriter, self.cookie_name, self.cookie_max_age, self.cookie_domain)
        if self.exclude_regexes:
            _checked("exclude_regexes", re.compile, "|".join(f"(?:{r})" for r in self.exclude_regexes))
        for proxy in self.trusted_proxies:
            if proxy != "*":
                _checked("trusted_proxies", ipaddress.ip_network, proxy, False)
        for name in (*self.capture_headers, *self.capture_query_params):
            if looks_secret(name):
                raise ConfigurationError(f"capture: {name!r} looks like a credential and is never captured")
        for hook in ("consent", "user_id_resolver", "route_resolver"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise ConfigurationError(f"{hook}: {getattr(self, hook)!r} is not callable")
        # Called without await on the request path, a coroutine would stand for the answer (always
        # consent, its repr as the route). The user id resolver is checked by each middleware instead:
        # Django's awaits an async one.
        for hook in ("consent", "route_resolver"):
            refuse_async(hook, getattr(self, hook))


def _is_async(hook: Any) -> bool:
    """True when calling ``hook`` returns an awaitable: an ``async def`` function (also wrapped with
    ``functools.wraps`` or ``partial``) or an object whose ``__call__`` is one."""
    if hook is None:
        return False
    with contextlib.suppress(ValueError):  # a __wrapped__ cycle
        hook = inspect.unwrap(hook)
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)


def refuse_async(setting: str, hook: Any, where: str = "the middleware calls it") -> None:
    """Refuse an async ``hook`` given as ``setting``: ``where`` (without ``await``) a coroutine would
    stand for its answer. Every adapter that calls hooks on the request path checks them with this."""
    if _is_async(hook):
        raise ConfigurationError(
            f"{setting}: {hook!r} is async; {where} without await: give a plain function"
        )


def _checked(setting: str, check: Callable[..., Any], *args: Any) -> Any:
    try:
        return check(*args)
    except (TypeError, ValueError, OverflowError, re.error) as exc:  # OverflowError: float(10**400)
        raise ConfigurationError(f"{setting}: {exc}") from None
