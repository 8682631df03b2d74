"""The per-request context: one mutable object in a ContextVar.

The capture layer (ASGI/WSGI middleware, integrations) creates a :class:`RequestContext`, enters it
for the duration of the request and resets the ContextVar with its token in ``finally``. Code in
the request mutates the object (never rebinds the variable): a value rebound inside a thread pool
that copied the context would never come back to the middleware, a mutation does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from ._log import limited
from .config import Settings
from .errors import EventError
from .normalize import normalize_properties, warn_dropped_property

__all__ = ["RequestContext", "add_lookup", "current_request", "request_context", "skip_request"]


class RequestContext:
    """What tracking knows about the request being served.

    ``facts`` (route, path, method) are attached to every event tracked during the request as the
    event's ``context``. ``tracked`` turns false when the handler calls :func:`skip_request`.
    ``identified`` tells the capture layer that :func:`evmiddleware.identify` ran. ``aliases`` holds
    ids other systems gave this visitor (``klaviyo_exchange_id`` from Klaviyo's ``__kla_id`` cookie).
    """

    __slots__ = ("aliases", "anonymous_id", "facts", "identified", "tracked", "user_id")

    def __init__(
        self, anonymous_id: str | None, user_id: str | None = None, facts: dict[str, Any] | None = None
    ) -> None:
        self.anonymous_id = anonymous_id
        self.user_id = user_id
        self.facts: dict[str, Any] = facts if facts is not None else {}
        self.tracked = True
        self.identified = False
        self.aliases: dict[str, str] = {}

    def __repr__(self) -> str:
        return (
            f"RequestContext(anonymous_id={self.anonymous_id!r}, user_id={self.user_id!r}, "
            f"tracked={self.tracked})"
        )


_current: ContextVar[RequestContext | None] = ContextVar("evmiddleware_request", default=None)
_lookups: list[Callable[[], RequestContext | None]] = []


def add_lookup(lookup: Callable[[], RequestContext | None]) -> None:
    """Where else to find the request's context when none is current on this thread or task.

    For a framework whose own request context travels where a ContextVar does not: Flask's
    ``copy_current_request_context`` pushes it in another thread. Consulted only when the ContextVar
    is empty; a lookup that raises counts as finding nothing. Adding the same one again does nothing::

        add_lookup(lambda: my_framework_request().evmiddleware_context)
    """
    if lookup not in _lookups:
        _lookups.append(lookup)


def _looked_up() -> RequestContext | None:
    for lookup in _lookups:
        try:
            ctx = lookup()
        except Exception:
            continue
        if ctx is not None:
            return ctx
    return None


def current_request() -> RequestContext | None:
    """The context of the request being served on this thread or task, if any."""
    return _current.get() or _looked_up()


def enter(ctx: RequestContext) -> Token[RequestContext | None]:
    """Make ``ctx`` current; pass the token to :func:`leave` in a ``finally``."""
    return _current.set(ctx)


def leave(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


@contextmanager
def request_context(
    anonymous_id: str | None = None, user_id: str | None = None, **facts: Any
) -> Iterator[RequestContext]:
    """Run code as if inside a request, e.g. a background job acting for a visitor::

    with request_context(anonymous_id=job.anon_id, user_id=job.user_id):
        evmiddleware.track("export_finished")
    """
    ctx = RequestContext(anonymous_id, user_id, _json_safe(facts))
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


#: Request facts are bounded as properties are by default (``max_depth``, ``max_event_bytes``).
_DEFAULTS = Settings()


def _json_safe(facts: dict[str, Any]) -> dict[str, Any]:
    """``facts`` made JSON-safe once, as ``track()`` makes properties: every event of the block
    carries them, and a value no provider can encode would lose each of those events later."""
    if not facts:
        return facts
    try:
        depth, size = _DEFAULTS.max_depth, _DEFAULTS.max_event_bytes
        return normalize_properties(facts, depth, size, warn_dropped_property)
    except EventError as exc:
        limited.log(logging.WARNING, "facts", "evmiddleware: request_context facts left out: %s", exc)
        return {}


def skip_request() -> None:
    """Do not record the automatic event of the current request (events tracked by hand still go)."""
    ctx = _current.get() or _looked_up()  # as track() finds it (Flask's copied request context)
    if ctx is not None:
        ctx.tracked = False
