"""ASGI entry point: ``uvicorn django_app.asgi:application`` (from ``example_apps/``).

Django's ASGI handler has no lifespan; evmiddleware's adds it, so a graceful stop delivers what is
queued before the process exits.
"""

from __future__ import annotations

import os

from evmiddleware_django.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
application = get_asgi_application()
app = application
