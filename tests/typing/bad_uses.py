"""Wrong uses that mypy --strict must refuse, each with the error codes expected on its line.

``test_typing.py`` runs mypy on this file and compares its errors with the ``# expect:`` comments:
every expected code must be reported on that line, and nothing else anywhere. Never imported.
"""

from __future__ import annotations

from typing import Any

import fastapi
import flask

import evmiddleware
from evmiddleware.asgi import EventMiddleware as ASGIMiddleware
from evmiddleware.wsgi import EventMiddleware as WSGIMiddleware
from evmiddleware_fastapi import EventTracking as FastAPITracking
from evmiddleware_flask import EventTracking as FlaskTracking


# Flask hands consent and route_resolver the WSGI environ, not its Request: a hook written for
# Request fails on every request (the request goes untracked, or keeps its raw path).
def consent_of_request(request: flask.Request) -> bool:
    return request.cookies.get("consent") != "no"


def route_of_request(request: flask.Request) -> str | None:
    return request.url_rule.rule if request.url_rule else None


# ... and user_id_resolver flask.Request, not the environ.
def user_of_environ(environ: dict[str, Any]) -> str | None:
    return None


def route_as_int(environ: dict[str, Any]) -> int:
    return 0


# FastAPI hands every hook a Starlette Request, not the ASGI scope.
def consent_of_scope(scope: dict[str, Any]) -> bool:
    return True


def sync_asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    pass


def wsgi_without_start_response(environ: dict[str, Any]) -> list[bytes]:
    return []


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    pass


FlaskTracking(flask.Flask("a"), consent=consent_of_request)  # expect: arg-type
FlaskTracking(flask.Flask("b"), route_resolver=route_of_request)  # expect: arg-type
FlaskTracking(flask.Flask("c"), user_id_resolver=user_of_environ)  # expect: arg-type
FlaskTracking(flask.Flask("d"), route_resolver=route_as_int)  # expect: arg-type
FastAPITracking(fastapi.FastAPI(), consent=consent_of_scope)  # expect: arg-type
ASGIMiddleware(sync_asgi_app)  # expect: arg-type
WSGIMiddleware(wsgi_without_start_response)  # expect: arg-type


# stats() is typed: the counters are under "providers", not at the top.
evmiddleware.stats()["memory"]  # expect: typeddict-item
