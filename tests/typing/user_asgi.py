"""A user's ASGI apps, typed in the usual ways, wrapped in the middleware: must pass mypy --strict.

Checked by ``test_typing.py`` (never imported by pytest: the name does not start with ``test_``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from evmiddleware.asgi import EventMiddleware
from evmiddleware.capture import CaptureOptions
from evmiddleware_django.asgi import LifespanFlush


# A bare app with a plain dict scope and dict messages.
async def dict_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


# Typed with asgiref.typing (a dependency of evmiddleware): TypedDict scopes and events.
async def asgiref_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": False})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})


# Typed with read-only mappings: this app's send must take any Mapping.
async def mapping_app(
    scope: Mapping[str, Any],
    receive: Callable[[], Awaitable[Mapping[str, Any]]],
    send: Callable[[Mapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": ()})
        await send({"type": "http.response.body", "body": b"ok"})


class DjangoLikeHandler:
    """Shaped as django-stubs types ``django.core.handlers.asgi.ASGIHandler``, without importing Django."""

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def user_of(scope: MutableMapping[str, Any]) -> int | None:  # any answer: str() of it is the user id
    user: int | None = scope.get("user_id")
    return user


def consent(scope: MutableMapping[str, Any]) -> bool:
    return dict(scope.get("headers", [])).get(b"x-consent") != b"no"


app1 = EventMiddleware(dict_app)
app2 = EventMiddleware(asgiref_app, exclude_paths=("/health",))
app3 = EventMiddleware(mapping_app, CaptureOptions(sample_rate=0.5))
app4 = EventMiddleware(DjangoLikeHandler(), user_id_resolver=user_of, consent=consent)
app5 = EventMiddleware(app4)  # the middleware wraps itself (a copy inside another)

application = LifespanFlush(DjangoLikeHandler())
application2 = LifespanFlush(EventMiddleware(DjangoLikeHandler()), flush_timeout=5.0)
application3 = EventMiddleware(LifespanFlush(asgiref_app))
