"""The Flask and FastAPI ``EventTracking`` with hooks typed as each calls them: must pass mypy --strict.

Flask calls ``consent`` and ``route_resolver`` with the WSGI environ (they run outside Flask) and
``user_id_resolver`` with ``flask.Request``; FastAPI calls all three with a Starlette ``Request``.
Checked by ``test_typing.py`` (never imported by pytest).
"""

from __future__ import annotations

import uuid
from typing import Any

import fastapi
import flask
from starlette.requests import Request

import evmiddleware
from evmiddleware_fastapi import EventTracking as FastAPITracking
from evmiddleware_flask import EventTracking as FlaskTracking


# Flask
def flask_consent(environ: dict[str, Any]) -> bool:
    return "consent=no" not in environ.get("HTTP_COOKIE", "")


def flask_route(environ: dict[str, Any]) -> str | None:
    return None


def flask_user(request: flask.Request) -> str | None:
    return request.headers.get("X-User")


flask_app = flask.Flask(__name__)
FlaskTracking(
    flask_app,
    consent=flask_consent,
    route_resolver=flask_route,
    user_id_resolver=flask_user,
    exclude_paths=["/health"],
    sample_rate=1.0,
)
FlaskTracking(
    flask.Flask("lambdas"),
    consent=lambda environ: environ.get("HTTP_DNT") != "1",
    user_id_resolver=lambda request: request.cookies.get("uid"),
)

tracking = FlaskTracking(user_id_resolver=lambda request: uuid.UUID(int=len(request.path)))


def create_app() -> flask.Flask:
    app = flask.Flask("factory")
    tracking.init_app(app)
    return app


# FastAPI
def api_consent(request: Request) -> bool:
    return request.cookies.get("consent") != "no"


def api_user(request: Request) -> int | None:  # any answer: str() of it is the user id
    return 42 if "x-user" in request.headers else None


def api_route(request: Request) -> str | None:
    return request.scope.get("path")


api = fastapi.FastAPI()
FastAPITracking(api, consent=api_consent, user_id_resolver=api_user, route_resolver=api_route)
FastAPITracking(
    fastapi.FastAPI(),
    exclude_paths=["/health"],
    user_id_resolver=lambda request: request.headers.get("x-user-id"),
)


# The signals, as attributes of the package
def on_drop(sender: object, **extra: Any) -> None: ...


evmiddleware.signals.event_dropped.connect(on_drop)
