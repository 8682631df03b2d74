"""Apps that test_servers.py serves with real servers; configured from the environment only.

``python served_apps.py PORT`` serves the raw ASGI app with ``uvicorn.run`` and lifespan off, so the
only way its events can leave is the SIGTERM handler the middleware installed before uvicorn started.
"""

from __future__ import annotations

import sys
from typing import Any

from evmiddleware.asgi import EventMiddleware as ASGIEventMiddleware
from evmiddleware.wsgi import EventMiddleware as WSGIEventMiddleware


def make_starlette() -> Any:
    """A Starlette app with routes and lifespan (uvicorn ``--factory``)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"item {request.path_params['item_id']}")

    return ASGIEventMiddleware(Starlette(routes=[Route("/items/{item_id:int}", item)]))


async def _http_only(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # like Django's ASGI handler: no lifespan
        raise ValueError(f"cannot handle {scope['type']}")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"raw"})


def make_raw_asgi() -> Any:
    """A bare ASGI app that does not speak lifespan (uvicorn ``--factory``)."""
    return ASGIEventMiddleware(_http_only)


def make_wsgi() -> Any:
    """A werkzeug app (gunicorn ``'served_apps:make_wsgi()'``)."""
    from werkzeug.wrappers import Request, Response

    @Request.application
    def app(request: Request) -> Response:
        def stream() -> Any:
            yield b"streamed "
            yield request.path.encode()

        return Response(stream(), mimetype="text/plain")

    return WSGIEventMiddleware(app)


if __name__ == "__main__":
    import uvicorn

    application = make_raw_asgi()  # built in the main thread, before uvicorn installs its handlers
    uvicorn.run(application, host="127.0.0.1", port=int(sys.argv[1]), lifespan="off", log_level="warning")
