"""Django's ASGI application with the lifespan protocol, so a graceful stop delivers queued events.

Django's ASGI handler refuses lifespan. Servers end the process after their shutdown in their own
ways: uvicorn re-raises the signal it caught, through the SIGTERM handler of :mod:`evmiddleware`
only if that was installed before uvicorn took over the signals (recent versions import the app
first; older ones do not), and another SIGTERM handler in the process keeps ours out. The lifespan
shutdown is the one stop every ASGI server announces; with this, queued events go out there. In
``asgi.py``::

    from evmiddleware_django.asgi import get_asgi_application
    application = get_asgi_application()
"""

from __future__ import annotations

from evmiddleware.lifecycle import ASGIApp, Receive, Scope, Send, run_lifespan

__all__ = ["LifespanFlush", "get_asgi_application"]


class LifespanFlush:
    """An ASGI app that speaks lifespan for ``app`` and flushes before its shutdown completes;
    every other scope goes to ``app`` untouched::

        application = LifespanFlush(django.core.asgi.get_asgi_application())
    """

    def __init__(self, app: ASGIApp, flush_timeout: float | None = None) -> None:
        self.app = app
        if flush_timeout is None:
            from . import conf

            flush_timeout = conf.capture().flush_timeout
        self.flush_timeout = flush_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(self.app, scope, receive, send, self.flush_timeout)
        else:
            await self.app(scope, receive, send)


def get_asgi_application() -> LifespanFlush:
    """``django.core.asgi.get_asgi_application()`` wrapped in :class:`LifespanFlush`."""
    from django.core.asgi import get_asgi_application as django_asgi_application  # type: ignore[import-untyped]

    return LifespanFlush(django_asgi_application())
