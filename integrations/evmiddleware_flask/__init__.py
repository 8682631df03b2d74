"""Flask integration: one line, and each request of the app records an event::

    from evmiddleware_flask import EventTracking

    app = Flask(__name__)
    EventTracking(app)                    # or: tracking = EventTracking(); tracking.init_app(app)

The request is captured by the WSGI middleware of :mod:`evmiddleware.wsgi`, installed around
``app.wsgi_app``; this module adds only what Flask knows: the route template (``request.url_rule``,
``/items/<int:item_id>`` recorded as ``/items/{item_id}``), the signed-in user, the exception Flask
turned into a 500 page, and configuration from ``app.config``.
"""

from __future__ import annotations

from .extension import EventTracking, flask_route_template

__all__ = ["EventTracking", "flask_route_template"]
