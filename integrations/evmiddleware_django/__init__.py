"""Django integration: one line in ``MIDDLEWARE``, and each request records an event::

    INSTALLED_APPS = [..., "evmiddleware_django"]
    MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "evmiddleware_django.EventMiddleware", ...]
    EVMIDDLEWARE = {"EXCLUDE_PATHS": ["/health"]}     # optional; the environment supplies the rest

The app (``INSTALLED_APPS``) adds system checks (``evmiddleware.E001`` …) and the optional
``identify()`` at sign-in. Under ASGI, :func:`evmiddleware_django.asgi.get_asgi_application` adds the
lifespan protocol that Django lacks, so that a graceful stop delivers what is queued.
"""

from __future__ import annotations

from .middleware import EventMiddleware, django_route_template

__all__ = ["EventMiddleware", "django_route_template"]
