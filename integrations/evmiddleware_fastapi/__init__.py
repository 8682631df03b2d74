"""FastAPI integration: one line, and each request of the app records an event::

    from evmiddleware_fastapi import EventTracking

    app = FastAPI()
    EventTracking(app, exclude_paths=["/health"])

It adds the pure ASGI middleware of :mod:`evmiddleware.asgi` (never ``BaseHTTPMiddleware``), which
records the matched route's path (``/items/{item_id}``) and flushes at lifespan shutdown, whether
the app uses ``lifespan=`` or startup/shutdown events. Endpoints reach the request's tracking with
the :class:`Tracker` dependency; plain ``evmiddleware.track()`` works too, in async and sync
endpoints and in ``BackgroundTasks``.
"""

from __future__ import annotations

from .tracking import EventTracking, Tracker, get_tracker

__all__ = ["EventTracking", "Tracker", "get_tracker"]
