"""A user's WSGI apps wrapped in the middleware, the README's Flask line included: must pass mypy --strict.

Checked by ``test_typing.py`` (never imported by pytest).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import make_server

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from evmiddleware.wsgi import EventMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


# Typed as typeshed types WSGI (what wsgiref.types has from Python 3.11 on).
def typeshed_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


# A plain dict environ and a loosely typed start_response.
def dict_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("204 No Content", [])
    return []


def route_of(environ: dict[str, Any]) -> str | None:
    path: str = environ.get("PATH_INFO", "")
    return "/items/{item_id}" if path.startswith("/items/") else None


wrapped = EventMiddleware(typeshed_app, exclude_paths=("/health",))
wrapped2 = EventMiddleware(dict_app, route_resolver=route_of)

# The middleware is itself a WSGI app for servers and other middleware.
as_wsgi: WSGIApplication = wrapped
proxied = ProxyFix(wrapped2, x_for=1, x_proto=1)
server = make_server("127.0.0.1", 0, wrapped)

# The README's line. Assigning to a method is what mypy reports (method-assign), as for any
# middleware around Flask's wsgi_app; the types themselves agree (no arg-type, no assignment error).
app = Flask(__name__)
app.wsgi_app = EventMiddleware(app.wsgi_app)  # type: ignore[method-assign]

flask_wrapped = EventMiddleware(Flask("other").wsgi_app, exclude_paths=("/static",))
