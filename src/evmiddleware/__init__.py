"""evmiddleware: request-scoped product analytics from one line in a middleware stack.

app = EventMiddleware(app)                       # evmiddleware.asgi or evmiddleware.wsgi
evmiddleware.track("checkout_completed", {"total": 19.9})
"""

from __future__ import annotations

from . import signals
from .api import configure, flush, identify, shutdown, stats, track, tracked
from .context import RequestContext, current_request, request_context, skip_request
from .errors import ConfigurationError, EventError
from .events import Event

__all__ = [
    "ConfigurationError",
    "Event",
    "EventError",
    "RequestContext",
    "configure",
    "current_request",
    "flush",
    "identify",
    "request_context",
    "shutdown",
    "signals",
    "skip_request",
    "stats",
    "track",
    "tracked",
]

__version__ = "0.1.0"
