"""The WSGI app that test_servers.py serves with gunicorn; configured from the environment only.

Every path answers ``<pid> <path>``; the middleware records one ``http_request`` event per request,
whose ``path`` property identifies it at the providers. ``app_loaded`` is tracked once per import: with
``--preload`` that is once, in the master, and it must reach each provider once, not once per worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import evmiddleware
from evmiddleware.wsgi import EventMiddleware


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"{os.getpid()} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


evmiddleware.track("app_loaded", {"pid": os.getpid()}, user_id="server")
application = EventMiddleware(app)
